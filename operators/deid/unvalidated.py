"""Original values read, copied and assigned without pydicom's value validation, one element at a time.

pydicom validates a value when it converts it from the file (DS, IS and UI: ``pydicom.values`` builds
``DSfloat``, ``IS`` and ``UID`` objects), when it re-creates it in a copy (``UID.__new__``) and when
it is assigned, and its warnings quote the value ("Invalid value for VR UI: '1.2.03…'") into the log
and stderr. The values of an original, and the values derived from it (a shifted date-time keeps its
original time part, cleaned text), are PHI or may be, so the de-identifier handles them with
validation off — for those elements only: each ``DataElement`` carries its own ``validation_mode``,
whereas ``pydicom.config.settings`` is shared by every thread of the process (the listener's among
them) and is never changed here.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from pydicom import Dataset, config
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.hooks import hooks
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import TagType

#: VRs whose conversion from the file validates the value and quotes it when invalid. All use the
#: default character repertoire (PS3.5 6.2), so their bytes decode without the Specific Character Set.
QUOTED_WHEN_READ = frozenset({"DS", "IS", "UI"})
AnyDataset = TypeVar("AnyDataset", bound=Dataset)
#: pydicom's decoding of the default character repertoire (``pydicom.charset.default_encoding``).
DEFAULT_ENCODING = "iso8859"


def copy_dataset(ds: AnyDataset) -> AnyDataset:
    """A copy of ``ds`` that the de-identifier may change without touching ``ds``, made without validating
    (or quoting) any value and without converting or copying what it need not.

    Elements still raw in ``ds`` (``RawDataElement``: immutable tuples of the bytes read) are shared: the
    copy converts its own when it needs their values (``element``). Converted elements are new objects
    whose immutable values (``str``, ``UID``, ``bytes``, numbers) are shared, since the de-identifier
    only ever assigns new values; multi-values and sequences are copied, items recursively. (A generic
    deep copy re-created every raw tuple and value: most of the de-identification time on heavy
    headers.) The source a dataset was read from is shared: deferred values are only read from it."""
    copied = ds.__class__.__new__(ds.__class__)
    state = copied.__dict__
    for name, value in ds.__dict__.items():
        if name == "_dict":
            state[name] = {tag: _copy_element(elem) for tag, elem in value.items()}
        elif name == "file_meta" and value is not None:
            state[name] = copy_dataset(value)
        elif name == "_private_blocks":  # a cache of private blocks bound to ``ds``
            state[name] = {}
        elif name in READ_SOURCE:
            state[name] = value
        else:
            state[name] = copy.deepcopy(value)
    return copied


#: Dataset attributes naming the source it was read from: shared by a copy.
READ_SOURCE = frozenset({"buffer", "fileobj_type", "filename", "timestamp"})


def _copy_element(elem: DataElement | RawDataElement) -> DataElement | RawDataElement:
    if isinstance(elem, RawDataElement):
        return elem
    if elem.is_buffered:
        return copy.deepcopy(elem)
    copied = DataElement.__new__(DataElement)
    copied.__dict__.update(elem.__dict__)
    value = elem.value
    if isinstance(value, MultiValue | Sequence):  # the same class and attributes, items not re-constructed
        values = copy.copy(value)  # (a UID would be validated again)
        values._list = [copy_dataset(item) for item in value] if isinstance(value, Sequence) else list(value._list)
        copied._value = values
    return copied


def element(ds: Dataset, tag: int, store: bool = True) -> DataElement:
    """The element at ``tag`` of ``ds``, converted from its raw form with validation off where pydicom's
    conversion would validate and quote the value (DS, IS, UI), and with validation off for values
    assigned to it. With ``store=False`` a raw element is converted for the caller only and ``ds`` stays
    as it was (an original is never changed, not even in form)."""
    raw = ds.get_item(tag)
    if not isinstance(raw, RawDataElement):
        return unvalidated(raw) if store else raw
    vr = raw_vr(ds, raw)
    if vr in QUOTED_WHEN_READ and raw.value:
        converted = _converted(raw, vr)
        if store:
            ds[tag] = converted
    elif store:
        converted = ds[tag]  # other VRs warn with lengths only, never with the value
    else:
        converted = convert_raw_data_element(raw, encoding=ds._character_set, ds=ds)
    return unvalidated(converted) if store else converted


def vr_of(ds: Dataset, tag: int) -> str:
    """The VR of the element at ``tag``, raw or not, without converting its value."""
    elem = ds.get_item(tag)
    return raw_vr(ds, elem) if isinstance(elem, RawDataElement) else str(elem.VR)


def unvalidated(elem: DataElement) -> DataElement:
    """``elem``, with values assigned to it from now on not validated (nor quoted)."""
    elem.validation_mode = config.IGNORE
    return elem


def unvalidated_element(tag: TagType, vr: str, value: Any) -> DataElement:
    """A new element holding ``value``, not validated (nor quoted)."""
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def raw_vr(ds: Dataset, raw: RawDataElement) -> str:
    """The VR pydicom gives ``raw`` (for implicit VR, the data dictionary's), by pydicom's own hook."""
    if raw.VR is not None and raw.VR != "UN":  # an explicit VR, which the hook returns as it is
        return str(raw.VR)
    data: dict[str, Any] = {}
    hooks.raw_element_vr(raw, data, encoding=None, ds=ds)
    return str(data["VR"])


def _converted(raw: RawDataElement, vr: str) -> DataElement:
    """``raw`` as pydicom converts it, with validation off: its strings (UI padded with NUL or space, DS
    and IS with spaces) made ``UID``, ``DSfloat`` or ``IS``; kept as strings where that fails, as
    pydicom does (``pydicom.values.convert_value`` retries other VRs)."""
    text = (raw.value or b"").decode(DEFAULT_ENCODING)
    strings = (text.rstrip("\0 ") if vr == "UI" else text.strip()).split("\\")
    try:
        return DataElement(raw.tag, vr, strings, raw.value_tell, validation_mode=config.IGNORE)
    except ValueError:  # e.g. IS "1A"; the message quotes the value, so it is not passed on
        value = strings[0] if len(strings) == 1 else MultiValue(str, strings)
        return DataElement(raw.tag, vr, value, raw.value_tell, already_converted=True, validation_mode=config.IGNORE)
