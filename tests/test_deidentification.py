"""First-version de-identification: identifiers gone, UIDs remapped by a keyed hash, originals untouched."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pydicom
import pytest

from operators.deidentification import Deidentifier, DeidentificationProfile, deidentify_series

SAMPLE = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001"


@pytest.fixture()
def series() -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted((SAMPLE / "CT5N").iterdir())]
    datasets[0].add_new(0x00091001, "LO", "private identifying note")
    datasets[0].ReferencedImageSequence = [pydicom.Dataset()]
    datasets[0].ReferencedImageSequence[0].ReferencedSOPClassUID = datasets[1].SOPClassUID
    datasets[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID = datasets[1].SOPInstanceUID
    return datasets


def _all_values(ds: pydicom.Dataset) -> set[str]:
    values: set[str] = set()
    ds.walk(lambda _, elem: values.add(str(elem.value)) if elem.VR != "SQ" else None)
    return values


def test_identifiers_removed_uids_replaced_and_originals_untouched(series: list[pydicom.Dataset]) -> None:
    before = [copy.deepcopy(ds) for ds in series]
    deidentifier = Deidentifier(DeidentificationProfile.basic(), b"site secret")
    result = deidentify_series(deidentifier, series)

    assert series == before, "originals must not be modified"
    for original, ds in zip(series, result.datasets):
        values = _all_values(ds)
        for identifier in (str(original.PatientName), original.PatientID, original.StudyInstanceUID,
                           original.SeriesInstanceUID, original.SOPInstanceUID, original.StudyDate):
            assert identifier not in values
        assert all(ds[k].is_empty for k in ("PatientName", "PatientID", "AccessionNumber", "StudyDate"))  # type 2: zero length
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SOPClassUID == original.SOPClassUID  # standard UIDs are not identifiers
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert not any(elem.tag.is_private for elem in ds)
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert len(uid) <= 64 and re.fullmatch(r"2\.25\.[1-9][0-9]*", uid)
    assert len({ds.StudyInstanceUID for ds in result.datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in result.datasets}) == len(series)
    # a reference follows its target
    reference = result.datasets[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert reference == result.datasets[1].SOPInstanceUID


def test_reidentification_map_returns_the_originals(series: list[pydicom.Dataset]) -> None:
    deidentifier = Deidentifier(DeidentificationProfile.basic(), b"k")
    result = deidentify_series(deidentifier, series)
    reid = deidentifier.reidentification
    assert reid.original_uid(result.study_instance_uid) == series[0].StudyInstanceUID
    assert reid.original_uid(result.datasets[2].SOPInstanceUID) == series[2].SOPInstanceUID
    study = reid.original_study(result.study_instance_uid)
    assert study.PatientID == series[0].PatientID and study.AccessionNumber == series[0].AccessionNumber
    assert series[0].PatientID not in repr(reid)


def test_determinism_same_secret_same_uids_other_secret_other_uids(series: list[pydicom.Dataset]) -> None:
    def uids(secret: bytes) -> list[str]:
        return [ds.SOPInstanceUID for ds in deidentify_series(Deidentifier(DeidentificationProfile.basic(), secret), series).datasets]

    assert uids(b"one") == uids(b"one")
    assert set(uids(b"one")).isdisjoint(uids(b"two"))
