"""A de-identified instance written as a DICOM file (PS3.10 7.1), the bytes ``Dataset.save_as(f,
enforce_file_format=True)`` writes, in a fraction of the time.

pydicom's writer spends about as long on each element as the de-identifier does (a buffer, a context
manager and checks per element), and copies Pixel Data three times on its way out. In a de-identified
header most elements are raw: kept as read, or replaced by their encoded bytes (``operators.deid.raw``).
Those are written here directly, each as its header (PS3.5 7.1.2 explicit VR, 7.1.3 implicit VR) and
value. Every other element — converted values, sequences, undefined lengths, a value too long for a
16-bit length — goes through pydicom's own element writer, and so does every file pydicom would change
on the way out (another encoding than the dataset's own, a deflated transfer syntax, Pixel Data whose
length form does not match the transfer syntax).
"""

from __future__ import annotations

import struct
from typing import BinaryIO, cast

from pydicom import Dataset
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from operators.deid.unvalidated import copy_dataset

PIXEL_DATA = BaseTag(0x7FE00010)
UNDEFINED_LENGTH = 0xFFFFFFFF
#: Element headers by (implicit VR, little endian): tag, [VR, [reserved,]] length.
IMPLICIT = {True: struct.Struct("<HHL"), False: struct.Struct(">HHL")}
EXPLICIT_16 = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
EXPLICIT_32 = {True: struct.Struct("<HH2sHL"), False: struct.Struct(">HH2sHL")}


def write_file(fp: BinaryIO, ds: Dataset) -> None:
    """Write ``ds``, which has File Meta Information, to ``fp`` as a DICOM file: preamble, "DICM", File Meta
    Information (PS3.10 7.1), then the dataset in its transfer syntax. No value of ``ds`` is changed."""
    if not _writes_as_read(ds):
        ds.save_as(fp, enforce_file_format=True)
        return
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    out = DicomIO(fp)
    out.write(getattr(ds, "preamble", None) or b"\x00" * 128)
    out.write(b"DICM")
    write_file_meta_info(out, copy_dataset(ds.file_meta), enforce_standard=True)  # it adds the group length
    out.is_implicit_VR, out.is_little_endian = implicit, little
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    for tag in sorted(ds._dict, key=int):  # int order is tag order (PS3.5 7.1); a BaseTag compares in Python
        if tag & 0xFFFF == 0 and tag >> 16 > 6:  # retired group lengths, as pydicom skips them (PS3.5 7.2)
            continue
        elem = ds._dict[tag]
        header = raw_header(elem, implicit, little)
        if header is None:
            write_data_element(out, elem, encodings)
        else:
            out.write(header)
            out.write(cast(bytes, elem.value))


def raw_header(elem: DataElement | RawDataElement, implicit: bool, little: bool) -> bytes | None:
    """The header of a raw element written here as it was read: tag, [VR, [reserved,]] length (PS3.5 7.1.2,
    7.1.3). None for the elements left to pydicom: converted, deferred, of undefined length, without the VR
    the encoding needs, or too long for a 16-bit length field (pydicom writes those as UN: PS3.5 6.2.2)."""
    if not isinstance(elem, RawDataElement) or elem.value is None or elem.length == UNDEFINED_LENGTH:
        return None
    group, number, length = elem.tag >> 16, elem.tag & 0xFFFF, len(elem.value)
    if implicit:
        return IMPLICIT[little].pack(group, number, length)
    if elem.VR is None:
        return None
    if elem.VR in EXPLICIT_VR_LENGTH_32:
        return EXPLICIT_32[little].pack(group, number, elem.VR.encode(), 0, length)
    return EXPLICIT_16[little].pack(group, number, elem.VR.encode(), length) if length <= 0xFFFF else None


def _writes_as_read(ds: Dataset) -> bool:
    """Whether pydicom would write ``ds``'s elements in the encoding they were read in, leaving each as it is."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta or ds.get("SOPInstanceUID") != meta.get("MediaStorageSOPInstanceUID"):
        return False
    syntax = UID(meta.TransferSyntaxUID)
    if not syntax.is_transfer_syntax or syntax.is_private or syntax.is_deflated:
        return False
    if (syntax.is_implicit_VR, syntax.is_little_endian) != ds.original_encoding or ds.original_character_set != ds._character_set:
        return False
    if ds.get("SOPClassUID") != meta.get("MediaStorageSOPClassUID") or any(tag >> 16 in (0, 2) for tag in ds._dict):
        return False
    # save_as converts Pixel Data (resolving an ambiguous VR) and sets its length form from the transfer syntax
    pixel_data = ds._dict.get(PIXEL_DATA)
    if pixel_data is None:
        return True
    if not isinstance(pixel_data, RawDataElement):
        return bool(pixel_data.is_undefined_length == syntax.is_compressed)
    return " or " not in str(pixel_data.VR) and (pixel_data.length == UNDEFINED_LENGTH) == syntax.is_compressed
