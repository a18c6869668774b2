"""``python -m app.smoke_test``: verify a deployment with the embedded sample study (app/sample_study.py).

    python -m app.smoke_test [-m MODELS]
        runs the installed app (``python app -i … -o … -m MODELS``, as a platform does) on the sample
        study in a temporary folder and checks the SR it writes;
    python -m app.smoke_test --listener HOST:PORT --pacs-port N [--calling-ae AE] [--listener-ae AE]
        pushes the sample study to a running listener by C-STORE and waits for the SR at a temporary
        Storage SCP on 127.0.0.1:N (the listener's ``destination`` must name it), then checks it.

Prints one PASS / FAIL / SKIP line per check (``app/smoke_test/checks.py``) and the verdict; exit
code 0 when every check ran passed, 1 otherwise. ``-m`` defaults to ``HOLOSCAN_MODEL_PATH`` (set in the
MAP image); with it, the SR's algorithm version must be the package's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.cli import MODEL_ENV
from app.sample_study import make_sample_study, sample_files
from app.smoke_test.checks import Check, SampleStudy, check_sr
from app.smoke_test.dicom_peers import SRReceiver, StudyPushFailed, push_study

APP_DIR = Path(__file__).resolve().parent.parent  # the ``app`` folder: ``python app`` runs its __main__.py
PASSED, FAILED = 0, 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.smoke_test", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", type=Path, default=os.environ.get(MODEL_ENV),
                   help=f"the model package (or the folder holding it); default ${MODEL_ENV}")
    p.add_argument("--listener", metavar="HOST:PORT", help="test a running listener instead of the app")
    p.add_argument("--listener-ae", default="BIOMEDCLIP", help="the listener's AE title (default BIOMEDCLIP)")
    p.add_argument("--calling-ae", default="SMOKETEST",
                   help="AE title the sample is sent from; the listener must allow it (default SMOKETEST)")
    p.add_argument("--pacs-host", default="127.0.0.1", help="address of the temporary Storage SCP (default 127.0.0.1)")
    p.add_argument("--pacs-port", type=int, help="port of the temporary Storage SCP the listener sends the SR to")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the SR (default 900)")
    return p


def expected_version(model: Path | None) -> str | None:
    """The version the SR must name: the package's identity (``ModelPackage.identity``), where known."""
    if model is None:
        return None
    from operators.inference.model_package import ModelPackage, ModelPackageError

    try:
        return ModelPackage.load(model, verify=False).identity
    except ModelPackageError:
        return None  # the app's own check reports a bad package; here only the version is wanted


def app_route(model: Path, work: Path, timeout_s: float) -> tuple[list[Check], Path | None]:
    """Run the app as a platform does on a copy of the sample study; the run's check and its SR."""
    study, output = work / "input", work / "output"
    make_sample_study(study)
    command = [sys.executable, str(APP_DIR), "-i", str(study), "-o", str(output), "-m", str(model)]
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [Check("app run", False, f"no result within {timeout_s:.0f} s")], None
    took = time.monotonic() - started
    srs = sorted(output.glob("*.dcm"))
    if result.returncode != 0 or len(srs) != 1:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "no message")
        return [Check("app run", False, f"exit code {result.returncode}, {len(srs)} SR(s) written: {reason}")], None
    return [Check("app run", True, f"exit code 0, one SR written in {took:.0f} s")], srs[0]


def listener_route(args: argparse.Namespace, sample: SampleStudy, work: Path) -> tuple[list[Check], Path | None]:
    """Push the sample study to the listener; wait for its SR at a temporary Storage SCP."""
    host, _, port = args.listener.rpartition(":")
    try:
        receiver = SRReceiver(work, args.pacs_host, args.pacs_port)
    except OSError as exc:
        return [Check("SR receiver", False, f"cannot listen on {args.pacs_host}:{args.pacs_port} ({exc.strerror})")], None
    try:
        started = time.monotonic()
        try:
            push_study(sample_files(), host.strip("[]"), int(port), args.listener_ae, args.calling_ae, min(args.timeout, 60.0))
        except StudyPushFailed as exc:
            return [Check("push", False, str(exc))], None
        checks = [Check("push", True, f"{len(sample.series_of_instance)} instances stored by {args.listener_ae}@{args.listener}")]
        sr = receiver.wait_for_sr_of(sample.study_instance_uid, args.timeout)
        if sr is None:
            why = f"none at {args.pacs_host}:{args.pacs_port} within {args.timeout:.0f} s; see the listener's log and output folder"
            return [*checks, Check("SR returned", False, why)], None
        took = time.monotonic() - started
        return [*checks, Check("SR returned", True, f"by C-STORE to {args.pacs_host}:{args.pacs_port} after {took:.0f} s")], sr
    finally:
        receiver.stop()


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.listener is None and args.model is None:
        p.error(f"-m MODELS is required (or {MODEL_ENV})")
    if args.listener is not None and (args.pacs_port is None or not args.listener.rpartition(":")[2].isdigit()):
        p.error("--listener HOST:PORT needs a numeric port and --pacs-port")
    sample = SampleStudy.read(sample_files())
    with tempfile.TemporaryDirectory(prefix="biomedclip-smoke-") as folder:
        if args.listener is None:
            print(f"smoke test: python {APP_DIR} -i SAMPLE -o OUT -m {args.model}")
            checks, sr = app_route(args.model, Path(folder), args.timeout)
        else:
            print(f"smoke test: sample study -> {args.listener_ae}@{args.listener}, SR <- {args.pacs_host}:{args.pacs_port}")
            checks, sr = listener_route(args, sample, Path(folder))
        if sr is not None:
            checks += check_sr(sr, sample, expected_version(args.model))
    for check in checks:
        print(check.line())
    failed = [check for check in checks if check.passed is False]
    print(f"FAIL ({len(failed)} of {len(checks)} checks failed)" if failed else "PASS")
    return FAILED if failed else PASSED


if __name__ == "__main__":
    sys.exit(main())
