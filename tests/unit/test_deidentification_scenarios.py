"""Scenarios a site meets: one patient with two studies, two patients, repeat runs, another site's secret,
and validity of the de-identified files (dciodvfy)."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from operators.deid.deidentifier import DeidentificationProfile, Deidentifier
from operators.deid.profile import ProfileOptions
from tests.support.phi_corpus import SOURCES, dciodvfy_errors
from tests.unit.test_deidentification import SAMPLE

MODIFIED_DATES = DeidentificationProfile.basic(ProfileOptions(retain_longitudinal_modified_dates=True))
ALL_OPTIONS = DeidentificationProfile.basic(ProfileOptions(True, True, True, True, True, True))


def _study(patient_id: str, study_uid: str, study_date: str, name: str = "DOE^JANE") -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID, ds.PatientName, ds.StudyInstanceUID, ds.StudyDate = patient_id, name, study_uid, study_date
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.SOPInstanceUID = study_uid + ".1.1"
    return ds


def _days(a: str, b: str) -> int:
    return (datetime.datetime.strptime(a, "%Y%m%d") - datetime.datetime.strptime(b, "%Y%m%d")).days


def _shift(original: pydicom.Dataset, deidentified: pydicom.Dataset) -> int:
    return _days(original.StudyDate, deidentified.StudyDate)


def test_one_patient_two_studies_same_pseudonym_same_shift_distinct_studies() -> None:
    first, second = _study("MRN-1", "1.2.3.100", "20240105"), _study("MRN-1", "1.2.3.200", "20240612")
    deidentifier = Deidentifier(MODIFIED_DATES, b"site")
    a, b = deidentifier.deidentify(first), deidentifier.deidentify(second)
    assert a.PatientID == b.PatientID != "MRN-1"
    assert _shift(first, a) == _shift(second, b) > 0
    assert _days(b.StudyDate, a.StudyDate) == _days(second.StudyDate, first.StudyDate), "the interval between studies is kept"
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"


def test_two_patients_get_different_pseudonyms_and_shifts() -> None:
    deidentifier = Deidentifier(MODIFIED_DATES, b"site")
    one, two = _study("MRN-1", "1.2.3.100", "20240105"), _study("MRN-2", "1.2.3.300", "20240105", "ROE^RICHARD")
    a, b = deidentifier.deidentify(one), deidentifier.deidentify(two)
    assert a.PatientID != b.PatientID
    assert _shift(one, a) != _shift(two, b)


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("profile", [DeidentificationProfile.basic(), ALL_OPTIONS], ids=["basic", "all-options"])
def test_same_secret_gives_byte_identical_files(profile: DeidentificationProfile) -> None:
    originals = [pydicom.dcmread(source) for source in SOURCES[:3]]
    runs = [[_bytes(Deidentifier(profile, b"site").deidentify(ds)) for ds in originals] for _ in range(2)]
    assert runs[0] == runs[1]


def test_another_secret_gives_other_uids_and_pseudonyms() -> None:
    original = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    a, b = (Deidentifier(MODIFIED_DATES, secret).deidentify(original) for secret in (b"site A", b"site B"))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "PatientID", "InstitutionName"):
        assert a[keyword].value != b[keyword].value, keyword
    assert a.StudyDate != b.StudyDate or _shift(original, a) != _shift(original, b)


VALIDATED = [*SOURCES, *(str(p) for p in sorted(SAMPLE.rglob("*")) if p.is_file())]


@pytest.mark.parametrize("profile", [DeidentificationProfile.basic(), ALL_OPTIONS], ids=["basic", "all-options"])
@pytest.mark.parametrize("source", VALIDATED, ids=[Path(s).parent.name + "/" + Path(s).name for s in VALIDATED])
def test_deidentification_adds_no_dciodvfy_error(source: str, profile: DeidentificationProfile, tmp_path: Path) -> None:
    """A file dciodvfy passes stays clean; a file with errors gets no new one (the table's choices keep IODs valid)."""
    out = tmp_path / "deid.dcm"
    Deidentifier(profile, b"site").deidentify(pydicom.dcmread(source)).save_as(out, enforce_file_format=True)
    before, after = dciodvfy_errors(Path(source)), dciodvfy_errors(out)
    assert [e for e in after if e not in before] == []
    if not before:
        assert after == []
