"""The full app on the PHI-injected corpus: the SR is filed into each original study, while the operators after
de-identification never see an original identifier, and no marker reaches the logs or the run report."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from tests.conftest import ROOT, tree_digest
from tests.integration.test_deidentification_leaks import BURNED_IN_US
from tests.support.phi_corpus import make_phi_corpus


def _strings(value: object) -> str:
    """Every string inside a recorded operator input (datasets walked, dataclasses by their fields)."""
    if isinstance(value, pydicom.Dataset):
        parts: list[str] = []
        value.walk(lambda _, elem: parts.append(repr(elem.value)) if elem.VR != "SQ" else None)
        return "\n".join(parts)
    if isinstance(value, (list, tuple)):
        return "\n".join(_strings(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return "\n".join(_strings(getattr(value, name)) for name in value.__dataclass_fields__)
    return repr(value)


@pytest.fixture(scope="module")
def app_run(model_package: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("app")
    corpus = make_phi_corpus(folder / "input")
    shutil.copyfile(BURNED_IN_US, folder / "input" / "burned_in_us.dcm")
    before = tree_digest(folder / "input")
    probe = folder / "probe.pickle"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "app_probe.py"), "-i", str(folder / "input"), "-o", str(folder / "out"), "-m", str(model_package)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "APP_PROBE_OUT": str(probe), "BIOMEDCLIP_DEID_SECRET": "app-test"},
    )
    # 3 = some inputs refused (the burned-in ultrasound), the rest reported on (README's exit codes)
    assert result.returncode == 3, result.stderr[-3000:]
    assert tree_digest(folder / "input") == before, "the input folder was modified"
    return corpus, result, folder / "out", pickle.loads(probe.read_bytes())


def test_operators_after_deidentification_never_see_an_original_identifier(app_run) -> None:
    corpus, _, _, seen = app_run
    assert seen["preprocessing"] and seen["inference"]
    assert corpus.found_in(_strings(seen["preprocessing"])) == set()
    assert corpus.found_in(_strings(seen["inference"])) == set()
    for _, _, datasets in seen["preprocessing"]:
        assert all(ds.PatientIdentityRemoved == "YES" for ds in datasets)


def test_no_marker_in_logs_or_run_report(app_run) -> None:
    corpus, result, out, _ = app_run
    assert corpus.found_in(result.stdout + result.stderr) == set()
    assert corpus.found_in((out / "run_report.json").read_text()) == set()


def test_burned_in_image_refused_with_the_reason_in_the_run_report(app_run) -> None:
    _, _, out, _ = app_run
    report = json.loads((out / "run_report.json").read_text())
    assert report["files"]["burned_in_us.dcm"] == {
        "status": "refused",
        "reason": "refused by de-identification: Burned In Annotation (0028,0301) is YES; pixel data is not cleaned "
        "(a site may accept with deidentification.accept_burned_in_annotation)",
    }


def test_each_sr_is_filed_into_its_original_study(app_run) -> None:
    corpus, _, out, _ = app_run
    originals = [pydicom.dcmread(p, stop_before_pixels=True) for p in corpus.files]
    srs = [hd.sr.srread(p) for p in sorted(out.glob("*.dcm"))]
    report = json.loads((out / "run_report.json").read_text())
    assert len(srs) == report["summary"]["structured_reports"] >= 3
    for sr in srs:
        study = [ds for ds in originals if ds.StudyInstanceUID == sr.StudyInstanceUID]
        assert study, "the SR is filed into an original study"
        assert sr.PatientID == study[0].PatientID and sr.PatientName == study[0].PatientName
        assert sr.AccessionNumber == study[0].AccessionNumber
        evidence = {ref.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in s.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
        assert evidence and evidence <= {ds.SOPInstanceUID for ds in study}
