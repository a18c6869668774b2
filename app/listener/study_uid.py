"""The Study Instance UID of a received data set, read from its encoded bytes without decoding it.

The spool files every instance under its study before acknowledging it, so this runs once per
C-STORE. Walking the element headers (PS3.5 §7.1) up to (0020,000D) took ~55 µs for pydicom's
CT_small in Explicit VR here, pydicom's reader ~260 µs. An element of undefined
length before it (a sequence whose items would have to be parsed), or anything unexpected, hands
over to pydicom's reader.
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.uid import UID

from operators.intake.image_header import UNDEFINED_LENGTH

STUDY_INSTANCE_UID = 0x0020000D
#: VRs whose Explicit VR header has 2 reserved bytes and a 4-byte length (PS3.5 Table 7.1-1).
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def top_level_value(data: bytes, tag: int, implicit_vr: bool, little_endian: bool) -> bytes | None:
    """The value of the top-level element ``tag``, or None if the walk cannot tell (see the module)."""
    endian = "<" if little_endian else ">"
    tag_struct, short_length, long_length = struct.Struct(endian + "HH"), struct.Struct(endian + "H"), struct.Struct(endian + "L")
    position = 0
    while position + 12 <= len(data):
        group, element = tag_struct.unpack_from(data, position)
        if implicit_vr:
            (length,), position = long_length.unpack_from(data, position + 4), position + 8
        else:
            vr = data[position + 4:position + 6]
            if vr in LONG_LENGTH_VRS:
                (length,), position = long_length.unpack_from(data, position + 8), position + 12
            elif vr.isalpha() and vr.isupper():
                (length,), position = short_length.unpack_from(data, position + 6), position + 8
            else:
                return None  # not Explicit VR after all
        found = group << 16 | element
        if found >= tag or length == UNDEFINED_LENGTH:
            return data[position:position + length] if found == tag and position + length <= len(data) else None
        position += length
    return None


def study_instance_uid(received: bytes, transfer_syntax: UID) -> UID:
    """Raises (ValueError, AttributeError if absent, or whatever pydicom raises) for a data set that
    cannot be read."""
    if transfer_syntax.is_deflated:  # PS3.5 §A.5: Explicit VR Little Endian, then deflated
        received = zlib.decompress(received, -zlib.MAX_WBITS)
    implicit_vr, little_endian = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    value = top_level_value(received, STUDY_INSTANCE_UID, implicit_vr, little_endian)
    if value is not None:
        return UID(value.decode("ascii").rstrip("\0 "))
    header = read_dataset(BytesIO(received), implicit_vr, little_endian,
                          stop_when=lambda tag, vr, length: tag > STUDY_INSTANCE_UID, specific_tags=[STUDY_INSTANCE_UID])
    return UID(header.StudyInstanceUID)
