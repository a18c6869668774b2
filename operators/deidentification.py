"""De-identification of DICOM instances (DICOM PS3.15 Annex E, Basic Application Level Confidentiality
Profile) with UIDs replaced consistently by a keyed hash, and an in-memory re-identification map.

This is the seam for the full profile: ``DeidentificationProfile`` holds the attribute actions as
data (tag -> action code of PS3.15 Table E.1-1); ``Deidentifier`` applies them recursively inside
sequences. The current table covers the patient, study, visit, personnel and institution attributes
of Table E.1-1 that reach this app; attributes not listed are kept, except private ones, which are
removed.

Everything downstream of the de-identification operator sees only de-identified data. The map
back to the original identifiers stays in memory and is used only by the SR writer, so that the SR
is filed into the original study; it is never logged or written.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Mapping

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

#: Root of the UIDs this app generates: "2.25." + a 128-bit integer (PS3.5 Annex B.2).
UID_ROOT = "2.25."
#: Standard UIDs (SOP classes, transfer syntaxes, coding schemes…) are not instance identifiers.
DICOM_UID_ROOT = "1.2.840.10008."


class Action(str, Enum):
    """Action codes of PS3.15 Table E.1-1."""

    REMOVE = "X"
    ZERO = "Z"  # replace with a zero-length value
    KEEP = "K"
    UID = "U"  # replace with a non-zero-length UID, consistent within the set of instances


# PS3.15 Table E.1-1 (2025b) actions for the attributes handled by this first version. Where the
# standard allows a choice (e.g. Z/D) the zero-length choice is taken for type 2 attributes.
_BASIC_PROFILE: dict[str, Action] = {
    "PatientName": Action.ZERO,
    "PatientID": Action.ZERO,
    "PatientBirthDate": Action.ZERO,
    "PatientBirthTime": Action.REMOVE,
    "PatientSex": Action.ZERO,
    "PatientAge": Action.REMOVE,
    "PatientSize": Action.REMOVE,
    "PatientWeight": Action.REMOVE,
    "PatientAddress": Action.REMOVE,
    "PatientTelephoneNumbers": Action.REMOVE,
    "PatientMotherBirthName": Action.REMOVE,
    "OtherPatientIDs": Action.REMOVE,
    "OtherPatientIDsSequence": Action.REMOVE,
    "OtherPatientNames": Action.REMOVE,
    "PatientBirthName": Action.REMOVE,
    "IssuerOfPatientID": Action.REMOVE,
    "MedicalRecordLocator": Action.REMOVE,
    "EthnicGroup": Action.REMOVE,
    "Occupation": Action.REMOVE,
    "AdditionalPatientHistory": Action.REMOVE,
    "PatientComments": Action.REMOVE,
    "MilitaryRank": Action.REMOVE,
    "BranchOfService": Action.REMOVE,
    "CountryOfResidence": Action.REMOVE,
    "RegionOfResidence": Action.REMOVE,
    "AccessionNumber": Action.ZERO,
    "StudyID": Action.ZERO,
    "StudyDate": Action.ZERO,
    "StudyTime": Action.ZERO,
    "SeriesDate": Action.REMOVE,
    "SeriesTime": Action.REMOVE,
    "AcquisitionDate": Action.REMOVE,
    "AcquisitionTime": Action.REMOVE,
    "AcquisitionDateTime": Action.REMOVE,
    "ContentDate": Action.ZERO,
    "ContentTime": Action.ZERO,
    "InstanceCreationDate": Action.REMOVE,
    "InstanceCreationTime": Action.REMOVE,
    "StudyDescription": Action.REMOVE,
    "SeriesDescription": Action.REMOVE,
    "RequestAttributesSequence": Action.REMOVE,
    "ReferencedPatientSequence": Action.REMOVE,
    "ReferencedStudySequence": Action.REMOVE,
    "ReferringPhysicianName": Action.ZERO,
    "ReferringPhysicianAddress": Action.REMOVE,
    "ReferringPhysicianTelephoneNumbers": Action.REMOVE,
    "PerformingPhysicianName": Action.REMOVE,
    "NameOfPhysiciansReadingStudy": Action.REMOVE,
    "PhysiciansOfRecord": Action.REMOVE,
    "OperatorsName": Action.REMOVE,
    "RequestingPhysician": Action.REMOVE,
    "InstitutionName": Action.REMOVE,
    "InstitutionAddress": Action.REMOVE,
    "InstitutionalDepartmentName": Action.REMOVE,
    "StationName": Action.REMOVE,
    "DeviceSerialNumber": Action.REMOVE,
    "AdmissionID": Action.REMOVE,
    "AdmittingDiagnosesDescription": Action.REMOVE,
    "PerformedProcedureStepID": Action.REMOVE,
    "PerformedProcedureStepDescription": Action.REMOVE,
    "PerformedProcedureStepStartDate": Action.REMOVE,
    "PerformedProcedureStepStartTime": Action.REMOVE,
    "RequestedProcedureID": Action.REMOVE,
    "ScheduledProcedureStepID": Action.REMOVE,
    "ImageComments": Action.REMOVE,
    "FrameComments": Action.REMOVE,
    "DerivationDescription": Action.REMOVE,
    "ProtocolName": Action.REMOVE,
    "PatientIdentityRemoved": Action.REMOVE,  # re-written below
    "DeidentificationMethod": Action.REMOVE,  # re-written below
}

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


@dataclass(frozen=True)
class DeidentificationProfile:
    """Attribute actions (tag -> PS3.15 action) and profile options."""

    actions: Mapping[BaseTag, Action]
    remove_private: bool = True
    method_description: str = "PS3.15 E.1-1 Basic Profile (BiomedCLIP MAP v1 table)"

    @classmethod
    def basic(cls) -> "DeidentificationProfile":
        return cls({Tag(tag_for_keyword(k)): a for k, a in _BASIC_PROFILE.items()})


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


class Deidentifier:
    """Applies a ``DeidentificationProfile``; UIDs map through HMAC-SHA256 keyed by a deployment secret.

    A bare hash of a UID could be reversed by hashing candidate UIDs; a keyed hash cannot without the
    key. Without a configured secret a random one is drawn per process: UIDs stay consistent within
    the run, and nothing links runs.
    """

    def __init__(self, profile: DeidentificationProfile, secret: bytes | None = None) -> None:
        self.profile = profile
        self._key = secret or secrets.token_bytes(32)
        self.reidentification = ReidentificationMap()

    def replace_uid(self, uid: str) -> str:
        digest = hmac.new(self._key, uid.encode("ascii", "replace"), hashlib.sha256).digest()
        pseudo = UID_ROOT + str(int.from_bytes(digest[:16], "big"))
        self.reidentification.uids[pseudo] = uid
        return pseudo

    def deidentify(self, original: Dataset) -> Dataset:
        """A de-identified deep copy of ``original`` (which is never modified)."""
        ds = copy.deepcopy(original)
        study_uid = str(original.get("StudyInstanceUID", ""))
        ds.walk(self._apply)
        if self.profile.remove_private:
            ds.remove_private_tags()
        if hasattr(ds, "file_meta") and "MediaStorageSOPInstanceUID" in ds.file_meta:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.profile.method_description
        if study_uid:
            pseudo_study = self.replace_uid(study_uid)
            if pseudo_study not in self.reidentification.studies:
                self.reidentification.studies[pseudo_study] = _study_attributes(original)
        return ds

    def deidentify_all(self, datasets: Iterable[Dataset]) -> list[Dataset]:
        return [self.deidentify(ds) for ds in datasets]

    def _apply(self, ds: Dataset, elem: DataElement) -> None:
        action = self.profile.actions.get(elem.tag)
        if action is Action.REMOVE:
            del ds[elem.tag]
        elif action is Action.ZERO:
            elem.value = None if elem.VR != "SQ" else []
        elif elem.VR == "UI" and elem.value and action is not Action.KEEP:
            elem.value = self._replace_uid_value(elem.value)

    def _replace_uid_value(self, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            return value if value.startswith(DICOM_UID_ROOT) else self.replace_uid(value)
        return [self._replace_uid_value(v) for v in value]


def _study_attributes(ds: Dataset) -> Dataset:
    study = Dataset()
    for keyword in ORIGINAL_STUDY_KEYWORDS:
        if keyword in ds:
            setattr(study, keyword, copy.deepcopy(ds[keyword].value))
    return study


@dataclass(frozen=True)
class DeidentifiedSeries:
    """The de-identified instances of one selected series, under pseudonymous study/series UIDs."""

    study_instance_uid: str
    series_instance_uid: str
    datasets: list[Dataset]


def deidentify_series(deidentifier: Deidentifier, originals: list[Dataset]) -> DeidentifiedSeries:
    datasets = deidentifier.deidentify_all(originals)
    return DeidentifiedSeries(str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), datasets)
