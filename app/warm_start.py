"""What every MAP job does before its first image, done once: importing this module is the preload of
the listener's job process (``app/listener/jobs.py``), from which each job is forked.

A fresh ``python app -t ...`` spends ~3 s on a quiet 2-core machine before it reads a file: imports
(Holoscan, the SDK the lean way, pydicom, highdicom, tritonclient: ~1.3 s) and the SR writer's warm-up
(highdicom's module tables, ~0.7 s). A job forked from a process that has done both starts at its
arguments. Nothing here holds a thread, a socket or a model: a job still connects, checks the model
package and the server itself, as ``python app`` does.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def warm() -> None:
    from app.sdk_imports import import_sdk_lean

    import_sdk_lean()  # before anything imports the SDK, as in app/__main__.py
    import tritonclient.http  # noqa: F401  (imported by the Triton backend at connection)

    import app.__main__  # noqa: F401  (the job's entry point)
    import app.application  # noqa: F401  (Holoscan, the SDK, the operators, highdicom)
    import app.settings  # noqa: F401
    import operators.inference.backends.registry  # noqa: F401
    import operators.sr.predecessor  # noqa: F401
    from operators.sr.structured_report import warm_up

    warm_up()


try:
    warm()
except Exception:  # the process still forks the jobs, cold: each fails or not on its own, in its own app.log
    logger.exception("Warm start failed; MAP jobs start cold")
