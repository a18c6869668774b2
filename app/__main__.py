"""``python app -i INPUT -o OUTPUT -m MODELS`` (or HOLOSCAN_INPUT_PATH / _OUTPUT_PATH / _MODEL_PATH).

Arguments, settings and the model package are checked before Holoscan is even imported: a problem
there is one ``error:`` line, exit code 2, and nothing written to the output folder. Once the graph
runs, ``run_report.json`` is always written, with its ``status`` and ``error``.
Exit codes: ``app.exit_codes.ExitCode`` (README "Exit codes").
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import cli  # noqa: E402
from app.exit_codes import ExitCode  # noqa: E402

if TYPE_CHECKING:
    from operators.run_report import RunReport


def main() -> int:
    try:
        arguments = cli.parse(sys.argv[1:])
    except cli.UsageError as exc:
        return cli.fail(str(exc))

    # imported only now, so that --help and argument errors answer at once
    from app.settings import AppSettings, SettingsError
    from operators.inference.backends.base import BackendSpec, BackendUnavailable, ImageEmbeddingBackend
    from operators.inference.backends.registry import create_backend
    from operators.inference.backends.triton import ServerLost
    from operators.inference.model_package import ModelPackage, ModelPackageError
    from operators.run_report import REPORT_NAME
    from operators.sr.predecessor import PredecessorError, PredecessorSR

    try:
        settings = AppSettings.load()
        predecessor = PredecessorSR.read(arguments.supersedes) if arguments.supersedes else None
        package = ModelPackage.load(arguments.model)
    except (SettingsError, ModelPackageError, PredecessorError) as exc:
        return cli.fail(str(exc))

    backend: BackendSpec | ImageEmbeddingBackend = settings.backend
    if arguments.triton_server:  # checked now, so that an unusable server is one line and exit 2 before anything runs
        try:
            backend = create_backend(replace(settings.backend, triton_server=arguments.triton_server,
                                             urgent=arguments.priority == cli.URGENT), package)
        except BackendUnavailable as exc:
            return cli.fail(str(exc))

    from app.sdk_imports import import_sdk_lean

    import_sdk_lean()  # the SDK without MONAI core and torch: seconds less
    from app.application import BiomedCLIPZeroShotApp  # imports Holoscan

    app = BiomedCLIPZeroShotApp(arguments.sdk_argv(sys.argv[0]), settings=settings, package=package, backend=backend,
                                predecessor=predecessor)
    app.report.priority = arguments.priority
    report_path = arguments.output / REPORT_NAME
    try:
        app.run()
    except ServerLost as exc:  # nothing written; running the study again can succeed (the listener retries it)
        app.report.fail(str(exc))
        app.report.write(report_path)
        cli.fail(f"{exc}; see {report_path}")
        return ExitCode.SERVER_LOST
    except (ModelPackageError, BackendUnavailable) as exc:  # no backend could load the package: our one-line messages
        app.report.fail(str(exc))
    except BaseException as exc:
        app.report.fail(f"unexpected error ({type(exc).__name__}); the traceback is on stderr")
        app.report.write(report_path)
        raise
    app.report.write(report_path)
    return exit_status(app.report, report_path)


def exit_status(report: RunReport, report_path: Path) -> int:
    """Print the outcome (SRs on stdout, the error or the refusals on stderr) and return the exit code."""
    from operators.run_report import COMPLETED_WITH_REFUSALS, FAILED

    if report.status == FAILED:
        return cli.fail(f"{report.error}; see {report_path}")
    for path in report.outputs:
        print(f"SR written: {path}")
    print(f"run report: {report_path}")
    if report.status == COMPLETED_WITH_REFUSALS:
        summary = report.summary()
        print(f"warning: {summary['refused']} of {summary['files']} input file(s) refused; reasons in {report_path}", file=sys.stderr)
        return ExitCode.SOME_FAILED
    return ExitCode.NONE_FAILED


if __name__ == "__main__":
    sys.exit(main())
