"""Each PS3.15 Annex E.3 option changes exactly what its column of Table E.1-1 says, and is recorded (CID 7050)."""

from __future__ import annotations

import datetime
import json
from dataclasses import fields
from pathlib import Path

import pydicom
import pytest

from operators.deid.deidentifier import DeidentificationProfile, Deidentifier
from operators.deid.profile import METHOD_CODES, TABLE_PATH, ProfileOptions, parse_tag
from tests.support.phi_corpus import (
    SAFE_PRIVATE_CREATOR,
    SAFE_PRIVATE_ELEMENT,
    SAFE_PRIVATE_GROUP,
    SAFE_PRIVATE_VALUE,
    PhiCorpus,
    make_phi_corpus,
)

OPTIONS = [f.name for f in fields(ProfileOptions)]
#: what every run writes about itself; compared separately
RECORD_KEYWORDS = {"DeidentificationMethod", "DeidentificationMethodCodeSequence", "LongitudinalTemporalInformationModified"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> PhiCorpus:
    return make_phi_corpus(tmp_path_factory.mktemp("phi"))


@pytest.fixture(scope="module")
def injected(corpus: PhiCorpus) -> pydicom.Dataset:
    return pydicom.dcmread(corpus.files[0])  # CT_small with every Table E.1-1 attribute


def _run(ds: pydicom.Dataset, **options: bool) -> pydicom.Dataset:
    return Deidentifier(DeidentificationProfile.basic(ProfileOptions(**options)), b"site").deidentify(ds)


def _column(option: str) -> set[int]:
    """Tags whose row has an action in the option's column of Table E.1-1."""
    table = json.loads(TABLE_PATH.read_text())
    return {parse_tag(r["tag"]) for r in table["attributes"] if option in r.get("options", {}) and parse_tag(r["tag"]) is not None}


def _changed(basic: pydicom.Dataset, optioned: pydicom.Dataset) -> set[int]:
    """Public tags, at any depth, whose presence or value differs (sequences compared item by item)."""
    changed = set()
    for tag in set(basic.keys()) | set(optioned.keys()):
        a, b = basic.get(tag), optioned.get(tag)
        if tag.is_private or pydicom.datadict.keyword_for_tag(tag) in RECORD_KEYWORDS:
            continue
        if a is None or b is None:
            changed.add(int(tag))
        elif a.VR == "SQ" and len(a.value) == len(b.value):
            for item_a, item_b in zip(a.value, b.value):
                changed |= _changed(item_a, item_b)
        elif a.value != b.value:
            changed.add(int(tag))
    return changed


@pytest.mark.parametrize("option", [o for o in OPTIONS if o != "retain_safe_private"])
def test_an_option_changes_only_attributes_of_its_column(option: str, injected: pydicom.Dataset) -> None:
    basic, optioned = _run(injected), _run(injected, **{option: True})
    changed = _changed(basic, optioned)
    column = _column(option)
    assert changed, f"{option} changed nothing"
    assert changed <= column, f"{option} changed attributes outside its column: {sorted(map(hex, changed - column))}"
    present = {t for t in column if t in injected}
    assert len(changed) >= 0.8 * len(present), "most of the column's attributes present in the input change"


@pytest.mark.parametrize("option", OPTIONS)
def test_the_method_codes_name_the_options_used(option: str, injected: pydicom.Dataset) -> None:
    ds = _run(injected, **{option: True})
    codes = [(item.CodeValue, item.CodingSchemeDesignator) for item in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), (METHOD_CODES[option].value, "DCM")]
    assert option in ds.DeidentificationMethod


def test_modified_dates_shift_every_date_by_one_per_patient_offset(corpus: PhiCorpus, injected: pydicom.Dataset) -> None:
    ds = _run(injected, retain_longitudinal_modified_dates=True)
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    shifts = set()
    column = _column("retain_longitudinal_modified_dates")
    for elem in injected:
        if elem.tag in column and elem.VR in ("DA", "DT") and str(elem.value)[:8] in corpus.date_markers:
            before = datetime.datetime.strptime(str(elem.value)[:8], "%Y%m%d")
            after = datetime.datetime.strptime(str(ds[elem.tag].value)[:8], "%Y%m%d")
            shifts.add((before - after).days)
            assert str(ds[elem.tag].value)[8:] == str(elem.value)[8:], "times within a date-time are kept"
    assert len(shifts) == 1 and 0 < shifts.pop() <= 3650
    assert ds.StudyTime == injected.StudyTime and ds.AcquisitionTime == injected.AcquisitionTime
    assert ds["PatientBirthDate"].is_empty, "Patient's Birth Date is not in the option's column: still Z"


def test_patient_characteristics_are_kept(injected: pydicom.Dataset) -> None:
    ds = _run(injected, retain_patient_characteristics=True)
    for keyword in ("PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup", "SmokingStatus"):
        assert ds[keyword].value == injected[keyword].value, keyword
    assert ds["PatientName"].is_empty
    assert _run(injected)["PatientSex"].is_empty


def test_device_identity_is_kept(injected: pydicom.Dataset) -> None:
    ds = _run(injected, retain_device_identity=True)
    for keyword in ("DeviceSerialNumber", "StationName", "DetectorID", "DeviceUID"):
        assert ds[keyword].value == injected[keyword].value, keyword
    assert ds.InstitutionName != injected.InstitutionName, "institution identity is another option"


def test_retain_uids_keeps_every_uid_and_the_map_still_resolves(injected: pydicom.Dataset) -> None:
    deidentifier = Deidentifier(DeidentificationProfile.basic(ProfileOptions(retain_uids=True)), b"site")
    ds = deidentifier.deidentify(injected)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert ds[keyword].value == injected[keyword].value
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == injected.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert deidentifier.reidentification.original_uid(ds.SOPInstanceUID) == injected.SOPInstanceUID
    assert deidentifier.reidentification.original_study(ds.StudyInstanceUID).PatientID == injected.PatientID


def test_safe_private_keeps_only_table_e_3_10_1_attributes(injected: pydicom.Dataset) -> None:
    """CT_small is a GE file: its GEMS_* technique attributes listed in Table E.3.10-1 stay, with the injected one."""
    ds = _run(injected, retain_safe_private=True)
    assert ds.private_block(SAFE_PRIVATE_GROUP, SAFE_PRIVATE_CREATOR)[SAFE_PRIVATE_ELEMENT].value == int(SAFE_PRIVATE_VALUE)
    safe = {(s.group, s.creator, s.element) for s in DeidentificationProfile.basic().safe_private}
    private: list[pydicom.DataElement] = []
    ds.walk(lambda _, elem: private.append(elem) if elem.tag.is_private else None)
    data = [elem for elem in private if elem.tag.element >= 0x1000]
    creators = {elem.tag: str(elem.value) for elem in private if elem.tag.element < 0x1000}
    assert len(data) >= 5
    for elem in data:
        creator = creators[(elem.tag.group << 16) | (elem.tag.element >> 8)]
        assert (elem.tag.group, creator, elem.tag.element & 0xFF) in safe
    assert set(creators.values()) <= {safe_creator for _, safe_creator, _ in safe}, "no creator without a safe attribute"
    assert not any(elem.tag.is_private for elem in _run(injected))


def test_clean_descriptors_removes_identifying_values_and_keeps_the_description() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.PatientName, ds.PatientID, ds.StudyDate = "SMITH^JOHN", "MRN0042", "20240304"
    ds.StudyDescription = "CT chest with contrast"
    ds.SeriesDescription = "Axial 5mm for Smith John MRN0042 on 2024-03-04"
    ds.ImageComments = "called 555 123 4567 re: patient 0042771"
    cleaned = _run(ds, clean_descriptors=True)
    assert cleaned.StudyDescription == "CT chest with contrast"
    assert cleaned.SeriesDescription == "Axial 5mm for on"
    assert cleaned.ImageComments == "called 555 123 re: patient"
    basic = _run(ds)
    assert "StudyDescription" not in basic and "SeriesDescription" not in basic and "ImageComments" not in basic


def test_options_come_from_the_app_config(tmp_path: Path) -> None:
    from app.settings import DeidentificationSettings  # the app's own loader

    config = tmp_path / "app.json"
    config.write_text(json.dumps({"deidentification": {"secret_env": "NO_SUCH_ENV", "options": {"retain_uids": True}}}))
    settings = DeidentificationSettings.load(config)
    assert settings.options == ProfileOptions(retain_uids=True)
    assert settings.secret is None and settings.accept_burned_in_annotation is False
