"""One job per arrival: the MAP application run as a subprocess on the spooled study, as a platform
would run it (``python app -i STUDY -o OUT -m MODELS [-t TRITON] [--priority urgent]``; exit codes:
``app.exit_codes.ExitCode``).

The job writes into ``OUTPUT/.<arrival>.partial`` and the folder is renamed to ``OUTPUT/<arrival>``
only when the application has exited, so a reader never sees a half-written result. The child gets
SIGKILL if the listener dies (``setpriv --pdeathsig``), so a crashed listener leaves no job running
that could race the re-run. A routine job runs at niceness ``ROUTINE_NICENESS`` (``nice``), so on a host
whose cores are all busy an urgent job (``urgency.py``) gets them first, as its requests get Triton's
higher priority level, and the listener's own reception stays responsive.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from app.cli import URGENT
from app.exit_codes import ExitCode
from operators.atomic import fsync_folder
from operators.run_report import REPORT_NAME

APP_DIR = Path(__file__).resolve().parent.parent
APP_LOG = "app.log"
#: Exit codes after which the SRs written are delivered: some files refused (3) still leaves the
#: SRs of every study with a usable image, each with what was refused in its run report.
SR_WRITTEN = frozenset({ExitCode.NONE_FAILED, ExitCode.SOME_FAILED})
#: A routine job's CPU priority below the listener's and an urgent job's (nice(1); raising one needs privileges).
ROUTINE_NICENESS = 10


@dataclass(frozen=True)
class JobOutcome:
    exit_code: int | None  # None: killed at the time limit
    output: Path
    srs: tuple[str, ...]
    #: Input files the application refused (its run report's summary); 0 unless the exit code is 3.
    refused: int = 0

    @property
    def succeeded(self) -> bool:
        return self.exit_code in SR_WRITTEN and bool(self.srs)

    @property
    def retryable(self) -> bool:
        return not self.succeeded and self.exit_code != ExitCode.ALL_FAILED  # nothing usable: re-running cannot help


class MapJob:
    def __init__(self, model_dir: Path, output_dir: Path, timeout_s: float, triton_server: str | None = None) -> None:
        self.model_dir = Path(model_dir).resolve()
        self.output_dir = Path(output_dir).resolve()
        self.timeout_s = timeout_s
        self.triton_server = triton_server

    def command(self, study: Path, output: Path, predecessor: Path | None = None, urgent: bool = False) -> list[str]:
        app = [sys.executable, str(APP_DIR), "-i", str(study), "-o", str(output), "-m", str(self.model_dir)]
        if self.triton_server:
            app += ["-t", self.triton_server]
        if predecessor is not None:  # the earlier SR of the study, which this run's SR supersedes
            app += ["--supersedes", str(predecessor)]
        if urgent:  # Triton's higher priority level for its requests (urgency.py)
            app += ["--priority", URGENT]
        setpriv, nice = shutil.which("setpriv"), shutil.which("nice")
        command = [setpriv, "--pdeathsig", "KILL", "--", *app] if setpriv else app
        return command if urgent or not nice else [nice, "-n", str(ROUTINE_NICENESS), *command]

    def run(self, arrival_id: str, study: Path, predecessor: Path | None = None, urgent: bool = False) -> JobOutcome:
        """Run the application once on ``study`` (its SR superseding the SR file ``predecessor``, if given;
        ``urgent``: the study matched the ``urgent`` rule).
        Call from a thread that lives as long as the listener: the parent-death signal follows the thread
        that started the child."""
        staging = self.output_dir / f".{arrival_id}.partial"
        final = self.output_dir / arrival_id
        for stale in (staging, final):  # an earlier attempt's leftovers; nothing of them was delivered
            shutil.rmtree(stale, ignore_errors=True)
        staging.mkdir(parents=True)
        with open(staging / APP_LOG, "wb") as log:
            process = subprocess.Popen(self.command(study, staging, predecessor, urgent), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT)
            try:
                exit_code: int | None = process.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                exit_code = None
        staging.rename(final)
        fsync_folder(self.output_dir)  # the rename is durable before the journal says the job finished
        if exit_code not in SR_WRITTEN:
            return JobOutcome(exit_code, final, ())
        return JobOutcome(exit_code, final, tuple(sorted(p.name for p in final.glob("*.dcm"))), refused_files(final))


def refused_files(output: Path) -> int:
    """How many input files the run report lists as refused (0 if it cannot be read)."""
    try:
        return int(json.loads((output / REPORT_NAME).read_text())["summary"]["refused"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
