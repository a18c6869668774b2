"""The listener's MAP jobs (``app/listener/jobs.py``): each forked from the warm process, with the app's
own exit code, log and output folder; one past its time limit is killed and its output kept aside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom

from app.exit_codes import ExitCode
from app.listener.jobs import APP_LOG, MapJob
from operators.run_report import REPORT_NAME
from tests.support.listener_peers import map_jobs

ROOT = Path(__file__).resolve().parents[2]


def test_a_job_forked_warm_writes_the_sr_and_the_apps_log_and_exit_code(fp32_model_package: Path, sample_study: Path, tmp_path: Path) -> None:
    job = MapJob(fp32_model_package, tmp_path / "output", timeout_s=600)
    job.start()
    outcome = job.run("20261130T000000-00000001", sample_study, urgent=True)

    assert outcome.exit_code == ExitCode.NONE_FAILED and outcome.succeeded
    assert outcome.output == (tmp_path / "output" / "20261130T000000-00000001").resolve()
    assert not list((tmp_path / "output").glob(".*.partial")), "the staged folder was renamed once the job exited"
    (sr,) = outcome.srs
    assert pydicom.dcmread(outcome.output / sr).Modality == "SR"
    log = (outcome.output / APP_LOG).read_text()
    staged = outcome.output.with_name(f".{outcome.output.name}.partial")
    assert f"SR written: {staged / sr}" in log, "the job's stdout is its app.log (the SR was written while staged)"
    report = json.loads((outcome.output / REPORT_NAME).read_text())
    assert report["priority"] == "urgent"
    assert report["timings_s"]["write_sr_warm_up"] < 0.01, "forked warm: highdicom's tables were loaded before the job"

    refused = job.run("20261130T000000-00000002", tmp_path / "no such study")
    assert refused.exit_code == ExitCode.ALL_FAILED and not refused.retryable
    assert "error:" in (refused.output / APP_LOG).read_text(), "the app's one-line error is in the job's log"


def test_a_job_past_its_time_limit_is_killed_and_its_output_set_aside(fp32_model_package: Path, sample_study: Path, tmp_path: Path) -> None:
    job = MapJob(fp32_model_package, tmp_path / "output", timeout_s=1.0)  # the local model alone takes longer to load
    job.start()
    outcome = job.run("20261130T000000-00000003", sample_study)

    assert outcome.exit_code is None and outcome.retryable and not outcome.srs
    assert outcome.output.is_dir() and not list((tmp_path / "output").glob(".*.partial"))
    assert map_jobs(os.getpid()) == [], "the killed job is gone"


def test_the_warm_process_imports_no_model_runtime() -> None:
    """What the jobs are forked from stays small: no torch, ONNX Runtime or open_clip (a ``-t`` job needs none)."""
    result = _import_warm_start("")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    assert "Warm start failed" not in result.stderr


def test_a_warm_start_that_fails_leaves_a_process_that_still_forks_the_jobs() -> None:
    """multiprocessing's forkserver dies on a preload error other than ImportError, and every job with it;
    a failed warm start is logged once instead, and the jobs start cold and report for themselves."""
    result = _import_warm_start("sys.modules['highdicom'] = None; ")  # import highdicom fails
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Warm start failed; MAP jobs start cold" in result.stderr


def _import_warm_start(prelude: str) -> subprocess.CompletedProcess:
    probe = f"import sys; {prelude}import app.warm_start; print(sorted(m for m in ('torch', 'onnxruntime', 'open_clip') if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
