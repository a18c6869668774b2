"""Replacement values as raw (still encoded) elements: what the de-identifier puts in place of an original
value when the new value is known as bytes.

A ``RawDataElement`` is an immutable tuple of the bytes of the value (PS3.5 7.1): pydicom writes it back as
it is and converts it only when it is read, so a replacement made this way costs no ``DataElement`` on
the way in nor a value encoder on the way out — on heavy headers most of the de-identification time.
Its bytes are pydicom's own encoding of the value (``encoded_value``), so the written file is the same
as with a converted element.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.valuerep import VALIDATORS

#: pydicom's decoding of the default character repertoire, the repertoire of UI (PS3.5 6.2).
DEFAULT_ENCODING = "iso8859"
#: Length of the header of an element in Implicit VR: tag and 32-bit length (PS3.5 7.1.3).
IMPLICIT_HEADER_LENGTH = 8
#: A public tag no data dictionary names: pydicom encodes its value by the VR given (a known tag of VR UN
#: would be re-typed by the dictionary).
UNNAMED_TAG = 0x00080002


@cache
def fixed_value(vr: str, value: Any) -> bytes:
    """``value``, one of a few fixed values, as pydicom writes it for ``vr``: padded to even length (PS3.5
    7.1.1). Only for values whose bytes are the same in both byte orders (text, zero)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_data_element(fp, DataElement(UNNAMED_TAG, vr, value))
    return fp.getvalue()[IMPLICIT_HEADER_LENGTH:]


def raw_element(tag: BaseTag, vr: str, value: bytes) -> RawDataElement:
    """A raw element holding ``value``, already encoded for ``vr`` in the byte order of its dataset (or valid
    in both: text, zero)."""
    return RawDataElement(tag, vr, len(value), value, 0, False, True)


def uid_strings(raw: RawDataElement) -> list[str]:
    """The values of a raw UI element as pydicom splits them, padding (NUL, or space as some writers use)
    removed; ``[]`` for an empty value."""
    text = (raw.value or b"").decode(DEFAULT_ENCODING).rstrip("\0 ")
    return text.split("\\") if text else []


def valid_uid(value: str) -> bool:
    """Whether pydicom reads ``value`` as a UID without a warning (which would quote it): PS3.5 9.1."""
    return VALIDATORS["UI"]("UI", value)[0]


def raw_uids(tag: BaseTag, values: list[str]) -> RawDataElement:
    """A raw UI element holding ``values``, padded with a NUL to even length (PS3.5 9.1)."""
    encoded = "\\".join(values).encode(DEFAULT_ENCODING)
    return raw_element(tag, "UI", encoded + b"\0" * (len(encoded) % 2))


#: pydicom's decodings (``pydicom.charset.convert_encodings``) that read printable ASCII as ASCII: the default
#: repertoire (ISO_IR 6, ISO 2022 IR 6), ISO_IR 100-series Latin alphabets, UTF-8 (PS3.5 6.1)
ASCII_COMPATIBLE = frozenset({"iso8859", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_9", "iso8859_15", "UTF8"})
#: printable ASCII but the backslash (the value delimiter, PS3.5 6.4)
PLAIN_TEXT = re.compile(rb"(?:[!-\[\]-~][ -\[\]-~]*)?")


def plain_text(value: bytes) -> str | None:
    """The value of a text element (AE, CS, LO, LT, PN, SH, ST, UC, UR, UT) whose bytes are ``value`` as pydicom
    reads it (in an ``ASCII_COMPATIBLE`` character set), where that is simply the bytes without trailing
    spaces: one value of printable ASCII not starting with a space; None for any other value."""
    return value.decode("ascii").rstrip(" ") if PLAIN_TEXT.fullmatch(value) else None


#: DS and IS values (PS3.5 6.2) that pydicom writes back as read, but for the padding: digits, signs, points
#: and exponents, several values separated by backslashes, no spaces but one trailing pad
PLAIN_NUMBERS = re.compile(rb"[0-9+\-.eE]+(?:\\[0-9+\-.eE]+)* ?")


def plain_numbers(value: bytes) -> bytes | None:
    """A kept DS or IS value as pydicom writes it after reading ``value`` (its strings kept as read, padded to
    even length: PS3.5 7.1.1); None where it is not that simple."""
    if not PLAIN_NUMBERS.fullmatch(value):
        return None
    value = value.rstrip(b" ")
    return value + b" " * (len(value) % 2)
