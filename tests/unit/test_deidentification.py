"""De-identification unit behaviour: identifiers gone, UIDs remapped by a keyed hash, originals untouched, the
table checked against an independent extraction of the standard."""

from __future__ import annotations

import copy
import importlib
import io
import json
import re
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from operators.deid.deidentifier import DeidentificationProfile, Deidentifier, deidentify_series
from operators.deid.profile import TABLE_PATH, Action, ProfileOptions, parse_tag, resolve_combined
from operators.imaging.sampling import SamplingPlan, SamplingPolicy

SAMPLE = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001"
UID_PATTERN = re.compile(r"2\.25\.(0|[1-9][0-9]*)")


@pytest.fixture()
def series() -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted((SAMPLE / "CT5N").iterdir())]
    datasets[0].add_new(0x00091001, "LO", "private identifying note")
    datasets[0].ReferencedImageSequence = [pydicom.Dataset()]
    datasets[0].ReferencedImageSequence[0].ReferencedSOPClassUID = datasets[1].SOPClassUID
    datasets[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID = datasets[1].SOPInstanceUID
    return datasets


def _every(series: list[pydicom.Dataset]) -> SamplingPlan:
    """A sampling plan that picks every instance of ``series``."""
    return SamplingPolicy(len(series)).plan(series)


def _all_values(ds: pydicom.Dataset) -> set[str]:
    values: set[str] = set()
    ds.walk(lambda _, elem: values.add(str(elem.value)) if elem.VR != "SQ" else None)
    return values


def test_identifiers_removed_uids_replaced_and_originals_untouched(series: list[pydicom.Dataset]) -> None:
    before = [copy.deepcopy(ds) for ds in series]
    deidentifier = Deidentifier(DeidentificationProfile.basic(), b"site secret")
    result = deidentify_series(deidentifier, series, _every(series))

    assert series == before, "originals must not be modified"
    for original, ds in zip(series, result.datasets):
        values = _all_values(ds)
        for identifier in (str(original.PatientName), original.PatientID, original.StudyInstanceUID,
                           original.SeriesInstanceUID, original.SOPInstanceUID, original.StudyDate):
            assert identifier not in values
        assert all(ds[k].is_empty for k in ("PatientName", "AccessionNumber", "StudyDate"))  # Z: zero length
        assert re.fullmatch(r"ANON[0-9A-F]{12}", ds.PatientID)  # Z/D: a keyed dummy, equal for equal originals
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SOPClassUID == original.SOPClassUID  # standard UIDs are not identifiers
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert not any(elem.tag.is_private for elem in ds)
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID):
            assert len(uid) <= 64 and UID_PATTERN.fullmatch(uid)
    assert len({ds.StudyInstanceUID for ds in result.datasets}) == 1
    assert len({ds.PatientID for ds in result.datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in result.datasets}) == len(series)
    # a reference follows its target
    reference = result.datasets[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert reference == result.datasets[1].SOPInstanceUID


def test_reidentification_map_returns_the_originals(series: list[pydicom.Dataset]) -> None:
    deidentifier = Deidentifier(DeidentificationProfile.basic(), b"k")
    result = deidentify_series(deidentifier, series, _every(series))
    reid = deidentifier.reidentification
    assert reid.original_uid(result.study_instance_uid) == series[0].StudyInstanceUID
    assert reid.original_uid(result.datasets[2].SOPInstanceUID) == series[2].SOPInstanceUID
    study = reid.original_study(result.study_instance_uid)
    assert study.PatientID == series[0].PatientID and study.AccessionNumber == series[0].AccessionNumber
    assert series[0].PatientID not in repr(reid)


def test_determinism_same_secret_same_uids_other_secret_other_uids(series: list[pydicom.Dataset]) -> None:
    def uids(secret: bytes) -> list[str]:
        deidentified = deidentify_series(Deidentifier(DeidentificationProfile.basic(), secret), series, _every(series))
        return [ds.SOPInstanceUID for ds in deidentified.datasets]

    assert uids(b"one") == uids(b"one")
    assert set(uids(b"one")).isdisjoint(uids(b"two"))


KITWARE_GROUPS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
                  "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}


def _kitware_table(edition: str) -> dict[str, str]:
    """tag -> Basic Profile code from dicom-anonymizer's own extraction of Table E.1-1 (single tags only)."""
    module = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.dicomfields_{edition}")
    return {f"{t[0]:04X}{t[1]:04X}": code for name, code in KITWARE_GROUPS.items() for t in getattr(module, name) if len(t) == 2}


def test_table_matches_an_independent_extraction_of_the_standard() -> None:
    table = json.loads(TABLE_PATH.read_text())
    ours = {row["tag"]: row["basic"] for row in table["attributes"] if parse_tag(row["tag"]) is not None}
    assert table["edition"] == "2024b"
    assert ours == _kitware_table("2024b"), "every Table E.1-1 (2024b) row with the same Basic Profile action"
    later = {row["tag"]: row["basic"] for row in table["attributes_after_2024b"]}
    assert {**ours, **later} == _kitware_table("2026c"), "rows added up to 2026c are covered"
    patterns = {row["tag"] for row in table["attributes"]} - set(ours)
    assert patterns == {"50xxxxxx", "60xx3000", "60xx4000", "private"}


@pytest.mark.parametrize(
    ("code", "vr", "action"),
    [
        ("X/D", "DA", Action.DUMMY), ("Z/D", "LO", Action.DUMMY), ("X/Z/D", "PN", Action.DUMMY), ("X/Z", "TM", Action.ZERO),
        ("X/Z/U*", "SQ", Action.KEEP), ("X/Z", "SQ", Action.REMOVE), ("X/Z/D", "SQ", Action.REMOVE), ("D", "SQ", Action.REMOVE),
        ("Z", "SQ", Action.ZERO), ("U", "UI", Action.UID),
    ],
)
def test_combined_actions_resolve_to_a_choice_valid_for_any_attribute_type(code: str, vr: str, action: Action) -> None:
    assert resolve_combined(code, 0x00080050, vr) is action


@pytest.mark.parametrize("keyword", ["AcquisitionContextSequence", "ResponsiblePerson", "ResponsibleOrganization"])
def test_type_2_attributes_of_image_iods_are_emptied_not_removed(keyword: str) -> None:
    """Acquisition Context Sequence (X/Z; Type 2, PS3.3 C.7.6.14), Responsible Person/Organization (X; Type 2C for
    animals, C.7.1.1): Z, so that the output stays valid."""
    assert DeidentificationProfile.basic().actions[pydicom.datadict.tag_for_keyword(keyword)] is Action.ZERO


def test_unknown_or_non_boolean_options_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="retain_everything"):
        ProfileOptions.from_mapping({"retain_everything": True})
    with pytest.raises(ValueError, match="retain_uids must be true or false"):
        ProfileOptions.from_mapping({"retain_uids": "yes"})


@pytest.mark.parametrize(("sex", "kept"), [("M", "M"), ("F", "F"), ("O", "O"), ("male", ""), ("", "")])
def test_only_an_enumerated_patient_sex_is_kept_for_the_sr(series: list[pydicom.Dataset], sex: str, kept: str) -> None:
    """Patient's Sex is M, F or O (PS3.3 C.7.1.1); another original value would fail the SR writer, naming it."""
    series[0]["PatientSex"] = pydicom.DataElement(0x00100040, "CS", sex, validation_mode=pydicom.config.IGNORE)
    deidentifier = Deidentifier(DeidentificationProfile.basic(), b"k")
    ds = deidentifier.deidentify(series[0])
    assert deidentifier.reidentification.original_study(ds.StudyInstanceUID).PatientSex == kept


def test_invalid_original_values_are_not_quoted_in_logs_or_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pydicom warns about invalid values quoting them; reading the original for de-identification must not."""
    path = tmp_path / "invalid.dcm"
    ds = pydicom.dcmread(SAMPLE / "CT2N" / "6293")
    invalid = {"PatientSex": ("CS", "male"), "PatientBirthDate": ("DA", "1961-03-04"), "StudyTime": ("TM", "10:11:12"),
               "AcquisitionDateTime": ("DT", "19610304 T101112")}
    for keyword, (vr, value) in invalid.items():
        ds[keyword] = pydicom.DataElement(pydicom.datadict.tag_for_keyword(keyword), vr, value, validation_mode=pydicom.config.IGNORE)
    with pydicom.config.disable_value_validation():
        ds.save_as(path, enforce_file_format=True)
    original = pydicom.dcmread(path)
    with caplog.at_level("DEBUG"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Deidentifier(DeidentificationProfile.basic(ProfileOptions(retain_longitudinal_modified_dates=True)), b"k").deidentify(original)
    said = caplog.text + "\n".join(str(w.message) for w in caught)
    assert not [value for _, value in invalid.values() if value in said]
    assert "T101112" not in said, "the kept time of a shifted date-time is original content too"


@pytest.mark.parametrize("options", [ProfileOptions(), ProfileOptions(retain_uids=True, retain_patient_characteristics=True)])
def test_validation_is_off_per_element_never_through_pydicoms_process_wide_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, options: ProfileOptions
) -> None:
    """``pydicom.config.settings`` is shared by every thread (the listener's too): de-identifying never sets it,
    and every value pydicom would validate — read from the file (DS, IS, UI), copied (UID) or assigned — is
    handled with validation off for its element only, so invalid originals are not quoted either."""
    path = tmp_path / "invalid.dcm"
    ds = pydicom.dcmread(SAMPLE / "CT2N" / "6293")
    invalid = {"FrameOfReferenceUID": ("UI", "1.2.03.4567"), "SeriesNumber": ("IS", "12345X"), "PatientWeight": ("DS", "71.25kg")}
    for keyword, (vr, value) in invalid.items():
        ds[keyword] = pydicom.DataElement(keyword, vr, value, already_converted=True)
    reference = pydicom.Dataset()
    reference["ReferencedSOPInstanceUID"] = pydicom.DataElement("ReferencedSOPInstanceUID", "UI", "1.2.03.999", already_converted=True)
    reference.ReferencedSOPClassUID = ds.SOPClassUID
    ds.ReferencedImageSequence = [reference]
    with pydicom.config.disable_value_validation():
        ds.save_as(path, enforce_file_format=True)
    original = pydicom.dcmread(path)

    settings = pydicom.config.settings
    process_wide = (settings.reading_validation_mode, settings.writing_validation_mode)
    changed: list[str] = []
    for name in ("reading_validation_mode", "writing_validation_mode"):
        prop = getattr(pydicom.config.Settings, name)
        monkeypatch.setattr(pydicom.config.Settings, name, property(prop.fget, lambda self, value, name=name: changed.append(name)))
    seen: set[tuple[int, int]] = set()
    apply = Deidentifier._apply

    def spy(self: Deidentifier, *args: object) -> None:
        seen.add((settings.reading_validation_mode, settings.writing_validation_mode))
        apply(self, *args)

    monkeypatch.setattr(Deidentifier, "_apply", spy)
    with caplog.at_level("DEBUG"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deidentified = Deidentifier(DeidentificationProfile.basic(options), b"k").deidentify(original)
    assert changed == [], "pydicom.config.settings must not be set"
    assert seen == {process_wide}, "other threads would see other validation modes while de-identifying"
    assert (settings.reading_validation_mode, settings.writing_validation_mode) == process_wide
    said = caplog.text + "\n".join(str(w.message) for w in caught)
    assert not [value for value in ("1.2.03", "12345X", "71.25kg") if value in said], said
    if options.retain_uids:  # the invalid originals were kept, not lost
        assert deidentified.FrameOfReferenceUID == "1.2.03.4567"
        assert deidentified.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.03.999"
        assert deidentified.PatientWeight == "71.25kg"


def _written(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _raw(data: bytes, tag: int) -> RawDataElement:
    raw = pydicom.dcmread(io.BytesIO(data)).get_item(tag)
    assert isinstance(raw, RawDataElement)
    return raw


def test_kept_attributes_are_written_back_byte_for_byte_and_un_gets_its_dictionary_vr() -> None:
    """Attributes the profile keeps (K, or not in Table E.1-1) leave as they came, padding included, their values
    never converted; an attribute encoded as UN whose tag the dictionary knows is written with the dictionary's
    VR (PS3.5 6.2.2), as pydicom reads it."""
    ds = pydicom.dcmread(SAMPLE / "CT2N" / "6293")
    ds[0x00080008] = RawDataElement(pydicom.tag.Tag(0x00080008), "CS", 26, b"DERIVED \\SECONDARY\\OTHER  ", 0, False, True)
    ds[0x00080060] = RawDataElement(pydicom.tag.Tag(0x00080060), "UN", 2, b"CT", 0, False, True)
    source = _written(ds)
    original = pydicom.dcmread(io.BytesIO(source))

    written = _written(Deidentifier(DeidentificationProfile.basic(), b"k").deidentify(original))

    assert _raw(written, 0x00080008).value == b"DERIVED \\SECONDARY\\OTHER  "  # K: as read, not re-encoded
    assert _raw(written, 0x00280030).value == _raw(source, 0x00280030).value  # Pixel Spacing, not in the table
    assert _raw(written, 0x00080060).VR == "CS" and pydicom.dcmread(io.BytesIO(written)).Modality == "CT"
