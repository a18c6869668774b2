"""The exit codes of ``python app``, defined once: ``app/__main__.py`` returns them, the listener's
jobs (``app/listener/jobs.py``) read them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """README "Exit codes":

    - 0, none failed: an SR was written for every study with a usable image, and no input file was
      refused;
    - 3, some failed: SRs were written, but some files were refused (each with its reason in
      ``OUTPUT/run_report.json``; one summary line on stderr);
    - 2, all failed: no SR written — nothing in the input was usable — or an argument, input folder,
      output folder, settings file or model package that cannot work (one ``error:`` line on stderr,
      ``app/cli.py``; checked before anything runs, the output folder left as it was); re-running
      unchanged cannot help;
    - 4, inference server lost: the Triton server (``-t``) stopped answering during the run; no SR
      written, the input untouched, one ``error:`` line; running the study again can succeed (the
      listener retries it, as it does any exit but 0, 2 and 3);
    - 1, an unexpected error (traceback; run_report.json says ``failed``): Python's own status for an
      uncaught exception, so no member.

    Files outside the app's scope (not DICOM, non-image SOP classes, duplicates, series not selected)
    are listed as skipped or not used and are not failures.
    """

    NONE_FAILED = 0
    ALL_FAILED = 2
    SOME_FAILED = 3
    SERVER_LOST = 4
