"""The whole app through the real MONAI Deploy graph: DICOM study in, DICOM SR out, read back and checked."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import Comprehensive3DSRStorage

from operators.sr.codes import NO_CONFIDENT_FINDING, PROBABILITY_MARGIN
from tests.conftest import ROOT, run_app, tree_digest

NON_IMAGE_SR = get_testdata_file("reportsi.dcm")  # Basic Text SR Storage, no pixel data


def _only_sr(output: Path) -> Path:
    srs = sorted(output.glob("*.dcm"))
    assert len(srs) == 1, f"expected one SR per study, got {srs}"
    return srs[0]


def _input_instances(folder: Path) -> dict[str, pydicom.Dataset]:
    return {
        str(ds.SOPInstanceUID): ds
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*")) if p.is_file())
    }


def _text_values(item: pydicom.Dataset, concept_code: str) -> set[str]:
    """TEXT values of every content item named ``concept_code`` under ``item`` (recursively)."""
    found = set()
    for child in item.get("ContentSequence", []):
        if child.ConceptNameCodeSequence[0].CodeValue == concept_code and "TextValue" in child:
            found.add(child.TextValue)
        found |= _text_values(child, concept_code)
    return found


@pytest.fixture()
def study_with_bad_files(sample_study: Path) -> Path:
    (sample_study / "notes.txt").write_text("not a DICOM file\n")
    shutil.copyfile(NON_IMAGE_SR, sample_study / "report.dcm")
    return sample_study


def test_one_study_two_series_gives_one_sr_in_the_original_study(study_with_bad_files: Path, model_package: Path, tmp_path: Path) -> None:
    input_dir, output = study_with_bad_files, tmp_path / "out"
    before = tree_digest(input_dir)
    originals = {uid: ds for uid, ds in _input_instances(input_dir / "CT2N").items()}
    originals.update(_input_instances(input_dir / "CT5N"))

    result = run_app(input_dir, output, model_package)

    assert result.returncode == 0, result.stderr[-3000:]
    assert tree_digest(input_dir) == before, "the input folder was modified"
    sr_path = _only_sr(output)
    assert f"SR written: {sr_path}" in result.stdout

    sr = hd.sr.srread(sr_path)
    first = next(iter(originals.values()))
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == first.StudyInstanceUID
    assert sr.PatientID == first.PatientID
    assert sr.PatientName == first.PatientName
    assert sr.AccessionNumber == first.AccessionNumber
    assert sr.SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in originals.values()}
    assert sr.VerificationFlag == "UNVERIFIED"

    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 2, "one TID 1501 group per image series"
    referenced = set()
    labels = json.loads((model_package / "labels.json").read_text())["labels"]
    for group in groups:
        probabilities = {m.name.value: m.value for m in group.get_measurements()}
        margin = probabilities.pop(PROBABILITY_MARGIN.value)
        assert set(probabilities) == {label["code"]["value"] for label in labels}
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=0.0005 * len(labels)), "11 values to 3 decimals"
        assert all(m.unit.value == "1" for m in group.get_measurements())
        top, runner_up = sorted(probabilities.values(), reverse=True)[:2]
        assert margin == pytest.approx(top - runner_up, abs=0.001 + 1e-9)
        (evaluation,) = group.get_qualitative_evaluations()
        # random weights give near-uniform probabilities: below app.json's thresholds, no label is a finding
        assert top < 0.5 and evaluation.value.value == NO_CONFIDENT_FINDING.value
        assert sum(item.ConceptNameCodeSequence[0].CodeValue == "111001" for item in group[0].ContentSequence) == 1, (
            "TID 4019 once per group, not under every measurement"
        )
        assert _text_values(group[0], "111001") == {"BiomedCLIP"}  # Algorithm Name (TID 4019)
        (version,) = _text_values(group[0], "111003")  # Algorithm Version
        assert "RANDOM-INIT" in version and "NOT FOR CLINICAL USE" in version
        assert any(p.startswith("backend=onnxruntime") for p in _text_values(group[0], "111002"))  # Parameters
        for item in group[0].ContentSequence:
            if item.ConceptNameCodeSequence[0].CodeValue == "121112":  # Source of Measurement
                referenced.add(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    assert referenced == set(originals), "the SR must reference every image the model used, by original UID"
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == set(originals)

    validator = subprocess.run(["dciodvfy", str(sr_path)], capture_output=True, text=True)
    errors = [line for line in validator.stderr.splitlines() if line.startswith("Error")]
    assert not errors, errors

    report = json.loads((output / "run_report.json").read_text())
    assert (report["status"], report["error"]) == ("completed", None)
    assert report["files"]["notes.txt"]["status"] == "skipped"
    assert "not a DICOM file" in report["files"]["notes.txt"]["reason"]
    assert report["files"]["report.dcm"] == {"status": "skipped", "reason": "non-image SOP class: Basic Text SR Storage"}
    assert sum(entry["status"] == "used" for entry in report["files"].values()) == 7
    assert report["summary"]["structured_reports"] == 1
    for series in report["series"]:
        assert sum(series["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        per_image = np.array([list(image["probabilities"].values()) for image in series["images"]])
        assert np.allclose(per_image.mean(axis=0), list(series["probabilities"].values()), atol=1e-6)
    assert "Skipping input file notes.txt: not a DICOM file" in result.stderr + result.stdout
    assert "Skipping input file report.dcm: non-image SOP class: Basic Text SR Storage" in result.stderr + result.stdout


def test_no_phi_in_logs_or_run_report(sample_study: Path, model_package: Path, tmp_path: Path) -> None:
    result = run_app(sample_study, tmp_path / "out", model_package)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = result.stdout + result.stderr
    report = (tmp_path / "out" / "run_report.json").read_text()
    for ds in _input_instances(sample_study).values():
        for identifier in (str(ds.PatientName), ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert identifier not in logs, f"{identifier!r} leaked into the logs"
            assert identifier not in report, f"{identifier!r} leaked into the run report"


def test_sampling_policy_uses_evenly_spaced_slices_and_reports_the_rest(sample_study: Path, model_package: Path, tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "app" / "config", config)
    settings = json.loads((config / "app.json").read_text())
    settings["sampling"]["max_images_per_series"] = 3
    (config / "app.json").write_text(json.dumps(settings))

    result = run_app(sample_study, tmp_path / "out", model_package, env={"BIOMEDCLIP_APP_CONFIG": str(config / "app.json")})

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    ct5 = {name: entry for name, entry in report["files"].items() if name.startswith("CT5N/")}
    used = sorted(name for name, entry in ct5.items() if entry["status"] == "used")
    # CT5N holds instance numbers 6..10 in files 2062, 2392, 2693, 3023, 3353: first, middle, last.
    assert used == ["CT5N/2062", "CT5N/2693", "CT5N/3353"]
    for name in set(ct5) - set(used):
        assert ct5[name] == {"status": "not used", "reason": "not sampled (series sampling policy)"}
    (five,) = [s for s in report["series"] if s["images_total"] == 5]
    assert five["sampling"] == "3 of 5 images, evenly spaced (max_images_per_series=3)"
    sr = hd.sr.srread(_only_sr(tmp_path / "out"))
    sources = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for group in sr.content.get_image_measurement_groups()
        for item in group[0].ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121112"
    }
    assert len(sources) == 2 + 3


def test_folder_without_usable_images_exits_non_zero_with_one_line_reason(model_package: Path, tmp_path: Path) -> None:
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    (input_dir / "notes.txt").write_text("hello")
    shutil.copyfile(NON_IMAGE_SR, input_dir / "report.dcm")
    before = tree_digest(input_dir)

    result = run_app(input_dir, tmp_path / "out", model_package)

    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "no usable image in the input: 2 file(s), 2 skipped" in line
    assert not list((tmp_path / "out").glob("*.dcm"))
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert report["status"] == "failed" and report["error"] == line.removeprefix("error: ").split("; see ")[0]
    assert report["summary"]["skipped"] == 2
    assert tree_digest(input_dir) == before


def test_missing_model_package_is_a_one_line_error(sample_study: Path, tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    result = run_app(sample_study, tmp_path / "out", empty)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == f"error: {empty}: no model package (manifest.json) found; build one with scripts/build_model.py"


def test_a_truncated_manifest_is_a_one_line_error_naming_it_and_the_earlier_report_stays(
    sample_study: Path, model_package: Path, tmp_path: Path
) -> None:
    earlier_output = tmp_path / "output"
    earlier_output.mkdir()
    (earlier_output / "run_report.json").write_text('{"status": "completed"}\n')
    package = shutil.copytree(model_package, tmp_path / "model")
    manifest = package / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    before = tree_digest(earlier_output)
    result = run_app(sample_study, earlier_output, package)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {manifest}: unreadable manifest (")
    assert tree_digest(earlier_output) == before, "nothing ran: the earlier run's report stays"


def test_a_model_that_fails_once_the_run_started_is_reported_as_failed_not_as_an_empty_input(
    sample_study: Path, model_package: Path, tmp_path: Path
) -> None:
    """An image encoder that matches its manifest's sha256 but is not ONNX: found only when the backend loads it,
    then one line naming the file (exit 2: running it again unchanged cannot help) and a report that says failed."""
    package = shutil.copytree(model_package, tmp_path / "model")
    encoder = package / "image_encoder.onnx"
    encoder.write_bytes(b"not an ONNX graph")
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["files"][encoder.name] = hashlib.sha256(encoder.read_bytes()).hexdigest()
    (package / "manifest.json").write_text(json.dumps(manifest))

    result = run_app(sample_study, tmp_path / "out", package, env={"BIOMEDCLIP_APP_CONFIG": str(_onnxruntime_config(tmp_path))})

    reason = f"{encoder}: ONNX Runtime cannot load it (InvalidProtobuf"
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {reason}")
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert report["status"] == "failed"
    assert report["error"].startswith(reason)
    assert report["summary"]["structured_reports"] == 0


def _onnxruntime_config(tmp_path: Path) -> Path:
    """The app's settings with the ONNX Runtime fp32 backend (the one that reads image_encoder.onnx)."""
    config = shutil.copytree(ROOT / "app" / "config", tmp_path / "config")
    settings = json.loads((config / "app.json").read_text())
    settings["inference"].update(backend="onnxruntime", precision="fp32")
    (config / "app.json").write_text(json.dumps(settings))
    return config / "app.json"


@pytest.mark.parametrize(("character_set", "name"), [("ISO_IR 100", "Müller^Jürgen"), ("ISO_IR 192", "山田^太郎")])
def test_a_name_outside_ascii_reaches_the_sr_intact_with_its_character_set_declared(
    sample_study: Path, model_package: Path, tmp_path: Path, character_set: str, name: str
) -> None:
    for path in sorted(sample_study.rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path)
            ds.SpecificCharacterSet, ds.PatientName = character_set, name
            ds.save_as(path)

    result = run_app(sample_study, tmp_path / "out", model_package)

    assert result.returncode == 0, result.stderr[-3000:]
    sr_path = _only_sr(tmp_path / "out")
    sr = pydicom.dcmread(sr_path)
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert str(sr.PatientName) == name
    validator = subprocess.run(["dciodvfy", str(sr_path)], capture_output=True, text=True)
    assert not [line for line in validator.stderr.splitlines() if line.startswith("Error")]
