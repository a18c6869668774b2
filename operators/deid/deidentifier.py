"""De-identification of DICOM instances to the Basic Application Level Confidentiality Profile
(DICOM PS3.15 Annex E, Table E.1-1) and the options a site chose, with UIDs replaced by a keyed hash and an
in-memory re-identification map.

The table is data (``operators/deid/profile.py``); ``Deidentifier`` applies it to every
element of the dataset and of every sequence item, at any depth (E.1.1: "whether contained in the main
dataset or embedded in an Item of a Sequence of Items"), then records what was done (Patient Identity
Removed, De-identification Method and its CID 7050 codes, Longitudinal Temporal Information Modified)
and replaces the File Meta Information and preamble (E.1.1 item 7).

Everything downstream of the de-identification operator sees only de-identified data. The map back to
the original identifiers stays in memory and is used only by the SR writer, so that the SR is filed
into the original study; it is never logged or written.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from operators.deid.profile import Action, DeidentificationProfile, SafePrivateAttribute
from operators.deid.raw import DEFAULT_ENCODING, fixed_value, raw_element, raw_uids, uid_strings, valid_uid
from operators.deid.unvalidated import QUOTED_WHEN_READ, copy_dataset, element, raw_vr, unvalidated_element, vr_of
from operators.imaging.sampling import SamplingPlan

#: Root of the UIDs this app generates: "2.25." + a 128-bit integer (PS3.5 Annex B.2), at most 44 characters.
UID_ROOT = "2.25."
#: Standard UIDs (SOP classes, transfer syntaxes, coding schemes…) are not instance identifiers.
DICOM_UID_ROOT = "1.2.840.10008."
#: UI attributes outside Table E.1-1 that name a definition rather than an instance: kept. Every other
#: UI value outside the DICOM root is replaced, so that no instance UID escapes through an attribute
#: the table does not list.
DEFINITION_UID_SUFFIXES = ("ClassUID", "TransferSyntaxUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID", "CreatorUID")
#: Identifies this application in the File Meta Information of de-identified files (E.1.1 item 7).
IMPLEMENTATION_CLASS_UID = "2.25.207331460426593651837327461098561137081"
IMPLEMENTATION_VERSION_NAME = "BMCLIP_DEID_1"

#: Dummy values (action D) for VRs where a pseudonym of the original value would not be valid.
DUMMY_DATE_TIME = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000D"}
#: Text VRs: D gives a keyed pseudonym of the original (so equal originals stay equal); C cleans the text.
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
NUMBER_STRING_VRS = frozenset({"DS", "IS"})
BINARY_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})
#: Removed from free text by cleaning: dates in any common notation, and runs of 4 or more digits (record
#: numbers, phone numbers, years).
DATE_OR_NUMBER = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|\d{4,}")
#: Maximum date shift for the Retain Longitudinal Temporal Information with Modified Dates Option.
MAX_SHIFT_DAYS = 3650


@dataclass
class ReidentificationMap:
    """Replaced UID -> original UID, and each pseudonymous study's original patient/study attributes.

    Held in memory only; nothing here is logged or written.
    """

    uids: dict[str, str] = field(default_factory=dict)
    studies: dict[str, Dataset] = field(default_factory=dict)

    def original_uid(self, uid: str) -> str:
        return self.uids[uid]

    def original_study(self, pseudo_study_uid: str) -> Dataset:
        return self.studies[pseudo_study_uid]

    def __repr__(self) -> str:  # never print identifiers by accident
        return f"ReidentificationMap({len(self.uids)} UIDs, {len(self.studies)} studies)"


#: Patient and study module attributes the SR needs to be filed into the original study.
ORIGINAL_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


class _Instance:
    """Per-instance facts derived from the original on first use: the date shift and the identifying values."""

    def __init__(self, deidentifier: Deidentifier, original: Dataset) -> None:
        self._deidentifier = deidentifier
        self._original = original

    @cached_property
    def shift_days(self) -> int:
        """A per-patient whole-day shift into the past (1..MAX_SHIFT_DAYS): equal for all studies of a patient."""
        patient = f"{quiet_value(self._original, 'PatientID')}|{quiet_value(self._original, 'IssuerOfPatientID')}"
        if patient == "|":  # no patient identity: one shift per study
            patient = f"study|{quiet_value(self._original, 'StudyInstanceUID')}"
        return 1 + int(self._deidentifier.keyed_hex(f"date-shift|{patient}")[:12], 16) % MAX_SHIFT_DAYS

    @cached_property
    def identifying_pattern(self) -> re.Pattern[str] | None:
        """Every identifying value of the original (values of Table E.1-1 attributes that are not descriptors)."""
        values: set[str] = set()
        tags = self._deidentifier.profile.identifying_tags

        def collect(ds: Dataset) -> None:  # the original, read without changing it
            for tag in ds.keys():
                vr = vr_of(ds, tag)
                if vr == "SQ":
                    for item in element(ds, tag, store=False).value:
                        collect(item)
                elif tag in tags and vr in TEXT_VRS | {"DA", "DT"}:
                    elem = element(ds, tag, store=False)
                    for value in [] if elem.is_empty else elem.value if elem.VM > 1 else [elem.value]:
                        values.update(v for v in re.split(r"[\^=\s,]+", str(value)) if len(v) >= 2)

        collect(self._original)
        if not values:
            return None
        words = sorted(values, key=len, reverse=True)
        return re.compile(r"(?<![0-9A-Za-z])(?:" + "|".join(map(re.escape, words)) + r")(?![0-9A-Za-z])", re.IGNORECASE)


class Deidentifier:
    """Applies a ``DeidentificationProfile``; UIDs and dummy values derive from HMAC-SHA256 keyed by a
    deployment secret.

    A bare hash of a UID could be reversed by hashing candidate UIDs; a keyed hash cannot without the key.
    Without a configured secret a random one is drawn per process: UIDs stay consistent within the run,
    and nothing links runs.
    """

    def __init__(self, profile: DeidentificationProfile, secret: bytes | None = None) -> None:
        self.profile = profile
        # keyed once: each hash copies it (the key's two padded blocks are not hashed again for every value)
        self._keyed = hmac.new(secret or secrets.token_bytes(32), digestmod=hashlib.sha256)
        self.reidentification = ReidentificationMap()

    def keyed_hex(self, text: str) -> str:
        keyed = self._keyed.copy()
        keyed.update(text.encode("utf-8", "replace"))
        return keyed.hexdigest()

    def replace_uid(self, uid: str) -> str:
        """``2.25.<first 128 bits of HMAC-SHA256(secret, uid)>``: the same UID always maps to the same replacement."""
        pseudo = UID_ROOT + str(int(self.keyed_hex(f"uid|{uid}")[:32], 16))
        self.reidentification.uids[pseudo] = uid
        return pseudo

    def deidentify(self, original: Dataset) -> Dataset:
        """A de-identified deep copy of ``original`` (whose values are never modified).

        Original values, and values derived from them, are read and assigned with pydicom's validation off
        for their elements only (``operators.deid.unvalidated``): its warnings would quote them."""
        ds = copy_dataset(original)
        self._deidentify_dataset(ds, _Instance(self, original))
        record_method(ds, self.profile)
        self._replace_file_meta(ds)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if keyword in original:  # with Retain UIDs the "replacement" is the original itself
                self.reidentification.uids.setdefault(str(quiet_value(ds, keyword)), str(quiet_value(original, keyword)))
        study = str(quiet_value(ds, "StudyInstanceUID")) if "StudyInstanceUID" in ds else None
        if study is not None and study not in self.reidentification.studies:  # the first instance of each study
            self.reidentification.studies[study] = _study_attributes(original)
        return ds

    def deidentify_all(self, datasets: Iterable[Dataset]) -> list[Dataset]:
        return [self.deidentify(ds) for ds in datasets]

    # -- the table, applied recursively -------------------------------------------------------------

    def _deidentify_dataset(self, ds: Dataset, instance: _Instance) -> None:
        self._remove_private(ds)
        # pydicom's own tag -> element dict, read and changed directly: the Dataset methods convert and check
        # the tag on every call, which on a heavy header costs more than applying the table
        elements = ds._dict
        for tag in list(elements):
            if tag not in elements:  # removed with its overlay group
                continue
            group, element = tag >> 16, tag & 0xFFFF
            if element == 0 or 0x5000 <= group <= 0x50FF:  # group lengths (now wrong); curves (E.1-1: X)
                del elements[tag]
            elif 0x6000 <= group <= 0x60FF and element in (0x3000, 0x4000):
                self._remove_overlay(ds, group, element)
            else:
                self._apply(ds, tag, instance)

    def _apply(self, ds: Dataset, tag: BaseTag, instance: _Instance) -> None:
        current = ds._dict[tag]
        action = self.profile.actions.get(int(tag))  # an int key: a BaseTag compares in Python
        if action is Action.REMOVE:
            del ds._dict[tag]
            return
        raw = current if isinstance(current, RawDataElement) and current.value is not None else None  # None: converted or deferred
        vr = raw_vr(ds, raw) if raw is not None else vr_of(ds, tag)
        if action in (None, Action.KEEP) and kept_as_read(current, vr):
            return
        if action in (Action.ZERO, Action.DUMMY) and " or " not in vr:
            # a new value that owes nothing to the original (Z, fixed D), or a keyed pseudonym of the text as
            # pydicom reads it: written as bytes, the original element never converted
            if action is Action.ZERO or vr in DUMMY_FREE_VRS:
                ds._dict[tag] = raw_element(tag, vr, fixed_value(vr, fixed_dummy(vr)) if action is Action.DUMMY else b"")
                return
            if raw is not None and vr in TEXT_VRS:
                value = convert_raw_data_element(raw, encoding=ds.original_character_set or ds._character_set, ds=ds).value
                ds._dict[tag] = self.text_dummy(tag, vr, value)
                return
        if action is Action.UID and raw is not None and vr == "UI":
            replaced = self.raw_uid_replacement(raw)
            if replaced is not None:
                ds._dict[tag] = replaced
                return
        elem = element(ds, tag)
        if action is None:
            self._outside_table(elem, instance)
        elif action is Action.ZERO:
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif action is Action.DUMMY:
            self._dummy(elem)
        elif action is Action.UID:
            self._replace_uids(elem)
        elif action is Action.SHIFT:
            self._shift_dates(ds, elem, instance)
        elif action is Action.CLEAN:
            self._clean(ds, elem, instance)
        elif elem.VR == "SQ":  # K: kept, and cleaned inside (E.1-1 note on K for sequences)
            self._recurse(elem, instance)

    def _outside_table(self, elem: DataElement, instance: _Instance) -> None:
        """Attributes Table E.1-1 does not list are kept; their sequences are de-identified, their instance UIDs replaced."""
        if elem.VR == "SQ":
            self._recurse(elem, instance)
        elif elem.VR == "UI" and self.replaces_outside_table(elem.tag):
            self._replace_uids(elem)

    def replaces_outside_table(self, tag: int) -> bool:
        """Whether a UI attribute Table E.1-1 does not list has its values replaced: an instance UID, not a definition."""
        return not self.profile.options.retain_uids and not names_a_definition(tag)

    def _recurse(self, elem: DataElement, instance: _Instance) -> None:
        for item in elem.value:
            self._deidentify_dataset(item, instance)

    def _fallback(self, ds: Dataset, elem: DataElement) -> None:
        """Where an option's C cannot apply to a value (unparsable date, binary timestamp), the Basic Profile action."""
        action = self.profile.basic_actions[elem.tag]
        if action is Action.REMOVE:
            del ds[elem.tag]
        elif action is Action.DUMMY:
            self._dummy(elem)
        else:
            elem.value = Sequence() if elem.VR == "SQ" else None

    def _dummy(self, elem: DataElement) -> None:
        vr = elem.VR
        if vr == "UI":
            self._replace_uids(elem)
        elif vr in TEXT_VRS:
            elem.value = self._pseudonym(elem.tag, elem.value)
        else:
            elem.value = fixed_dummy(vr)

    def text_dummy(self, tag: BaseTag, vr: str, value: Any) -> RawDataElement:
        """D of a text element whose value pydicom reads as ``value``: its keyed pseudonym, as a raw element."""
        return raw_element(tag, vr, self._pseudonym(tag, value).encode(DEFAULT_ENCODING))

    def _pseudonym(self, tag: BaseTag, value: Any) -> str:
        """D of text: a keyed hash of the value pydicom reads (so equal originals stay equal), 16 characters,
        valid in every text VR (AE is the shortest: 16)."""
        return "ANON" + self.keyed_hex(f"dummy|{tag}|{value}")[:12].upper()

    def raw_uid_replacement(self, raw: RawDataElement) -> RawDataElement | None:
        """U on a raw UI element, from and to its bytes; None where a kept value (a standard UID) would not
        read back without a warning, which would quote it."""
        values = uid_strings(raw)
        if not all(valid_uid(v) for v in values if v.startswith(DICOM_UID_ROOT)):
            return None
        return raw_uids(raw.tag, [v if v.startswith(DICOM_UID_ROOT) else self.replace_uid(v) for v in values])

    def apply_element_wise(self, ds: Dataset, tag: BaseTag) -> None:
        """The profile's action on the element at ``tag`` of ``ds`` alone, for a profile whose actions need
        nothing else of the instance (``DeidentificationProfile.element_wise``): ``operators.deid.encoded``."""
        self._apply(ds, tag, _Instance(self, ds))

    def _replace_uids(self, elem: DataElement) -> None:
        if elem.is_empty:
            return
        values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])]
        replaced = [v if v.startswith(DICOM_UID_ROOT) else self.replace_uid(v) for v in values]
        elem.value = replaced if len(replaced) > 1 else replaced[0]

    def _shift_dates(self, ds: Dataset, elem: DataElement, instance: _Instance) -> None:
        """E.3.6 with modified dates: DA/DT moved by the patient's shift; times (and the UTC offset) kept."""
        if elem.VR not in ("DA", "DT"):
            if elem.VR not in ("TM", "SH"):
                self._fallback(ds, elem)
            return
        if elem.is_empty:
            return
        values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])]
        shifted = [_shift_date(v, instance.shift_days) for v in values]
        if any(s is None for s in shifted):
            self._fallback(ds, elem)
        else:
            elem.value = shifted if len(shifted) > 1 else shifted[0]

    def _clean(self, ds: Dataset, elem: DataElement, instance: _Instance) -> None:
        """C for descriptors, patient characteristics and AE titles: the text without any identifying value of
        the instance (names, IDs, dates… from Table E.1-1 attributes) and without digit runs; sequences are
        de-identified item by item. Other VRs fall back to the Basic Profile action."""
        if elem.VR == "SQ":
            self._recurse(elem, instance)
        elif elem.VR not in TEXT_VRS:
            self._fallback(ds, elem)
        elif not elem.is_empty:
            values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])]
            cleaned = [_clean_text(v, instance.identifying_pattern) for v in values]
            elem.value = cleaned if len(cleaned) > 1 else cleaned[0]

    # -- private attributes, overlays -----------------------------------------------------------------

    def _remove_private(self, ds: Dataset) -> None:
        """All private attributes go (E.1-1), except, with Retain Safe Private, Table E.3.10-1 entries and their creators."""
        private = [tag for tag in ds.keys() if tag.is_private]
        if not private:
            return
        keep: set[int] = set()
        if self.profile.options.retain_safe_private:
            for tag in private:
                group, element = tag.group, tag.element
                creator_tag = (group << 16) | (element >> 8)
                if element >= 0x1000 and creator_tag in ds:
                    creator = str(ds[creator_tag].value).strip()
                    if SafePrivateAttribute(group, creator, element & 0xFF) in self.profile.safe_private:
                        keep.update((tag, creator_tag))
        for tag in private:
            if tag not in keep:
                del ds[tag]

    @staticmethod
    def _remove_overlay(ds: Dataset, group: int, element: int) -> None:
        """Overlay Data (60xx,3000) is X: the whole overlay goes, so no incomplete Overlay Plane module is left.
        Overlay Comments (60xx,4000) alone are X."""
        if element == 0x3000:
            for tag in [t for t in ds.keys() if t.group == group]:
                del ds[tag]
        else:
            del ds[(group << 16) | element]

    # -- what was done --------------------------------------------------------------------------------

    @staticmethod
    def _replace_file_meta(ds: Dataset) -> None:
        """File Meta Information and preamble describe this de-identifier only (E.1.1 item 7)."""
        old = getattr(ds, "file_meta", None)
        if old is not None:
            ds.file_meta = deidentified_file_meta(ds, old)
            ds.preamble = b"\x00" * 128


def record_method(ds: Dataset, profile: DeidentificationProfile) -> None:
    """Patient Identity Removed, De-identification Method (+ CID 7050 codes), Longitudinal Temporal
    Information Modified (PS3.15 E.1.1 item 6, E.2, E.3.6), set in ``ds`` as ``profile`` de-identified it."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = profile.method_description
    items = []
    for code in profile.method_codes:
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if profile.options.retain_longitudinal_modified_dates else "REMOVED"


def deidentified_file_meta(ds: Dataset, old: Dataset) -> FileMetaDataset:
    """File Meta Information describing this de-identifier only (E.1.1 item 7), for the de-identified ``ds``
    whose original had the File Meta Information ``old``."""
    meta = FileMetaDataset()
    # values of the original (the SOP Instance UID too, with Retain UIDs)
    sop_class = quiet_value(ds, "SOPClassUID") if "SOPClassUID" in ds else quiet_value(old, "MediaStorageSOPClassUID")
    meta.add(unvalidated_element("MediaStorageSOPClassUID", "UI", sop_class))
    meta.add(unvalidated_element("MediaStorageSOPInstanceUID", "UI", quiet_value(ds, "SOPInstanceUID")))
    if "TransferSyntaxUID" in old:
        meta.add(unvalidated_element("TransferSyntaxUID", "UI", quiet_value(old, "TransferSyntaxUID")))
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


#: Kept attributes converted all the same (with validation off): their values, read later by pydicom, would be
#: validated and quoted (DS, IS, UI; ``operators.deid.unvalidated``); sequences are de-identified inside;
#: instance UIDs outside the table are replaced.
CONVERTED_WHEN_KEPT = QUOTED_WHEN_READ | {"SQ"}


#: VRs whose D value does not depend on the original (D of text is a keyed pseudonym of it, of UI its
#: replacement UID). Z never does. An ambiguous VR ("US or SS") is left to the converted element, which resolves it.
DUMMY_FREE_VRS = frozenset({"DA", "DT", "TM", "AS", "OB", "OW", "OF", "OD", "OL", "OV", "UN"}) | NUMBER_STRING_VRS | BINARY_NUMBER_VRS


@cache
def names_a_definition(tag: int) -> bool:
    """Whether the UI attribute ``tag`` names a definition (``DEFINITION_UID_SUFFIXES``) rather than an instance."""
    return keyword_for_tag(tag).endswith(DEFINITION_UID_SUFFIXES)


def fixed_dummy(vr: str) -> Any:
    """Action D's value for a VR other than text and UI: valid for the VR, the same whatever the original."""
    if vr in DUMMY_DATE_TIME:
        return DUMMY_DATE_TIME[vr]
    if vr in NUMBER_STRING_VRS:
        return "0"
    return 0 if vr in BINARY_NUMBER_VRS else b"\x00\x00"  # OB, OW, UN…


def kept_as_read(elem: DataElement | RawDataElement, vr: str) -> bool:
    """Whether a kept attribute of VR ``vr`` (as pydicom gives it) can be written back byte for byte, its value
    never converted (the bulk of a header, and most of the time saved): not where pydicom would fix its VR
    on conversion (UN, or a VR-less implicit element, read as the data dictionary's VR: PS3.5 6.2.2), nor
    a kept attribute that ``CONVERTED_WHEN_KEPT`` names."""
    return vr not in CONVERTED_WHEN_KEPT and (not isinstance(elem, RawDataElement) or vr == elem.VR)


def quiet_value(ds: Dataset, keyword: str) -> Any:
    """The value of ``keyword`` in ``ds`` ("" if absent), read without validation and without changing ``ds``."""
    tag = tag_for_keyword(keyword)
    return element(ds, tag, store=False).value if tag is not None and tag in ds else ""


def _shift_date(value: str, days: int) -> str | None:
    """A DA value, or a DT value's date part, moved ``days`` into the past; None if it is not a full date."""
    try:
        date = datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None
    return (date - datetime.timedelta(days=days)).strftime("%Y%m%d") + value[8:]


def _clean_text(value: str, identifying: re.Pattern[str] | None) -> str:
    if identifying is not None:
        value = identifying.sub("", value)
    return " ".join(DATE_OR_NUMBER.sub("", value).split())


#: Patient's Sex (0010,0040) enumerated values (PS3.3 C.7.1.1): any other original value is not carried into
#: the SR, where it would make the writer fail with the value in its error message.
PATIENT_SEX_VALUES = frozenset({"M", "F", "O"})


def _study_attributes(ds: Dataset) -> Dataset:
    study = Dataset()
    for keyword in ORIGINAL_STUDY_KEYWORDS:
        tag = tag_for_keyword(keyword)
        if tag is not None and tag in ds:
            elem = element(ds, tag, store=False)  # a new element: copying a UID validates it again
            study.add(unvalidated_element(elem.tag, elem.VR, elem.value))
    if "PatientSex" in study and study.PatientSex not in PATIENT_SEX_VALUES:
        study.PatientSex = ""
    return study


@dataclass(frozen=True)
class DeidentifiedSeries:
    """The de-identified copies of the instances of one selected series that its sampling plan picks
    (``plan.pick`` order), under pseudonymous study/series UIDs, with the plan (positions only)."""

    study_instance_uid: str
    series_instance_uid: str
    datasets: list[Dataset]
    plan: SamplingPlan


def deidentify_series(deidentifier: Deidentifier, series: list[Dataset], plan: SamplingPlan) -> DeidentifiedSeries:
    """De-identify the instances of ``series`` (the list ``plan`` was made from) that ``plan`` picks, and only those."""
    datasets = deidentifier.deidentify_all(plan.pick(series))
    return DeidentifiedSeries(str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), datasets, plan)
