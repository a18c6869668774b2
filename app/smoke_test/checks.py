"""What the smoke test checks on the SR a deployment returned for the embedded sample study.

Each check is one line of the verdict: the SR is a Comprehensive 3D SR (PS3.4 B.5) with the TID 1500
Measurement Report template (PS3.16), filed into the sample's study (PS3.3 C.7.2.1); every TID 1501
measurement group names the algorithm and its version (TID 4019); there is one group, holding one
qualitative evaluation, per series of the sample; and dciodvfy (dicom3tools), where installed, finds
no error. Details never show an identifier of the study: they are not needed to act on a failure.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import highdicom as hd
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import Comprehensive3DSRStorage

from operators.sr.structured_report import ALGORITHM_NAME

MEASUREMENT_REPORT_TEMPLATE = "1500"
#: TID 4019 Algorithm Identification: (111001, DCM) Algorithm Name, (111003, DCM) Algorithm Version.
ALGORITHM_NAME_CODE, ALGORITHM_VERSION_CODE = "111001", "111003"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: not run here (a tool is missing); not a failure
    detail: str

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"{verdict}  {self.name}: {self.detail}"


@dataclass(frozen=True)
class SampleStudy:
    """What the SR must refer to: the sample's study, patient and series."""

    study_instance_uid: str
    patient_id: str
    #: SOP Instance UID -> Series Instance UID, of every image of the sample
    series_of_instance: dict[str, str]

    @classmethod
    def read(cls, files: Iterable[Path]) -> SampleStudy:
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
        return cls(
            str(headers[0].StudyInstanceUID), str(headers[0].PatientID),
            {str(ds.SOPInstanceUID): str(ds.SeriesInstanceUID) for ds in headers},
        )

    @property
    def series(self) -> set[str]:
        return set(self.series_of_instance.values())


def check_sr(path: Path, sample: SampleStudy, expected_version: str | None) -> list[Check]:
    """The checks of one SR file; ``expected_version``: the model package's identity, where known."""
    try:
        sr = pydicom.dcmread(path)
    except (InvalidDicomError, OSError) as exc:
        return [Check("DICOM SR", False, f"{path.name}: not a readable DICOM file ({type(exc).__name__})")]
    templates = [item.get("TemplateIdentifier") for item in sr.get("ContentTemplateSequence", [])]
    if sr.get("SOPClassUID") != Comprehensive3DSRStorage or templates != [MEASUREMENT_REPORT_TEMPLATE]:
        return [Check("DICOM SR", False, f"SOP class {sr.get('SOPClassUID')!s} and template {templates}, "
                                         f"not Comprehensive 3D SR Storage with TID {MEASUREMENT_REPORT_TEMPLATE}")]
    report = cast(hd.sr.MeasurementReport, hd.sr.Comprehensive3DSR.from_dataset(sr).content)
    groups = report.get_image_measurement_groups()
    return [
        Check("DICOM SR", True, f"Comprehensive 3D SR Storage, TID {MEASUREMENT_REPORT_TEMPLATE} Measurement Report"),
        _study(sr, sample),
        _algorithm(groups, expected_version),
        _findings(groups, sample),
        _dciodvfy(path),
    ]


def _study(sr: pydicom.Dataset, sample: SampleStudy) -> Check:
    same = sr.get("StudyInstanceUID") == sample.study_instance_uid and sr.get("PatientID") == sample.patient_id
    if same:
        return Check("study", True, "filed into the sample's study (Study Instance UID and Patient ID match)")
    return Check("study", False, "not filed into the sample's study: its Study Instance UID or Patient ID differs")


def _text_values(group: hd.sr.MeasurementsAndQualitativeEvaluations, concept: str) -> list[str]:
    """The TEXT values of the group's direct children named ``concept`` (DCM)."""
    return [str(item.TextValue) for item in group[0].ContentSequence
            if item.ConceptNameCodeSequence[0].CodeValue == concept and "TextValue" in item]


def _algorithm(groups: list[hd.sr.MeasurementsAndQualitativeEvaluations], expected_version: str | None) -> Check:
    names = {name for group in groups for name in _text_values(group, ALGORITHM_NAME_CODE)}
    versions = {version for group in groups for version in _text_values(group, ALGORITHM_VERSION_CODE)}
    counts = [(len(_text_values(group, ALGORITHM_NAME_CODE)), len(_text_values(group, ALGORITHM_VERSION_CODE))) for group in groups]
    if not groups or any(count != (1, 1) for count in counts) or names != {ALGORITHM_NAME}:
        return Check("model", False, f"TID 4019 algorithm name {sorted(names)} (want {ALGORITHM_NAME!r} once per measurement group)")
    (version,) = versions if len(versions) == 1 else ("",)
    if not version or (expected_version is not None and version != expected_version):
        want = f"the package's {expected_version!r}" if expected_version else "one version"
        return Check("model", False, f"TID 4019 algorithm version {sorted(versions)} (want {want})")
    return Check("model", True, f"{ALGORITHM_NAME}, version {version}")


def _findings(groups: list[hd.sr.MeasurementsAndQualitativeEvaluations], sample: SampleStudy) -> Check:
    covered: list[str] = []
    findings: list[str] = []
    for number, group in enumerate(groups, 1):
        series = {sample.series_of_instance.get(image.referenced_sop_instance_uid) for image in group.source_images}
        evaluations = group.get_qualitative_evaluations()
        if len(series) != 1 or None in series or len(evaluations) != 1:
            return Check("findings", False, f"measurement group {number}: images of {len(series)} series "
                                            f"(or not of the sample) and {len(evaluations)} finding(s); want one series, one finding")
        covered += [uid for uid in series if uid is not None]
        findings.append(str(cast(hd.sr.CodedConcept, evaluations[0].value).meaning))
    if sorted(covered) != sorted(sample.series):
        return Check("findings", False, f"{len(groups)} measurement group(s) for the sample's {len(sample.series)} series; "
                                        "want exactly one per series")
    return Check("findings", True, f"one finding per series for all {len(sample.series)} series ({'; '.join(findings)})")


def _dciodvfy(path: Path) -> Check:
    """dicom3tools' IOD checker, where installed: its "Error" lines, not its warnings, fail the check."""
    if shutil.which("dciodvfy") is None:
        return Check("dciodvfy", None, "not installed here (dicom3tools); the IOD was not checked")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    if errors:
        return Check("dciodvfy", False, f"{len(errors)} error(s), first: {errors[0][:200]}")
    return Check("dciodvfy", True, "no errors")
