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
from typing import Any

from pydicom import Dataset, config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.hooks import hooks
from pydicom.multival import MultiValue
from pydicom.tag import TagType

#: VRs whose conversion from the file validates the value and quotes it when invalid. All use the
#: default character repertoire (PS3.5 6.2), so their bytes decode without the Specific Character Set.
QUOTED_WHEN_READ = frozenset({"DS", "IS", "UI"})
#: pydicom's decoding of the default character repertoire (``pydicom.charset.default_encoding``).
DEFAULT_ENCODING = "iso8859"


def deep_copy(ds: Dataset) -> Dataset:
    """A deep copy of ``ds``, made without validating (or quoting) any value.

    ``ds`` is read quietly first (``read_quietly``); its UID values, immutable strings, are shared with
    the copy rather than re-created through ``UID.__new__``, which would validate them."""
    uids: dict[int, Any] = {}
    read_quietly(ds, uids)
    if getattr(ds, "file_meta", None) is not None:
        read_quietly(ds.file_meta, uids)
    return copy.deepcopy(ds, uids)  # a pre-filled deepcopy memo: these objects are not copied


def read_quietly(ds: Dataset, uids: dict[int, Any] | None = None) -> None:
    """Convert the raw DS, IS and UI elements of ``ds``, at any depth, with validation off, and turn it
    off for those already converted. Values are unchanged (pydicom would convert them on first access).

    Other raw elements stay raw: converting them warns with lengths only, never with the value. With
    ``uids``, every UID value is added to it by ``id``."""
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            vr = _raw_vr(ds, elem)
            if vr in QUOTED_WHEN_READ and elem.value:
                ds[tag] = _converted(elem, vr)
            elif vr != "SQ":
                continue
            elem = ds[tag]  # parsing a sequence validates nothing; its items are read below
        if elem.VR == "SQ":
            for item in elem.value:
                read_quietly(item, uids)
        elif elem.VR in QUOTED_WHEN_READ:
            unvalidated(elem)
            if uids is not None and elem.VR == "UI":
                uids.update((id(v), v) for v in (elem.value if elem.VM > 1 else [elem.value]))


def unvalidated(elem: DataElement) -> DataElement:
    """``elem``, with values assigned to it from now on not validated (nor quoted)."""
    elem.validation_mode = config.IGNORE
    return elem


def unvalidated_element(tag: TagType, vr: str, value: Any) -> DataElement:
    """A new element holding ``value``, not validated (nor quoted)."""
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _raw_vr(ds: Dataset, raw: RawDataElement) -> str:
    """The VR pydicom gives ``raw`` (for implicit VR, the data dictionary's), by pydicom's own hook."""
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
