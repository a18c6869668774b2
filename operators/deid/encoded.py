"""De-identification of a DICOM file as it is encoded: its bytes walked once, no pydicom ``Dataset`` built.

``scripts/deidentify.py`` turns files into files. On the general path (``dcmread``, ``Deidentifier.deidentify``,
``operators.deid.writer``) most of the time of a heavy header goes into pydicom objects made for elements
that are then kept or dropped as they are. Here the data set (PS3.5 7.1.2 Explicit VR Little Endian, 7.5
nested data sets) is indexed without decoding any value, then written out: runs of elements kept as read
are copied as one slice, removed ones skipped, the common replacements (Z, a fixed D, U) encoded directly,
and every other element is handed, alone in a one-element data set, to the ``Deidentifier`` code the
general path runs. The output is the general path's, byte for byte
(``tests/unit/test_deidentification_encoded.py``).

Files outside this walk's scope get ``None`` and take the general path: another encoding (implicit VR, big
endian, deflated, a private transfer syntax), a profile whose actions need the whole instance
(``DeidentificationProfile.element_wise``), elements out of tag order, a value of undefined length outside a sequence
or encapsulated Pixel Data, a value running past its
end, and every file the general path's writer leaves to pydicom (``operators.deid.writer``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from typing import BinaryIO, NamedTuple, cast

from pydicom import Dataset, dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from operators.deid.deidentifier import (
    CONVERTED_WHEN_KEPT,
    DUMMY_FREE_VRS,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    NUMBER_STRING_VRS,
    TEXT_VRS,
    Deidentifier,
    fixed_dummy,
    quiet_value,
    record_method,
)
from operators.deid.profile import Action, ProfileOptions, load_profile
from operators.deid.raw import ASCII_COMPATIBLE, fixed_value, plain_numbers, plain_text, raw_uids, uid_strings, valid_uid
from operators.deid.writer import raw_header, write_file

#: VRs never copied as read: values the general path converts (``CONVERTED_WHEN_KEPT``), and UN, which pydicom reads
#: as the data dictionary's VR
KEPT_AS_READ_EXCEPT = CONVERTED_WHEN_KEPT | {"UN"}
#: tag, VR, and the 16-bit length (or, before a 32-bit length, the reserved field): PS3.5 7.1.2
HEADER = struct.Struct("<HH2sH")
HEADER_32 = struct.Struct("<HH2sHL")
LENGTH_32 = struct.Struct("<L")
#: tag and 32-bit length of an item or delimiter (PS3.5 7.5)
ITEM_HEADER = struct.Struct("<HHL")
ITEM, ITEM_DELIMITATION, SEQUENCE_DELIMITATION = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
#: the VR of each 2-byte VR field (PS3.5 6.2); any other is outside this walk
VR_OF_FIELD = {str(vr).encode(): str(vr) for vr in VR if len(str(vr)) == 2}
LENGTH_32_VRS = frozenset(EXPLICIT_VR_LENGTH_32)
SPECIFIC_CHARACTER_SET = 0x00080005
PIXEL_DATA = 0x7FE00010
#: what the de-identifier adds to every instance (PS3.15 E.1.1 item 6): Patient Identity Removed, De-identification
#: Method, its Code Sequence, Longitudinal Temporal Information Modified
METHOD_TAGS = (0x00120062, 0x00120063, 0x00120064, 0x00280303)
#: top-level attributes the admission gate reads (``operators.deid.admission``): SOP Class UID, Modality, Burned
#: In Annotation, and the three Pixel Data attributes (their presence only)
ADMISSION_TAGS = frozenset({0x00080016, 0x00080060, 0x00280301, 0x7FE00008, 0x7FE00009, PIXEL_DATA})
#: top-level UIDs the output is named by: SOP Class, Study Instance, Series Instance, SOP Instance
NAMING_TAGS = (0x00080016, 0x0020000D, 0x0020000E, 0x00080018)
ITEM_OF_UNDEFINED_LENGTH = ITEM_HEADER.pack(0xFFFE, 0xE000, UNDEFINED_LENGTH)
ITEM_DELIMITATION_ITEM = ITEM_HEADER.pack(0xFFFE, 0xE00D, 0)
SEQUENCE_DELIMITATION_ITEM = ITEM_HEADER.pack(0xFFFE, 0xE0DD, 0)


class Unsupported(Exception):
    """Outside this walk's scope: the general path takes the file."""


class Element(NamedTuple):
    """An element of an encoded data set, located, not decoded."""

    tag: int
    vr: str
    start: int  # the first byte of its header
    value: int  # the first byte of its value
    length: int  # as encoded: UNDEFINED_LENGTH for an undefined length
    end: int  # the first byte after it (after the Sequence Delimitation Item of an undefined length)
    #: the items of a sequence of undefined length, found on the way to its end; a defined length's are indexed
    #: when they are needed (``sequence_items``): most sequences of a heavy header are removed whole
    items: list[Item] | None
    #: whether its bytes are what pydicom writes for it unchanged: reserved field and delimiter lengths zero
    canonical: bool


#: an ``Element`` made without ``NamedTuple.__new__``'s Python call: a heavy header has a thousand
_new_element = tuple.__new__


class Item(NamedTuple):
    elements: list[Element]
    undefined_length: bool


def _data_set(data: bytes, pos: int, end: int, undefined_item: bool) -> tuple[list[Element], int]:
    """The elements from ``pos`` to ``end``, or in an item of undefined length to its Item Delimitation Item; and
    the position after them."""
    elements: list[Element] = []
    append, unpack, vr_of = elements.append, HEADER.unpack_from, VR_OF_FIELD.get  # a heavy header has a thousand
    previous = -1
    while pos < end:
        if pos + 8 > end:
            raise Unsupported("truncated element header")
        group, number, vr_bytes, short = unpack(data, pos)
        tag = group << 16 | number
        if tag == ITEM_DELIMITATION and undefined_item:
            return elements, pos + 8
        if tag <= previous or group == 0xFFFE:  # pydicom sorts; a stray item or delimiter
            raise Unsupported("elements out of order")
        previous = tag
        vr = vr_of(vr_bytes)
        if vr is None:
            raise Unsupported("VR")
        canonical = True
        if vr in LENGTH_32_VRS:
            if pos + 12 > end:
                raise Unsupported("truncated element header")
            length, value, canonical = LENGTH_32.unpack_from(data, pos + 8)[0], pos + 12, short == 0
        else:
            length, value = short, pos + 8
        items = None
        if length == UNDEFINED_LENGTH:
            if vr == "SQ":
                items, after = _items(data, value, None, end)
            elif vr in ("OB", "OW"):  # encapsulated Pixel Data (an undefined-length UN would be a sequence)
                after, delimiter_length = _fragments_end(data, value, end)
                canonical = canonical and delimiter_length == 0
            else:
                raise Unsupported("undefined length")
        else:
            after = value + length
            if after > end:
                raise Unsupported("value past the end")
        append(_new_element(Element, (tag, vr, pos, value, length, after, items, canonical)))
        pos = after
    if undefined_item:
        raise Unsupported("item without its delimiter")
    return elements, pos


def _items(data: bytes, pos: int, end: int | None, limit: int) -> tuple[list[Item], int]:
    """The items of a sequence up to ``end``, or (``end`` None: undefined length) to its Sequence Delimitation Item."""
    items: list[Item] = []
    while end is None or pos < end:
        if pos + 8 > limit:
            raise Unsupported("truncated item")
        group, number, length = ITEM_HEADER.unpack_from(data, pos)
        tag = group << 16 | number
        if tag == SEQUENCE_DELIMITATION and end is None:
            return items, pos + 8
        if tag != ITEM:
            raise Unsupported("not an item")
        if length == UNDEFINED_LENGTH:
            elements, pos = _data_set(data, pos + 8, limit, True)
        else:
            if pos + 8 + length > limit:
                raise Unsupported("item past the end")
            elements, pos = _data_set(data, pos + 8, pos + 8 + length, False)
        items.append(Item(elements, length == UNDEFINED_LENGTH))
    return items, pos


def sequence_items(data: bytes, e: Element) -> list[Item]:
    """The items of the sequence ``e``."""
    return e.items if e.items is not None else _items(data, e.value, e.end, e.end)[0]


def _fragments_end(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """The end of encapsulated fragments (PS3.5 A.4), item after item to the Sequence Delimitation Item, as
    pydicom reads them first; and that delimiter's length field."""
    while pos + 8 <= limit:
        group, number, length = ITEM_HEADER.unpack_from(data, pos)
        tag = group << 16 | number
        if tag == SEQUENCE_DELIMITATION:
            return pos + 8, length
        if tag != ITEM:
            break
        pos += 8 + length
    raise Unsupported("encapsulated fragments")


@dataclass(frozen=True)
class EncodedFile:
    """A DICOM file (PS3.10 7.1) whose data set is Explicit VR Little Endian, indexed, its values not decoded."""

    data: bytes
    meta: Dataset  # the File Meta Information, raw
    syntax: UID
    elements: list[Element]

    @classmethod
    def parse(cls, data: bytes) -> EncodedFile | None:
        """``data`` indexed, or None where it is outside this walk's scope (the general path reads it)."""
        if len(data) < 132 or data[128:132] != b"DICM":
            return None
        try:
            meta_elements, start = _file_meta(data)
            meta = _raw_dataset(data, meta_elements)
            if "TransferSyntaxUID" not in meta:
                return None
            syntax = UID(quiet_value(meta, "TransferSyntaxUID"))
            if (not syntax.is_transfer_syntax or syntax.is_private or syntax.is_deflated or syntax.is_implicit_VR
                    or not syntax.is_little_endian):
                return None
            elements, _ = _data_set(data, start, len(data), False)
        except (Unsupported, struct.error, UnicodeDecodeError):
            return None
        return cls(data, meta, syntax, elements)

    def header(self) -> Dataset:
        """The top-level attributes the admission gate reads, raw (Pixel Data's value not read: its presence is what counts)."""
        wanted = [e for e in self.elements if e.tag in ADMISSION_TAGS or e.tag == SPECIFIC_CHARACTER_SET]
        return _raw_dataset(self.data, wanted, values=lambda e: e.tag != PIXEL_DATA)


def _file_meta(data: bytes) -> tuple[list[Element], int]:
    """The File Meta Information elements (group 0002, Explicit VR Little Endian: PS3.10 7.1), read as pydicom
    reads them (to the first element of another group), and where the data set begins."""
    pos, end = 132, len(data)
    while pos + 8 <= end:
        group, _, vr, short = HEADER.unpack_from(data, pos)
        if group != 0x0002:
            break
        pos += 12 + LENGTH_32.unpack_from(data, pos + 8)[0] if vr.decode("latin-1") in LENGTH_32_VRS else 8 + short
    return _data_set(data, 132, pos, False)[0], pos


def _raw(data: bytes, e: Element, value: bool = True) -> RawDataElement:
    """``e`` as pydicom's reader gives it (an empty value as ``empty_value_for_VR``), its value left out if not ``value``."""
    if not value:
        content = None
    elif e.length == UNDEFINED_LENGTH:
        content = data[e.value:e.end - 8]  # up to the Sequence Delimitation Item
    else:
        content = data[e.value:e.value + e.length] if e.length else cast(bytes | None, empty_value_for_VR(e.vr, raw=True))
    return RawDataElement(BaseTag(e.tag), e.vr, e.length, content, e.value, False, True)


def _raw_dataset(data: bytes, elements: list[Element], values: Callable[[Element], bool] = lambda e: True) -> Dataset:
    ds = Dataset()
    for e in elements:
        ds._dict[BaseTag(e.tag)] = _raw(data, e, values(e))
    return ds


@dataclass(frozen=True)
class DeidentifiedFile:
    """A de-identified file, as the chunks to write in order, and the (replaced) UIDs it is filed under."""

    chunks: list[bytes | memoryview]
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str

    def write(self, fp: BinaryIO) -> None:
        fp.writelines(self.chunks)

    def tobytes(self) -> bytes:
        return b"".join(self.chunks)


def deidentify_encoded(deidentifier: Deidentifier, encoded: EncodedFile) -> DeidentifiedFile | None:
    """``encoded`` de-identified by ``deidentifier``, the bytes its general path writes; None where the file or the
    profile is outside this walk's scope. The re-identification map gets the UIDs, not the study's original
    attributes (kept for the SR, which files are not written for)."""
    if not deidentifier.profile.element_wise:
        return None
    try:
        return _Walk(deidentifier, encoded).file()
    except Unsupported:
        return None


def deidentify_file(deidentifier: Deidentifier, data: bytes, encoded: EncodedFile | None,
                    original: Dataset | None = None) -> DeidentifiedFile:
    """``data``, a DICOM file, de-identified: by the encoded walk where it applies, else by the general path.
    ``encoded`` is ``EncodedFile.parse(data)`` (None: outside the walk's scope); ``original`` is ``data`` as
    pydicom read it, if the caller has it."""
    result = deidentify_encoded(deidentifier, encoded) if encoded is not None else None
    if result is not None:
        return result
    ds = deidentifier.deidentify(original if original is not None else dcmread(BytesIO(data)))
    out = BytesIO()
    write_file(out, ds)
    return DeidentifiedFile([out.getvalue()], str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))


@cache
def _method_chunks(options: ProfileOptions) -> tuple[tuple[int, bytes], ...]:
    """``record_method``'s elements, encoded, in tag order (ASCII values: the same bytes in any character set)."""
    ds = Dataset()
    record_method(ds, load_profile(options))
    return tuple((int(elem.tag), _encoded(elem, default_encoding)) for elem in ds)


#: what becomes of an element, by tag and VR, before its value is looked at: dropped (private, group length, curve,
#: overlay comments, or X), kept as read (K or outside the table, of a VR the general path does not convert), in an
#: overlay group (dropped where the group holds Overlay Data), or its action (``Action``, or None outside the table)
DROPPED, KEPT_AS_READ, OVERLAY, UNKNOWN = object(), object(), object(), object()
Fate = Action | None | object


@cache
def _fates(options: ProfileOptions) -> dict[tuple[int, str], Fate]:
    """The fates found so far for a profile: tags repeat from file to file."""
    return {}


def _fate(tag: int, vr: str, actions: Mapping[int, Action], overlay: bool = True) -> Fate:
    group, number = tag >> 16, tag & 0xFFFF
    if group & 1 or number == 0 or 0x5000 <= group <= 0x50FF or (number == 0x4000 and 0x6000 <= group <= 0x60FF):
        return DROPPED
    if overlay and 0x6000 <= group <= 0x60FF:
        return OVERLAY
    action = actions.get(tag)
    if action is Action.REMOVE:
        return DROPPED
    return KEPT_AS_READ if (action is None or action is Action.KEEP) and vr not in KEPT_AS_READ_EXCEPT else action


def _element_bytes(tag: int, vr: str, value: bytes) -> bytes:
    """An element with a value already encoded (PS3.5 7.1.2), short enough for its VR's length field."""
    if vr in LENGTH_32_VRS:
        return HEADER_32.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _file_meta_bytes(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Preamble, "DICM" and the File Meta Information of ``deidentified_file_meta``, as pydicom's
    ``write_file_meta_info`` writes it (PS3.10 7.1: its version and group length added; UI values padded with a
    NUL, text with a space), without building its dataset."""
    def ui(tag: int, uid: str) -> bytes:
        return _element_bytes(tag, "UI", cast(bytes, raw_uids(BaseTag(tag), [uid]).value))

    body = b"".join([
        _element_bytes(0x00020001, "OB", b"\x00\x01"), ui(0x00020002, sop_class), ui(0x00020003, sop_instance),
        ui(0x00020010, syntax), ui(0x00020012, IMPLEMENTATION_CLASS_UID),
        _element_bytes(0x00020013, "SH", fixed_value("SH", IMPLEMENTATION_VERSION_NAME))])
    return b"\x00" * 128 + b"DICM" + _element_bytes(0x00020000, "UL", struct.pack("<L", len(body))) + body


def _uid_text(elem: DataElement | RawDataElement) -> str:
    """A UI element's value as ``quiet_value`` reads it (several values joined by backslashes)."""
    if isinstance(elem, RawDataElement):
        return "\\".join(uid_strings(elem))
    return "\\".join(map(str, elem.value)) if isinstance(elem.value, list | MultiValue) else str(elem.value)


def _encoded(elem: DataElement | RawDataElement, encodings: str | list[str]) -> bytes:
    """``elem`` as the general path writes it: a raw element as it is (``operators.deid.writer``), else by pydicom."""
    if type(elem) is RawDataElement and elem.value is not None and elem.length != UNDEFINED_LENGTH and (
            elem.VR in LENGTH_32_VRS or len(elem.value) <= 0xFFFF):
        return _element_bytes(elem.tag, cast(str, elem.VR), elem.value)
    header = raw_header(elem, False, True)
    if header is not None:
        return header + cast(bytes, elem.value)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_data_element(out, elem, encodings)
    return out.getvalue()


def _kept_uids(raw: RawDataElement) -> RawDataElement | None:
    """A kept UI element as pydicom writes it after reading it: its values padded with a NUL (PS3.5 9.1); None
    where a value is not a valid UID (pydicom would warn, quoting it, and the general path avoids that)."""
    values = uid_strings(raw)
    return raw_uids(raw.tag, values) if all(valid_uid(v) for v in values) else None


def _length(chunks: list[bytes | memoryview]) -> int:
    return sum(len(chunk) for chunk in chunks)


class _Walk:
    """One file through the profile: each data set's elements in tag order, as chunks of output."""

    def __init__(self, deidentifier: Deidentifier, encoded: EncodedFile) -> None:
        self.deidentifier, self.encoded = deidentifier, encoded
        self.actions = deidentifier.profile.actions
        self.data, self.view = encoded.data, memoryview(encoded.data)
        self.named: dict[int, DataElement | RawDataElement] = {}  # the top-level UIDs the file is named by, as written

    def file(self) -> DeidentifiedFile:
        for e in self.encoded.elements:  # what would make the general path's writer leave the file to pydicom
            if e.tag >> 16 in (0x0000, 0x0002):
                raise Unsupported("command or File Meta Information group in the data set")
            if e.tag == PIXEL_DATA and (e.length == UNDEFINED_LENGTH) != self.encoded.syntax.is_compressed:
                raise Unsupported("Pixel Data length form")
        chunks = self._data_set(self.encoded.elements, default_encoding, default_encoding,
                                list(_method_chunks(self.deidentifier.profile.options)))
        if any(tag not in self.named for tag in NAMING_TAGS):
            raise Unsupported("a naming UID missing")
        sop_class, *named = (_uid_text(self.named[tag]) for tag in NAMING_TAGS)
        if not all(uid and "\\" not in uid for uid in (sop_class, *named)):
            raise Unsupported("a naming UID empty or multi-valued")
        originals = {e.tag: _uid_text(_raw(self.data, e)) for e in self.encoded.elements if e.tag in NAMING_TAGS}
        for tag, uid in zip(NAMING_TAGS[1:], named):  # as ``Deidentifier.deidentify`` records them (Retain UIDs: as they are)
            self.deidentifier.reidentification.uids.setdefault(uid, originals[tag])
        return DeidentifiedFile([_file_meta_bytes(sop_class, named[2], str(self.encoded.syntax)), *chunks], *named)

    def _data_set(self, elements: list[Element], parent_read: str | list[str], parent_write: str | list[str],
                  added: list[tuple[int, bytes]] | None = None) -> list[bytes | memoryview]:
        """One data set (the top level, with the ``added`` elements, or an item) de-identified: E.1-1 applied to
        every element, private ones (odd groups), group lengths, curves (50xx) and overlays (60xx) removed."""
        data, actions, fates, top = self.data, self.actions, _fates(self.deidentifier.profile.options), added is not None
        read_encoding, write_encodings = parent_read, parent_write
        charset = next((e for e in elements if e.tag == SPECIFIC_CHARACTER_SET), None)
        if charset is not None:  # as pydicom's reader and writer take it (``read_dataset``, ``write_dataset``)
            if not charset.length:
                raise Unsupported("empty Specific Character Set")
            write_encodings = convert_raw_data_element(_raw(data, charset)).value
            read_encoding = convert_encodings(write_encodings)
        overlays = {e.tag >> 16 for e in elements if e.tag & 0xFFFF == 0x3000 and 0x6000 <= e.tag >> 16 <= 0x60FF}
        chunks: list[bytes | memoryview] = []
        run_start = run_end = -1  # elements kept as read, contiguous in the input: one slice
        plain = all(encoding in ASCII_COMPATIBLE for encoding in ([read_encoding] if isinstance(read_encoding, str) else read_encoding))
        scratch: list[Dataset] = []

        def scratch_of() -> Dataset:
            """A data set for one element at a time, in this data set's character set, as pydicom reads it."""
            if not scratch:
                ds = Dataset()
                ds._parent_encoding = parent_read
                if charset is not None:
                    ds._dict[BaseTag(SPECIFIC_CHARACTER_SET)] = _raw(data, charset)
                ds.set_original_encoding(False, True, read_encoding)
                scratch.append(ds)
            return scratch[0]

        pending = added or []
        for e in elements:
            tag = e.tag
            if pending and pending[0][0] <= tag:
                if run_end >= 0:
                    chunks.append(self.view[run_start:run_end])
                    run_end = -1
                while pending and pending[0][0] <= tag:
                    chunks.append(pending.pop(0)[1])
                if tag in METHOD_TAGS:
                    continue  # replaced
            vr = e.vr
            action = fates.get((tag, vr), UNKNOWN)
            if action is UNKNOWN:
                action = fates[tag, vr] = _fate(tag, vr, actions)
            if action is OVERLAY:
                if tag >> 16 in overlays:
                    continue
                action = _fate(tag, vr, actions, overlay=False)
            if action is DROPPED:
                continue
            if action is KEPT_AS_READ:
                if e.canonical and e.length:
                    if e.start != run_end:
                        if run_end >= 0:
                            chunks.append(self.view[run_start:run_end])
                        run_start = e.start
                    run_end = e.end
                    continue
                action = actions.get(tag)
            if run_end >= 0:
                chunks.append(self.view[run_start:run_end])
                run_end = -1
            if tag == SPECIFIC_CHARACTER_SET:
                raise Unsupported("Specific Character Set changed")
            if vr == "SQ":
                chunks.extend(self._sequence(e, cast(Action | None, action), read_encoding, write_encodings))
                continue
            text = None
            if vr in TEXT_VRS and action is Action.DUMMY and plain:
                text = plain_text(data[e.value:e.end])
            result: DataElement | RawDataElement | None
            if vr == "UN":  # read as the data dictionary's VR (PS3.5 6.2.2): the general path's code resolves it
                result = self._general(e, scratch_of())
            elif action is Action.ZERO:
                result = RawDataElement(BaseTag(tag), vr, 0, b"", e.value, False, True)
            elif action is Action.DUMMY and vr in DUMMY_FREE_VRS:
                value = fixed_value(vr, fixed_dummy(vr))
                result = RawDataElement(BaseTag(tag), vr, len(value), value, e.value, False, True)
            elif text is not None:
                result = self.deidentifier.text_dummy(BaseTag(tag), vr, text)
            elif vr == "UI" and e.length and (action is Action.UID or (action is None and self.deidentifier.replaces_outside_table(tag))):
                result = self.deidentifier.raw_uid_replacement(_raw(data, e)) or self._general(e, scratch_of())
            elif vr == "UI" and e.length and (action is None or action is Action.KEEP):
                result = _kept_uids(_raw(data, e)) or self._general(e, scratch_of())
            elif vr in NUMBER_STRING_VRS and (action is None or action is Action.KEEP) and (
                    numbers := plain_numbers(data[e.value:e.end])) is not None:
                result = RawDataElement(BaseTag(tag), vr, len(numbers), numbers, e.value, False, True)
            else:
                result = self._general(e, scratch_of())
            if result is not None:
                if top and tag in NAMING_TAGS:
                    self.named[tag] = result
                chunks.append(_encoded(result, write_encodings))
        if run_end >= 0:
            chunks.append(self.view[run_start:run_end])
        chunks.extend(chunk for _, chunk in pending)
        return chunks

    def _general(self, e: Element, scratch: Dataset) -> DataElement | RawDataElement | None:
        """``e`` de-identified by the general path's own code, alone in ``scratch``; None where it is removed."""
        raw = _raw(self.data, e)
        scratch._dict[raw.tag] = raw
        self.deidentifier.apply_element_wise(scratch, raw.tag)
        return scratch._dict.pop(raw.tag, None)

    def _sequence(self, e: Element, action: Action | None, read_encoding: str | list[str],
                  write_encodings: str | list[str]) -> list[bytes | memoryview]:
        """A sequence kept with its items de-identified (K, or outside the table), or emptied (Z); in its own
        length form, items too, as pydicom writes them (PS3.5 7.5.1)."""
        if action is Action.ZERO:
            body: list[bytes | memoryview] = []
        elif action is None or action is Action.KEEP:
            body = []
            for item in sequence_items(self.data, e):
                elements = self._data_set(item.elements, read_encoding, write_encodings)
                if item.undefined_length:
                    body += [ITEM_OF_UNDEFINED_LENGTH, *elements, ITEM_DELIMITATION_ITEM]
                else:
                    body += [ITEM_HEADER.pack(0xFFFE, 0xE000, _length(elements)), *elements]
        else:
            raise Unsupported("a sequence given a value action")
        undefined = e.length == UNDEFINED_LENGTH
        header = HEADER_32.pack(e.tag >> 16, e.tag & 0xFFFF, b"SQ", 0, UNDEFINED_LENGTH if undefined else _length(body))
        return [header, *body, SEQUENCE_DELIMITATION_ITEM] if undefined else [header, *body]
