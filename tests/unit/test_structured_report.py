"""The study SR (TID 1500 Measurement Report in a Comprehensive 3D SR) built from hand-made classifications
of really de-identified images, written, read back and validated: filed in the original study, one TID
1501 group per series with the input probabilities to 3 decimals and the margin to the runner-up, the
top label's qualitative evaluation or "no confident finding" below the thresholds, TID 4019 algorithm
identification once per group, UIDs under the configured root, the private coding scheme declared,
original image references only, UNVERIFIED, and no dciodvfy error."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import Comprehensive3DSRStorage

from operators.deid.deidentifier import DeidentificationProfile, Deidentifier, ReidentificationMap
from operators.imaging.preprocessing import ImageRef
from operators.inference.classification import SeriesClassification
from operators.inference.zero_shot import ZERO_SHOT_PROBABILITY, LabelSet
from operators.sr.codes import NO_CONFIDENT_FINDING, PROBABILITY_MARGIN
from operators.sr.predecessor import PredecessorError, PredecessorSR
from operators.sr.structured_report import Algorithm, ReportOptions, build_study_sr, write_sr
from operators.sr.uids import UIDRoot
from tests.support.phi_corpus import dciodvfy_errors

ROOT = Path(__file__).resolve().parents[2]
LABELS = LabelSet.from_json(ROOT / "models" / "labels.json")
ALGORITHM = Algorithm("BiomedCLIP", "1.0.0+test", ("weights=test-weights", "labels_sha256=0123456789abcdef"), random_weights=False)
#: Per-series probabilities over the 11 labels (exact in decimal, so the SR's DS values are too):
#: the CT's top label is abdomen, the MR's head.
CT_PROBABILITIES = np.array([0.125, 0.0625, 0.5, 0.0625, 0.0625, 0.0625, 0.03125, 0.03125, 0.03125, 0.015625, 0.015625])
MR_FRAMES = np.array([
    [0.0625, 0.625, 0.0625, 0.03125, 0.03125, 0.0625, 0.03125, 0.03125, 0.03125, 0.015625, 0.015625],
    [0.0625, 0.375, 0.0625, 0.03125, 0.03125, 0.3125, 0.03125, 0.03125, 0.03125, 0.015625, 0.015625],
])


@pytest.fixture(scope="module")
def originals() -> dict[str, pydicom.Dataset]:
    """A CT (single-frame) and an MR (10 frames) series of one study and patient, as acquired."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.AccessionNumber, ct.PatientBirthDate, ct.PatientSex = "ACC-0001", "19700101", "F"
    mr = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                    "StudyDate", "StudyTime", "StudyID"):
        setattr(mr, keyword, copy.deepcopy(ct.get(keyword)))
    return {"ct": ct, "mr": mr}


@pytest.fixture(scope="module")
def deidentified(originals: dict[str, pydicom.Dataset]) -> tuple[dict[str, pydicom.Dataset], ReidentificationMap]:
    deidentifier = Deidentifier(DeidentificationProfile.basic(), b"test secret")
    return {name: deidentifier.deidentify(ds) for name, ds in originals.items()}, deidentifier.reidentification


def _classification(ds: pydicom.Dataset, frames: list[int | None], per_image: np.ndarray, sampling: str) -> SeriesClassification:
    """What inference makes of a de-identified series: de-identified references, probabilities."""
    return SeriesClassification(
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        modality=str(ds.Modality),
        series_number=int(ds.SeriesNumber),
        images=[ImageRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID), frame) for frame in frames],
        total_images=len(frames),
        sampling=sampling,
        per_image=per_image,
        aggregate=per_image.mean(axis=0),
        backend="onnxruntime-cpu-fp32",
    )


def _write(deidentified: tuple[dict[str, pydicom.Dataset], ReidentificationMap], folder: Path, options: ReportOptions,
           ct: np.ndarray = CT_PROBABILITIES, predecessor: PredecessorSR | None = None, only_ct: bool = False) -> Path:
    """The SR of the CT (probabilities ``ct``) and the MR series (unless ``only_ct``), as written by the SR writer."""
    datasets, reid = deidentified
    series = [
        _classification(datasets["ct"], [None], ct[None], "all 1 images"),
        _classification(datasets["mr"], [1, 10], MR_FRAMES, "2 of 10 images, evenly spaced (max_images_per_series=2)"),
    ]
    return write_sr(build_study_sr(series[:1] if only_ct else series, LABELS, ALGORITHM, reid, options, predecessor), folder)


@pytest.fixture(scope="module")
def sr(deidentified: tuple[dict[str, pydicom.Dataset], ReidentificationMap], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SR with the default options (UID root 2.25, confident at probability 0.5 and margin 0.1)."""
    return _write(deidentified, tmp_path_factory.mktemp("sr"), ReportOptions())


def _groups(sr: hd.sr.Comprehensive3DSR) -> dict[str, hd.sr.MeasurementsAndQualitativeEvaluations]:
    """The TID 1501 groups by the modality their tracking identifier names."""
    groups = sr.content.get_image_measurement_groups()
    return {("MR" if "(MR)" in group.tracking_identifier else "CT"): group for group in groups}


def _text_values(item: pydicom.Dataset, concept_code: str) -> list[str]:
    """TEXT values of the content items named ``concept_code`` under ``item``, depth first."""
    found = []
    for child in item.get("ContentSequence", []):
        if child.ConceptNameCodeSequence[0].CodeValue == concept_code and "TextValue" in child:
            found.append(child.TextValue)
        found += _text_values(child, concept_code)
    return found


def _sources(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> list[tuple[str, list[int] | None]]:
    """The images the group names as Source of Measurement: (SOP Instance UID, frame numbers or None)."""
    return [(str(image.referenced_sop_instance_uid), image.referenced_frame_numbers) for image in group.source_images]


def test_the_sr_is_a_tid_1500_report_filed_in_the_original_study(sr: Path, originals: dict[str, pydicom.Dataset]) -> None:
    ds = hd.sr.srread(sr)
    ct = originals["ct"]
    assert ds.SOPClassUID == Comprehensive3DSRStorage
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber"):
        assert ds[keyword].value == ct[keyword].value, keyword
    assert ds.SeriesInstanceUID not in {o.SeriesInstanceUID for o in originals.values()}
    assert (ds.VerificationFlag, ds.PreliminaryFlag, ds.CompletionFlag) == ("UNVERIFIED", "PRELIMINARY", "COMPLETE")


def _numeric_values(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> dict[str, str]:
    """The NUM items' values as written (DS strings), by concept code."""
    return {
        item.ConceptNameCodeSequence[0].CodeValue: item.MeasuredValueSequence[0].NumericValue.original_string
        for item in group[0].ContentSequence
        if item.ValueType == "NUM"
    }


def test_one_group_per_series_with_the_probabilities_to_3_decimals_the_margin_and_the_top_label(sr: Path) -> None:
    groups = _groups(hd.sr.srread(sr))
    assert sorted(groups) == ["CT", "MR"]
    for name, aggregate in (("CT", CT_PROBABILITIES), ("MR", MR_FRAMES.mean(axis=0))):
        group = groups[name]
        probabilities = [m for m in group.get_measurements() if m.name.value != PROBABILITY_MARGIN.value]
        assert [(m.name.value, m.name.scheme_designator) for m in probabilities] == [
            (label.code.value, label.code.scheme_designator) for label in LABELS.labels
        ], "one probability per label, in label order"
        assert np.allclose([float(m.value) for m in probabilities], aggregate, rtol=0, atol=0.0005 + 1e-9)  # half of the last decimal
        assert all(m.unit.value == "1" and m.method.value == ZERO_SHOT_PROBABILITY.value for m in probabilities)
        written = _numeric_values(group)
        assert all(len(value.partition(".")[2]) <= 3 for value in written.values()), written
        top, runner_up = sorted(aggregate)[::-1][:2]
        (margin,) = [m for m in group.get_measurements() if m.name.value == PROBABILITY_MARGIN.value]
        assert abs(float(margin.value) - (top - runner_up)) <= 0.0005 + 1e-9 and margin.unit.value == "1"
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.name.value == LABELS.task.value
        assert evaluation.value.value == LABELS.labels[int(np.argmax(aggregate))].code.value
    assert groups["CT"].get_qualitative_evaluations()[0].value.meaning == "Abdomen"
    assert groups["MR"].get_qualitative_evaluations()[0].value.meaning == "Head"


def test_algorithm_identification_once_per_group_names_the_model_and_its_parameters(sr: Path) -> None:
    groups = _groups(hd.sr.srread(sr))
    for name, sampling in (("CT", "all 1 images"), ("MR", "2 of 10 images, evenly spaced (max_images_per_series=2)")):
        root = groups[name][0]
        assert _text_values(root, "111001") == ["BiomedCLIP"]  # Algorithm Name (TID 4019), once
        assert _text_values(root, "111003") == ["1.0.0+test"]  # Algorithm Version
        parameters = _text_values(root, "111002")  # Algorithm Parameters
        assert parameters == [
            "backend=onnxruntime-cpu-fp32", f"sampling={sampling}", *ALGORITHM.parameters,
            "min_top_probability=0.5", "min_margin=0.1",
        ]


def _finding(path: Path, modality: str) -> str:
    (evaluation,) = _groups(hd.sr.srread(path))[modality].get_qualitative_evaluations()
    return str(evaluation.value.value)


@pytest.mark.parametrize(
    ("ct", "options", "mr_finding", "why"),
    [
        # the case: the top label wins by 0.100 vs 0.096; the MR (head 0.5, margin 0.3125) stays confident
        (np.array([0.096, 0.1, *[0.804 / 9] * 9]), ReportOptions(), LABELS.labels[1].code.value, "top probability below 0.5"),
        (np.array([0.45, 0.0, 0.5, *[0.05 / 8] * 8]), ReportOptions(), LABELS.labels[1].code.value, "margin 0.05 below 0.1"),
        (CT_PROBABILITIES, ReportOptions(min_top_probability=0.6), NO_CONFIDENT_FINDING.value, "a site's stricter probability"),
        (CT_PROBABILITIES, ReportOptions(min_margin=0.4), NO_CONFIDENT_FINDING.value, "a site's stricter margin"),
    ],
)
def test_below_a_threshold_the_finding_is_no_confident_finding(
    deidentified: tuple[dict[str, pydicom.Dataset], ReidentificationMap], tmp_path: Path,
    ct: np.ndarray, options: ReportOptions, mr_finding: str, why: str,
) -> None:
    path = _write(deidentified, tmp_path, options, ct)
    assert _finding(path, "CT") == NO_CONFIDENT_FINDING.value, why
    assert _finding(path, "MR") == mr_finding
    assert dciodvfy_errors(path) == []


def _sr_uids(ds: pydicom.Dataset) -> list[str]:
    """The UIDs the SR itself creates: series, instance, observer device, tracking."""
    created = [ds.SeriesInstanceUID, ds.SOPInstanceUID]
    ds.walk(lambda _, elem: created.append(elem.value) if elem.VR == "UI" and elem.keyword not in {
        "ReferencedSOPInstanceUID", "ReferencedSOPClassUID", "StudyInstanceUID", "SeriesInstanceUID",
        "SOPInstanceUID", "SOPClassUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID", "ImplementationClassUID"} else None)
    return created


def test_the_sr_uids_are_under_the_configured_root(
    sr: Path, deidentified: tuple[dict[str, pydicom.Dataset], ReidentificationMap], tmp_path: Path
) -> None:
    default = _sr_uids(pydicom.dcmread(sr))
    assert len(default) == 2 + 1 + 2, "series, instance, the observer device and one tracking UID per group"
    assert all(uid.startswith("2.25.") for uid in default), default
    site_root = "1.2.826.0.1.3680043.10.999"
    site = _sr_uids(pydicom.dcmread(_write(deidentified, tmp_path, ReportOptions(uid_root=UIDRoot(site_root)))))
    assert all(uid.startswith(site_root + ".") and len(uid) <= 64 for uid in site), site
    assert not set(default) & set(site[:2] + site[3:]), "new series, instance and tracking UIDs"


@pytest.mark.parametrize("root", ["1.2.03", "1..2", "1.2.", "abc", "1." * 30 + "1"])
def test_an_invalid_uid_root_is_refused(root: str) -> None:
    with pytest.raises(ValueError, match="not a UID root"):
        UIDRoot(root)


def test_the_private_coding_scheme_is_declared(sr: Path) -> None:
    ds = pydicom.dcmread(sr)
    declared = {item.CodingSchemeDesignator: item for item in ds.CodingSchemeIdentificationSequence}
    used: set[str] = set()
    ds.walk(lambda _, elem: used.add(elem.value) if elem.keyword == "CodingSchemeDesignator" else None)
    standard = {"DCM", "SCT", "UCUM", "RFC5646"}  # PS3.16 Table 8-1: need no declaration
    assert used - standard == {"99BMCLIP"} == set(declared)
    assert declared["99BMCLIP"].CodingSchemeName and declared["99BMCLIP"].CodingSchemeResponsibleOrganization


def test_every_referenced_image_is_an_original_instance(
    sr: Path, originals: dict[str, pydicom.Dataset], deidentified: tuple[dict[str, pydicom.Dataset], ReidentificationMap]
) -> None:
    ds = hd.sr.srread(sr)
    groups = _groups(ds)
    ct, mr = originals["ct"], originals["mr"]
    assert _sources(groups["CT"]) == [(ct.SOPInstanceUID, None)]
    assert _sources(groups["MR"]) == [(mr.SOPInstanceUID, [1]), (mr.SOPInstanceUID, [10])]
    evidence = {
        (series.SeriesInstanceUID, ref.ReferencedSOPInstanceUID)
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == {(ct.SeriesInstanceUID, ct.SOPInstanceUID), (mr.SeriesInstanceUID, mr.SOPInstanceUID)}
    assert {study.StudyInstanceUID for study in ds.CurrentRequestedProcedureEvidenceSequence} == {ct.StudyInstanceUID}
    pseudonyms = {uid for uid, original in deidentified[1].uids.items() if uid != original}
    values: set[str] = set()
    ds.walk(lambda _, elem: values.update(map(str, elem.value if elem.VM > 1 else [elem.value])) if elem.VR == "UI" else None)
    assert not values & pseudonyms, "no de-identified UID in the SR"


def test_dciodvfy_reports_no_error(sr: Path) -> None:
    assert dciodvfy_errors(sr) == []


def test_an_sr_that_supersedes_an_earlier_one_references_it_in_the_same_series(
    deidentified: tuple[dict[str, pydicom.Dataset], ReidentificationMap], tmp_path: Path
) -> None:
    """The partial-study policy (docs/listener.md): the SR of the first part (the CT alone), then the SR
    of the whole study written with ``--supersedes`` the first, read back with highdicom."""
    first = hd.sr.srread(_write(deidentified, tmp_path / "first", ReportOptions(), only_ct=True))
    path = _write(deidentified, tmp_path / "second", ReportOptions(), predecessor=PredecessorSR.read(tmp_path / "first" / f"{first.SOPInstanceUID}.dcm"))
    second = hd.sr.srread(path)
    assert (second.StudyInstanceUID, second.SeriesInstanceUID, second.SeriesNumber) == (
        first.StudyInstanceUID, first.SeriesInstanceUID, first.SeriesNumber)
    assert second.SOPInstanceUID != first.SOPInstanceUID
    assert (first.InstanceNumber, second.InstanceNumber) == (1, 2)
    [study] = second.PredecessorDocumentsSequence
    [series] = study.ReferencedSeriesSequence
    [instance] = series.ReferencedSOPSequence
    assert (study.StudyInstanceUID, series.SeriesInstanceUID, instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID) == (
        first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPClassUID, first.SOPInstanceUID)
    assert sorted(_groups(second)) == ["CT", "MR"] and sorted(_groups(first)) == ["CT"]
    assert "PredecessorDocumentsSequence" not in first
    assert dciodvfy_errors(path) == []


def test_an_earlier_sr_of_another_study_is_not_taken_as_the_predecessor(
    deidentified: tuple[dict[str, pydicom.Dataset], ReidentificationMap], sr: Path, tmp_path: Path
) -> None:
    earlier = pydicom.dcmread(sr)
    earlier.StudyInstanceUID = "1.2.3.4"
    earlier.save_as(tmp_path / "other-study.dcm")
    second = pydicom.dcmread(_write(deidentified, tmp_path, ReportOptions(), predecessor=PredecessorSR.read(tmp_path / "other-study.dcm")))
    assert "PredecessorDocumentsSequence" not in second
    assert second.SeriesInstanceUID != earlier.SeriesInstanceUID


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read the earlier SR"),
    (b"not DICOM", "is not a DICOM file"),
    ("ct", "is not a Structured Report (Modality 'CT')"),
])
def test_a_file_that_is_not_an_earlier_sr_is_refused_in_one_line_naming_it(
    originals: dict[str, pydicom.Dataset], tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "earlier.dcm"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content:
        originals[content].save_as(path)
    with pytest.raises(PredecessorError) as raised:
        PredecessorSR.read(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value) and originals["ct"].StudyInstanceUID not in str(raised.value)
