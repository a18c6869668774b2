"""The study SR (TID 1500 Measurement Report in a Comprehensive 3D SR) built from hand-made classifications
of really de-identified images, written, read back and validated: filed in the original study, one TID
1501 group per series with the input probabilities, the top label's qualitative evaluation, TID 4019
algorithm identification, original image references only, UNVERIFIED, and no dciodvfy error."""

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
from operators.sr.structured_report import Algorithm, build_study_sr, write_sr
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


@pytest.fixture(scope="module")
def sr(deidentified: tuple[dict[str, pydicom.Dataset], ReidentificationMap], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SR as written by the SR writer."""
    datasets, reid = deidentified
    series = [
        _classification(datasets["ct"], [None], CT_PROBABILITIES[None], "all 1 images"),
        _classification(datasets["mr"], [1, 10], MR_FRAMES, "2 of 10 images, evenly spaced (max_images_per_series=2)"),
    ]
    return write_sr(build_study_sr(series, LABELS, ALGORITHM, reid), tmp_path_factory.mktemp("sr"))


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


def test_one_group_per_series_with_the_input_probabilities_and_the_top_label(sr: Path) -> None:
    groups = _groups(hd.sr.srread(sr))
    assert sorted(groups) == ["CT", "MR"]
    for name, aggregate in (("CT", CT_PROBABILITIES), ("MR", MR_FRAMES.mean(axis=0))):
        group = groups[name]
        measurements = group.get_measurements()
        assert [(m.name.value, m.name.scheme_designator) for m in measurements] == [
            (label.code.value, label.code.scheme_designator) for label in LABELS.labels
        ], "one probability per label, in label order"
        assert [float(m.value) for m in measurements] == aggregate.tolist()
        assert all(m.unit.value == "1" and m.method.value == ZERO_SHOT_PROBABILITY.value for m in measurements)
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.name.value == LABELS.task.value
        assert evaluation.value.value == LABELS.labels[int(np.argmax(aggregate))].code.value
    assert groups["CT"].get_qualitative_evaluations()[0].value.meaning == "Abdomen"
    assert groups["MR"].get_qualitative_evaluations()[0].value.meaning == "Head"


def test_algorithm_identification_names_the_model_and_its_parameters(sr: Path) -> None:
    groups = _groups(hd.sr.srread(sr))
    for name, sampling in (("CT", "all 1 images"), ("MR", "2 of 10 images, evenly spaced (max_images_per_series=2)")):
        root = groups[name][0]
        assert set(_text_values(root, "111001")) == {"BiomedCLIP"}  # Algorithm Name (TID 4019)
        assert set(_text_values(root, "111003")) == {"1.0.0+test"}  # Algorithm Version
        parameters = _text_values(root, "111002")  # Algorithm Parameters, once per measurement and the group
        assert set(parameters) == {"backend=onnxruntime-cpu-fp32", f"sampling={sampling}", *ALGORITHM.parameters}


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
