"""The Basic Application Level Confidentiality Profile (DICOM PS3.15 Annex E, Table E.1-1) and its options,
as data.

``data/ps3_15_table_e1_1.json`` holds every row of Table E.1-1 (DICOM 2024b): the Basic Profile action and
the action of each option column, plus the rows added to the table up to 2026c (Basic Profile column
only) and the sample Safe Private Attributes of Table E.3.10-1. This module turns the table and the
options a site chose into one resolved action per tag; ``operators.deid.deidentifier`` applies them.

Combined actions (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) let the de-identifier keep an attribute where the IOD
requires it. Without the IOD's attribute types at hand this implementation takes the choice that is
conformant whatever the type (``resolve_combined``); for X/Z/U* (Referenced/Source Image Sequence) the
sequence is kept with its UIDs replaced, so the references still resolve among the de-identified
instances.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from functools import cache, cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

TABLE_PATH = Path(__file__).resolve().parent / "data" / "ps3_15_table_e1_1.json"
#: Attributes the table lets be removed that are Type 2 (or 2C) in an image IOD: emptied (Z), not removed, so
#: the output stays valid; an empty value carries no information. Acquisition Context Sequence (0040,0555,
#: X/Z): Type 2 in the Acquisition Context Module (PS3.3 C.7.6.14). Responsible Person (0010,2297) and
#: Responsible Organization (0010,2299), both X: Type 2C in the Patient Module (C.7.1.1) when the patient is
#: an animal.
EMPTIED_NOT_REMOVED = frozenset({0x00400555, 0x00102297, 0x00102299})


def parse_tag(text: str) -> int | None:
    """The tag of a Table E.1-1 row, or None for the pattern rows (50xx,xxxx 60xx,3000 60xx,4000, private)."""
    return int(text, 16) if re.fullmatch(r"[0-9A-F]{8}", text) else None


class Action(str, Enum):
    """The action codes of PS3.15 Table E.1-1, once a combined action is resolved."""

    REMOVE = "X"
    ZERO = "Z"  # zero-length value
    DUMMY = "D"  # non-zero-length dummy value consistent with the VR
    KEEP = "K"  # keep; a sequence is kept and its items are de-identified
    CLEAN = "C"  # replace with values of similar meaning known not to contain identifying information
    UID = "U"  # replace with a UID consistent within the set of instances
    #: C of the Retain Longitudinal Temporal Information with Modified Dates column: dates are shifted by
    #: a whole number of days per patient, times kept (E.3.6)
    SHIFT = "C(dates)"


def resolve_combined(code: str, tag: int, vr: str | None) -> Action:
    """One action for a (possibly combined) Table E.1-1 code, conformant whatever the attribute's type in the IOD.

    Values: D where D is allowed (a dummy satisfies Type 1, 2 and 3), else Z. Sequences: X/Z/U* keeps the
    sequence with its UIDs replaced; otherwise X where allowed, since an empty Type 3 sequence is invalid
    (PS3.5 7.5.3) and a dummy item could carry no meaning; a pure D sequence is removed too (those are
    SR content, presentation-state graphics and observer sequences, of IODs this app does not accept).
    """
    choices = code.replace("*", "").split("/")
    if "X" in choices and tag in EMPTIED_NOT_REMOVED:
        return Action.ZERO
    if vr == "SQ":
        if "U" in choices or choices == ["K"]:
            return Action.KEEP
        return Action.ZERO if choices == ["Z"] else Action.REMOVE
    if len(choices) == 1:
        return Action(choices[0])
    return Action.DUMMY if "D" in choices else Action.ZERO


@dataclass(frozen=True)
class ProfileOptions:
    """The PS3.15 Annex E.3 options this app offers (``deidentification.options`` in ``app/config/app.json``).

    Names follow the option column names of Table E.1-1; all are off by default.
    """

    retain_longitudinal_modified_dates: bool = False  # E.3.6: dates shifted by a per-patient offset
    retain_patient_characteristics: bool = False  # E.3.7
    retain_device_identity: bool = False  # E.3.8
    retain_uids: bool = False  # E.3.9
    retain_safe_private: bool = False  # E.3.10: Table E.3.10-1 entries only
    clean_descriptors: bool = False  # E.3.5

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ProfileOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown de-identification option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        for name, value in values.items():
            if not isinstance(value, bool):
                raise ValueError(f"de-identification option {name} must be true or false, not {value!r}")
        return cls(**values)

    def enabled(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]


#: CID 7050 De-identification Method codes for the profile and each option (PS3.16).
METHOD_CODES: dict[str, Code] = {
    "basic": codes.DCM.BasicApplicationConfidentialityProfile,
    "retain_longitudinal_modified_dates": codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
    "retain_patient_characteristics": codes.DCM.RetainPatientCharacteristicsOption,
    "retain_device_identity": codes.DCM.RetainDeviceIdentityOption,
    "retain_uids": codes.DCM.RetainUidsOption,
    "retain_safe_private": codes.DCM.RetainSafePrivateOption,
    "clean_descriptors": codes.DCM.CleanDescriptorsOption,
}


@dataclass(frozen=True)
class SafePrivateAttribute:
    """A row of PS3.15 Table E.3.10-1: private group, creator, element offset within the block (xx00-xxFF)."""

    group: int
    creator: str
    element: int


@dataclass(frozen=True)
class DeidentificationProfile:
    """Table E.1-1 resolved for a set of options: tag -> action, plus the pattern rows and safe private list."""

    options: ProfileOptions
    actions: Mapping[int, Action]
    #: tag -> Basic Profile action, used where an option's C cannot apply to a value (see ``Deidentifier``)
    basic_actions: Mapping[int, Action]
    #: tags whose Basic Profile action is not K: their values identify the patient, and are what
    #: Clean Descriptors removes from free text
    identifying_tags: frozenset[int]
    safe_private: frozenset[SafePrivateAttribute]
    edition: str

    @classmethod
    def basic(cls, options: ProfileOptions | None = None) -> DeidentificationProfile:
        return load_profile(options or ProfileOptions())

    @cached_property
    def method_codes(self) -> list[Code]:
        return [METHOD_CODES["basic"], *(METHOD_CODES[name] for name in self.options.enabled())]

    @cached_property
    def element_wise(self) -> bool:
        """Whether each element's action needs nothing but the element: no dates shifted by the patient's
        offset, no text cleaned of the instance's identifying values, no private attribute kept by its block's
        creator (``operators.deid.encoded`` applies only such profiles)."""
        instance_bound = {Action.SHIFT, Action.CLEAN}
        return not self.options.retain_safe_private and not instance_bound & set(self.actions.values())

    @property
    def method_description(self) -> list[str]:
        """De-identification Method (0012,0063, LO, VM 1-n): the profile and each option, one value each (LO
        holds 64 characters); the codes are authoritative."""
        return [f"PS3.15 {self.edition} E.1-1 Basic Profile", *self.options.enabled()]


def _table() -> dict[str, Any]:
    return json.loads(TABLE_PATH.read_text())


def _effective_action(row: Mapping[str, Any], tag: int, vr: str | None, options: ProfileOptions) -> Action:
    """The Basic Profile action, overridden by the column of an enabled option (K before C where two apply)."""
    chosen = {name: code for name, code in row.get("options", {}).items() if getattr(options, name, False)}
    if "K" in chosen.values():
        return Action.KEEP
    if chosen.get("retain_longitudinal_modified_dates") == "C":
        return Action.SHIFT
    if "C" in chosen.values():
        return Action.CLEAN
    return resolve_combined(row["basic"], tag, vr)


@cache
def load_profile(options: ProfileOptions) -> DeidentificationProfile:
    """The profile for ``options`` (built once per set of options; profiles are immutable)."""
    table = _table()
    actions: dict[int, Action] = {}
    basic: dict[int, Action] = {}
    identifying: set[int] = set()
    for row in table["attributes"] + table["attributes_after_2024b"]:
        tag = parse_tag(row["tag"])
        if tag is None:
            continue  # the pattern rows are applied by the de-identifier
        vr = dictionary_VR(tag) if dictionary_has_tag(tag) else None
        actions[tag] = _effective_action(row, tag, vr, options)
        basic[tag] = resolve_combined(row["basic"], tag, vr)
        if row["basic"] != "K" and "clean_descriptors" not in row.get("options", {}):
            identifying.add(tag)
    safe = frozenset(
        SafePrivateAttribute(int(s["group"], 16), s["creator"], int(s["element"], 16))
        for s in table["safe_private"]["attributes"]
    )
    return DeidentificationProfile(
        options, MappingProxyType(actions), MappingProxyType(basic), frozenset(identifying), safe, table["edition"]
    )
