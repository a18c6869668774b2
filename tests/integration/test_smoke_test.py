"""``python -m app.smoke_test`` (app route): PASS on a working installation, FAIL with the reason on a
broken one, and its SR checks catch an SR that is wrong in each way they look for."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from app.sample_study import sample_files
from app.smoke_test.checks import SampleStudy, check_sr
from operators.inference.model_package import ModelPackage
from tests.conftest import ROOT, run_app

CHECKS = ("app run", "DICOM SR", "study", "model", "findings", "dciodvfy")


def smoke_test(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.smoke_test", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_smoke_test_passes_on_a_working_installation(model_package: Path) -> None:
    result = smoke_test("-m", model_package)

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    verdicts = {line.split(":")[0].split(maxsplit=1)[1]: line.split()[0] for line in lines[1:-1]}
    expected = {name: "PASS" for name in CHECKS}
    if shutil.which("dciodvfy") is None:
        expected["dciodvfy"] = "SKIP"
    assert verdicts == expected, result.stdout
    assert lines[-1] == "PASS"
    identity = ModelPackage.load(model_package).identity
    assert f"PASS  model: BiomedCLIP, version {identity}" in lines, "the SR names the package's version"


def test_smoke_test_fails_with_the_reason_on_a_corrupt_model_manifest(model_package: Path, tmp_path: Path) -> None:
    broken = tmp_path / "biomedclip"
    shutil.copytree(model_package, broken)
    manifest = broken / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])  # truncated

    result = smoke_test("-m", broken)

    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert f"FAIL  app run: exit code 2, 0 SR(s) written: error: {manifest}: unreadable manifest" in result.stdout
    assert result.stdout.splitlines()[-1] == "FAIL (1 of 1 checks failed)"


@pytest.fixture(scope="module")
def app_sr(model_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SR the app writes for the sample study."""
    work = tmp_path_factory.mktemp("smoke")
    from app.sample_study import make_sample_study

    make_sample_study(work / "input")
    result = run_app(work / "input", work / "out", model_package)
    assert result.returncode == 0, result.stderr[-3000:]
    (sr,) = sorted((work / "out").glob("*.dcm"))
    return sr


def _failed(sr: pydicom.Dataset, tmp_path: Path, version: str | None) -> dict[str, str]:
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    return {c.name: c.detail for c in check_sr(path, SampleStudy.read(sample_files()), version) if c.passed is False}


def _groups(sr: pydicom.Dataset) -> pydicom.Sequence:
    """The TID 1501 measurement groups: children of the Imaging Measurements container (126010)."""
    (measurements,) = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    return measurements.ContentSequence


def test_sr_checks_pass_on_the_apps_sr_and_fail_on_each_fault(app_sr: Path, model_package: Path, tmp_path: Path) -> None:
    version = ModelPackage.load(model_package).identity
    assert _failed(pydicom.dcmread(app_sr), tmp_path, version) == {}

    other_study = pydicom.dcmread(app_sr)
    other_study.StudyInstanceUID = pydicom.uid.generate_uid()
    assert set(_failed(other_study, tmp_path, version)) == {"study"}

    assert set(_failed(pydicom.dcmread(app_sr), tmp_path, "0.9.0 (weights sha256:0000)")) == {"model"}

    one_group_missing = pydicom.dcmread(app_sr)
    del _groups(one_group_missing)[0]
    assert "want exactly one per series" in _failed(one_group_missing, tmp_path, version)["findings"]

    not_an_sr = pydicom.dcmread(sample_files()[0])
    assert "not Comprehensive 3D SR Storage" in _failed(not_an_sr, tmp_path, version)["DICOM SR"]
