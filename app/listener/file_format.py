"""A received data set in the DICOM File Format (PS3.10 §7.1): the 128-byte preamble, ``DICM``, the
File Meta Information (group 0002, Explicit VR Little Endian), then the data set's bytes exactly as
received over the network.

The few File Meta elements are encoded here: building a pydicom ``FileMetaDataset`` and writing it,
as ``pynetdicom.events.Event.encoded_dataset`` does, took 0.2–0.4 ms per instance in the listener,
this 8 µs (measured with a CT here); the bytes are the same.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

PREAMBLE = b"\x00" * 128 + b"DICM"
FILE_META_GROUP = 0x0002


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    """One group 0002 element, Explicit VR Little Endian (PS3.5 §7.1.2): OB has a 4-byte length."""
    if vr == b"OB":
        return struct.pack("<HH2sxxI", FILE_META_GROUP, element, vr, len(value)) + value
    return struct.pack("<HH2sH", FILE_META_GROUP, element, vr, len(value)) + value


def _uid(uid: str) -> bytes:
    """UI value: padded with one NUL to an even length (PS3.5 §9.1)."""
    value = uid.encode("ascii")
    return value + b"\x00" * (len(value) % 2)


def _short_string(text: str) -> bytes:
    """SH value: padded with one space to an even length (PS3.5 §6.2)."""
    value = text.encode("ascii")
    return value + b" " * (len(value) % 2)


#: (0002,0001) File Meta Information Version; (0002,0012) and (0002,0013) name the implementation.
_VERSION = _element(0x0001, b"OB", b"\x00\x01")
_IMPLEMENTATION = (
    _element(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID))
    + _element(0x0013, b"SH", _short_string(PYNETDICOM_IMPLEMENTATION_VERSION))
)


def dicom_file(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, dataset: bytes) -> bytes:
    """The DICOM file of ``dataset``, encoded in ``transfer_syntax_uid`` as received."""
    return file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid) + dataset


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """What precedes the data set in its DICOM file: the preamble, ``DICM`` and the File Meta Information.
    The listener writes it and then the received data set, never joining the two in memory."""
    group = b"".join((
        _VERSION,
        _element(0x0002, b"UI", _uid(sop_class_uid)),
        _element(0x0003, b"UI", _uid(sop_instance_uid)),
        _element(0x0010, b"UI", _uid(transfer_syntax_uid)),
        _IMPLEMENTATION,
    ))
    group_length = _element(0x0000, b"UL", struct.pack("<I", len(group)))
    return b"".join((PREAMBLE, group_length, group))
