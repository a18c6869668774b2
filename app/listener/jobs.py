"""One job per arrival: the MAP application run on the spooled study, as a platform would run it
(``python app -i STUDY -o OUT -m MODELS [-t TRITON] [--priority urgent]``; exit codes:
``app.exit_codes.ExitCode``), in a process of its own.

That process is forked from a warm one (multiprocessing's forkserver, preloaded with
``app/warm_start.py``), not started cold: the ~3 s a fresh ``python app`` spends on imports and
highdicom's tables before it reads a file is spent once, when the listener starts. Each job still has
its own address space and exit code, and its own log (``app.log``). It is named ``map-job`` (comm, as
``ps`` shows it) and gets SIGKILL if the process it was forked from dies, which happens when the
listener dies: a crashed listener leaves no job running that could race the re-run.

The job writes into ``OUTPUT/.<arrival>.partial`` and the folder is renamed to ``OUTPUT/<arrival>``
only when the application has exited, so a reader never sees a half-written result. A routine job
runs at niceness ``ROUTINE_NICENESS``, so on a host whose cores are all busy an urgent job
(``urgency.py``) gets them first, as its requests get Triton's higher priority level, and the
listener's own reception stays responsive.
"""

from __future__ import annotations

import ctypes
import errno
import json
import multiprocessing
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from multiprocessing import forkserver
from pathlib import Path

from app.cli import URGENT
from app.exit_codes import ExitCode
from operators.atomic import fsync_folder
from operators.run_report import REPORT_NAME

APP_DIR = Path(__file__).resolve().parent.parent
APP_LOG = "app.log"
#: The name a job process shows (prctl(2) PR_SET_NAME; at most 15 bytes).
JOB_PROCESS_NAME = "map-job"
#: Exit codes after which the SRs written are delivered: some files refused (3) still leaves the
#: SRs of every study with a usable image, each with what was refused in its run report.
SR_WRITTEN = frozenset({ExitCode.NONE_FAILED, ExitCode.SOME_FAILED})
#: A routine job's CPU priority below the listener's and an urgent job's (nice(1); raising one needs privileges).
ROUTINE_NICENESS = 10
#: The module the job processes' forkserver imports once (``app/warm_start.py``).
WARM_START = "app.warm_start"
#: Where the job processes (and the prefetch process, ``prefetch.py``) come from: forks of the warm process.
JOB_CONTEXT = multiprocessing.get_context("forkserver")
_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15  # <linux/prctl.h>


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

    def start(self) -> None:
        """Start the warm process the jobs are forked from; it warms up (~2 s) beside the listener's start,
        not inside the first study."""
        JOB_CONTEXT.set_forkserver_preload([WARM_START])
        forkserver.ensure_running()

    def arguments(self, study: Path, output: Path, predecessor: Path | None = None, urgent: bool = False) -> list[str]:
        """The job's ``python app`` arguments."""
        app = ["-i", str(study), "-o", str(output), "-m", str(self.model_dir)]
        if self.triton_server:
            app += ["-t", self.triton_server]
        if predecessor is not None:  # the earlier SR of the study, which this run's SR supersedes
            app += ["--supersedes", str(predecessor)]
        if urgent:  # Triton's higher priority level for its requests (urgency.py)
            app += ["--priority", URGENT]
        return app

    def run(self, arrival_id: str, study: Path, predecessor: Path | None = None, urgent: bool = False) -> JobOutcome:
        """Run the application once on ``study`` (its SR superseding the SR file ``predecessor``, if given;
        ``urgent``: the study matched the ``urgent`` rule)."""
        staging = self.output_dir / f".{arrival_id}.partial"
        final = self.output_dir / arrival_id
        for stale in (staging, final):  # an earlier attempt's leftovers; nothing of them was delivered
            shutil.rmtree(stale, ignore_errors=True)
        staging.mkdir(parents=True)
        niceness = 0 if urgent else ROUTINE_NICENESS
        process = JOB_CONTEXT.Process(target=run_application, name=JOB_PROCESS_NAME,
                                          args=(self.arguments(study, staging, predecessor, urgent), staging / APP_LOG, niceness))
        try:
            process.start()
        except EOFError as exc:  # the forkserver died while answering: the job loop retries later
            raise OSError(errno.ECHILD, "the job process could not be forked") from exc
        process.join(self.timeout_s)
        exit_code = process.exitcode
        if exit_code is None:  # still running at the time limit
            process.kill()
            process.join()
        process.close()
        staging.rename(final)
        fsync_folder(self.output_dir)  # the rename is durable before the journal says the job finished
        if exit_code not in SR_WRITTEN:
            return JobOutcome(exit_code, final, ())
        return JobOutcome(exit_code, final, tuple(sorted(p.name for p in final.glob("*.dcm"))), refused_files(final))


def run_application(arguments: list[str], log: Path, niceness: int) -> None:
    """The job process: ``python app ARGUMENTS``, its stdout and stderr into ``log``."""
    die_with_parent(JOB_PROCESS_NAME)
    os.nice(niceness)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for stream in (1, 2):
        os.dup2(fd, stream)
    os.close(fd)
    sys.argv = [str(APP_DIR), *arguments]
    from app.__main__ import main

    sys.exit(main())


def die_with_parent(name: str) -> None:
    """In a process forked from the warm one: SIGKILL when that dies (as it does when the listener dies), and
    ``name`` as its comm (at most 15 bytes)."""
    forked_from = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != forked_from:  # it died before the line above: the listener is gone
        os.kill(os.getpid(), signal.SIGKILL)
    libc.prctl(_PR_SET_NAME, name.encode())


def refused_files(output: Path) -> int:
    """How many input files the run report lists as refused (0 if it cannot be read)."""
    try:
        return int(json.loads((output / REPORT_NAME).read_text())["summary"]["refused"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
