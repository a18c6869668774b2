"""The command line of ``python app``: its options, and the checks made before anything runs.

The MONAI Deploy SDK parses ``-i/-o/-m`` itself (``monai.deploy.core.arg_parser``), after Holoscan's
C++ constructor has answered ``--help`` and ``--version`` with its own distributed-run options and
version 0.0.0. This parser runs first, in ``app/__main__.py``, before Holoscan is imported: it answers
``--help`` and ``--version``, refuses what cannot work with one ``error: ...`` line and exit code 2,
and hands the SDK only the options it validated. Nothing is written to the output folder here except
a probe file, removed at once.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from app import __version__
from app.exit_codes import ExitCode

#: The SDK's environment variables for the three folders (``monai.deploy.core.runtime_env``).
INPUT_ENV, OUTPUT_ENV, MODEL_ENV = "HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH", "HOLOSCAN_MODEL_PATH"
#: The SDK's Triton server address (``monai.deploy.core.runtime_env``; ``-t``/``--triton-server-netloc``).
TRITON_ENV = "TRITON_SERVER_NETLOC"
#: ``--priority``: an urgent study's image batches go at Triton's higher priority level (docs/listener.md).
ROUTINE, URGENT = "routine", "urgent"
#: HOST:PORT: a host name, an IPv4 address or a bracketed IPv6 address, and a port.
NETLOC = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>[0-9]{1,5})")

EPILOG = f"""\
environment:
  {INPUT_ENV}, {OUTPUT_ENV}, {MODEL_ENV}
                        the three folders, where -i, -o, -m are not given
  {TRITON_ENV}  the Triton server, where -t is not given
  BIOMEDCLIP_APP_CONFIG the settings file (default app/config/app.json)
  BIOMEDCLIP_DEID_SECRET the site's UID key (the variable named by deidentification.secret_env)

exit codes:
  0  an SR for every study with a usable image, no file refused
  3  SRs written, some files refused (reasons in OUTPUT/run_report.json)
  2  nothing usable: no SR written, or unusable input, output, model package or Triton server (one-line reason)
  4  the Triton server was lost during the run: no SR written, run it again
  1  an unexpected error (traceback)
"""


class UsageError(Exception):
    """An argument that cannot work; the message is one line naming the option or folder."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """argparse prints usage and exits 2 on its own; print the one line the README promises instead."""
        raise UsageError(f"{message} (see python app --help)")


@dataclass(frozen=True)
class RunArguments:
    input: Path
    output: Path
    model: Path
    log_level: str | None
    #: An earlier SR that the new SR of its study supersedes (``operators/sr/predecessor.py``).
    supersedes: Path | None = None
    triton_server: str | None = None  # HOST:PORT (-t): the image encoder runs there
    priority: str = ROUTINE  # --priority

    def sdk_argv(self, program: str) -> list[str]:
        """The argv for Holoscan's ``Application(argv)``: the interpreter first (Holoscan drops it, as it
        does for its default ``[sys.executable, *sys.argv]``), then ``program`` and only the options
        checked here, which the SDK's ``init_app_context`` parses again."""
        argv = [sys.executable, program, "-i", str(self.input), "-o", str(self.output), "-m", str(self.model)]
        return argv + (["-l", self.log_level] if self.log_level else [])


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python app",
        description="BiomedCLIP zero-shot classification of a DICOM study folder; writes one DICOM SR "
        "(TID 1500) per study and run_report.json. Research use only.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--input", metavar="INPUT_DIR",
                   help=f"folder holding the study's DICOM files (or {INPUT_ENV}); never modified")
    p.add_argument("-o", "--output", metavar="OUTPUT_DIR",
                   help=f"folder for the SRs and run_report.json (or {OUTPUT_ENV}); created if missing")
    p.add_argument("-m", "--model", metavar="MODEL_DIR",
                   help=f"the model package built by scripts/build_model.py (or {MODEL_ENV})")
    p.add_argument("--supersedes", metavar="EARLIER_SR", type=Path,
                   help="an earlier SR of the study: the new SR replaces it (same series, Predecessor Documents Sequence)")
    p.add_argument("-t", "--triton-server-netloc", metavar="HOST:PORT",
                   help=f"run the image encoder on this Triton server's HTTP endpoint (or {TRITON_ENV}): "
                        "python -m app.inference_server, or NVIDIA's Triton container; no weights loaded here")
    p.add_argument("--priority", choices=[ROUTINE, URGENT], default=ROUTINE,
                   help="urgent: the Triton server (-t) serves this study's requests before routine ones (its priority level 1); "
                        "recorded in run_report.json (default routine)")
    p.add_argument("-l", "--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARN", "ERROR", "CRITICAL"], help="logging level")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _folder(value: str | None, what: str, option: str, env: str) -> Path:
    """The option, else the SDK's environment variable; no silent default (the SDK's would be ./input,
    ./output and ./models, so that a bare ``python app`` overwrote ./output/run_report.json)."""
    value = value or os.environ.get(env)
    if not value:
        raise UsageError(f"no {what} folder: give {option} or set {env} (see python app --help)")
    return Path(value).absolute()


def _check_input(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path}: input folder not found")
    if not path.is_dir():
        raise UsageError(f"{path}: the input is a file; give the folder that holds the study (-i)")


def _check_output(path: Path) -> None:
    """Create the folder if missing and write (then remove) a probe file, so that a read-only folder is
    found now rather than after the whole pipeline ran. A probe rather than ``os.access``: root passes
    ``os.access`` on read-only mounts and immutable folders."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: the output is a file, not a folder (-o)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{path}: cannot write to the output folder ({exc.strerror})") from None


def triton_server_netloc(value: str | None) -> str | None:
    """The option, else ``TRITON_SERVER_NETLOC``; empty means none (the SDK's default)."""
    value = value if value is not None else os.environ.get(TRITON_ENV, "")
    if not value:
        return None
    match = NETLOC.fullmatch(value)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise UsageError(f"-t {value!r}: expected HOST:PORT, the Triton server's HTTP address (e.g. 127.0.0.1:8000)")
    return value


def parse(argv: list[str]) -> RunArguments:
    """``argv`` without the program name. ``--help``/``--version`` print and exit 0 (argparse); every
    other problem raises ``UsageError``."""
    args = parser().parse_args(argv)
    input_path = _folder(args.input, "input", "-i INPUT_DIR", INPUT_ENV)
    output_path = _folder(args.output, "output", "-o OUTPUT_DIR", OUTPUT_ENV)
    model_path = _folder(args.model, "model package", "-m MODEL_DIR", MODEL_ENV)
    triton_server = triton_server_netloc(args.triton_server_netloc)
    _check_input(input_path)
    _check_output(output_path)
    return RunArguments(input_path, output_path, model_path, args.log_level, args.supersedes, triton_server, args.priority)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return ExitCode.ALL_FAILED
