"""Bad input, case by case (``tests/support/malformed_corpus.py``): each file gets its reason in the
inventory and in ``run_report.json``, the rest of the input goes on, the input is not modified,
nothing is left half-written, and the exit code says whether none, some or all inputs failed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from operators.intake.inventory import scan_input
from tests.conftest import ROOT, tree_digest
from tests.support.malformed_corpus import CASES, Expected, write_malformed_corpus

#: root reads any file; without these capabilities it meets file permissions like any user
DROP_FILE_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
IS_ROOT = os.geteuid() == 0


def _status(refused: bool) -> str:
    return "refused" if refused else "skipped"


def test_inventory_gives_every_malformed_file_its_reason(tmp_path: Path) -> None:
    # root reads a file whatever its mode: the unreadable case runs without root's override in the app test below
    expected = write_malformed_corpus(tmp_path / "bad", exclude=("unreadable.dcm",) if IS_ROOT else ())
    before = tree_digest(tmp_path / "bad")

    files = {f.relative: f for f in scan_input(tmp_path / "bad")}

    assert set(files) == set(expected)
    for name, outcome in expected.items():
        assert _status(files[name].refused) == outcome.status, name
        assert outcome.matches(files[name].skip_reason or ""), f"{name}: {files[name].skip_reason}"
    assert tree_digest(tmp_path / "bad") == before


def _second_study(folder: Path) -> dict[str, str]:
    """A CT study of 3 instances in one series; the last one at the first one's position.
    Returns file name -> SOP Instance UID."""
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    uids = {}
    for i, (name, z) in enumerate((("ct1.dcm", 0.0), ("ct2.dcm", 5.0), ("ct3_same_position.dcm", 0.0))):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber, ds.ImagePositionPatient, ds.AcquisitionNumber = i + 1, [0.0, 0.0, z], 1
        ds.save_as(folder / name, enforce_file_format=True)
        uids[name] = str(ds.SOPInstanceUID)
    return uids


def _run_app(input_dir: Path, output: Path, model: Path) -> subprocess.CompletedProcess:
    """``python app -i -o -m`` as a user without root's file-permission override."""
    prefix = DROP_FILE_OVERRIDE if IS_ROOT else []
    return subprocess.run(
        [*prefix, sys.executable, str(ROOT / "app"), "-i", str(input_dir), "-o", str(output), "-m", str(model)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )


@pytest.mark.skipif(IS_ROOT and shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed to drop root's file override")
def test_bad_files_are_refused_and_the_rest_goes_on_with_one_sr_per_study(sample_study: Path, model_package: Path, tmp_path: Path) -> None:
    expected = {f"bad/{name}": outcome for name, outcome in write_malformed_corpus(sample_study / "bad").items()}
    shutil.copyfile(sample_study / "CT2N" / "6293", sample_study / "bad" / "copy_of_6293.dcm")
    expected["bad/copy_of_6293.dcm"] = Expected("skipped", "duplicate SOP Instance UID (same as CT2N/6293)")
    second = _second_study(sample_study / "study_b")
    before = tree_digest(sample_study)
    output = tmp_path / "out"

    result = _run_app(sample_study, output, model_package)

    assert result.returncode == 3, result.stderr[-3000:]
    report = json.loads((output / "run_report.json").read_text())
    files = report["files"]
    refused = sum(o.status == "refused" for o in expected.values())
    assert f"warning: {refused} of {len(files)} input file(s) refused; reasons in {output / 'run_report.json'}" in result.stderr
    for name, outcome in expected.items():
        assert files[name]["status"] == outcome.status, (name, files[name])
        assert outcome.matches(files[name]["reason"]), (name, files[name])
    assert report["summary"]["refused"] == refused
    # the SDK loader keeps one instance per position: the other gets that reason, not "not selected"
    assert files["study_b/ct3_same_position.dcm"] == {
        "status": "not used",
        "reason": "same Image Position (Patient) as study_b/ct1.dcm in its series: the loader keeps one instance per "
        "position (the higher Acquisition Number, else the first read)",
    }
    used = sorted(name for name, entry in files.items() if entry["status"] == "used")
    assert used == ["CT2N/6293", "CT2N/6924", "CT5N/2062", "CT5N/2392", "CT5N/2693", "CT5N/3023", "CT5N/3353", "study_b/ct1.dcm", "study_b/ct2.dcm"]

    # one SR per study, each filed into its own study; nothing else written, nothing half-written
    srs = sorted(output.glob("*.dcm"))
    assert sorted(p.name for p in output.iterdir()) == sorted([*(p.name for p in srs), "run_report.json"])
    studies = {hd.sr.srread(p).StudyInstanceUID for p in srs}
    first_study = pydicom.dcmread(sample_study / "CT2N" / "6293", stop_before_pixels=True).StudyInstanceUID
    second_study = pydicom.dcmread(sample_study / "study_b" / "ct1.dcm", stop_before_pixels=True).StudyInstanceUID
    assert len(srs) == 2 and studies == {first_study, second_study}
    referenced = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for p in srs
        for group in hd.sr.srread(p).content.get_image_measurement_groups()
        for item in group[0].ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121112"
    }
    assert {second["ct1.dcm"], second["ct2.dcm"]} <= referenced and second["ct3_same_position.dcm"] not in referenced
    assert tree_digest(sample_study) == before, "the input folder was modified"


def test_only_bad_files_fail_all_with_exit_code_2(model_package: Path, tmp_path: Path) -> None:
    names = ("truncated_native.dcm", "zero_rows.dcm", "pixel_data_short.dcm", "empty.dcm", "not_dicom.txt")
    expected = write_malformed_corpus(tmp_path / "input", exclude=tuple(set(CASES) - set(names)))
    before = tree_digest(tmp_path / "input")

    result = _run_app(tmp_path / "input", tmp_path / "out", model_package)

    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: no usable image in the input: 5 file(s), 1 skipped, 4 refused, 0 not selected; see ")
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert {name: entry["status"] for name, entry in report["files"].items()} == {n: o.status for n, o in expected.items()}
    assert not list((tmp_path / "out").glob("*.dcm"))
    assert tree_digest(tmp_path / "input") == before
