"""``python app -i INPUT -o OUTPUT -m MODELS`` (or HOLOSCAN_INPUT_PATH / _OUTPUT_PATH / _MODEL_PATH).

Exit codes: ``app.exit_codes.ExitCode`` (README "Exit codes").
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.application import BiomedCLIPZeroShotApp  # noqa: E402
from app.exit_codes import ExitCode  # noqa: E402
from operators.inference.model_package import ModelPackageError  # noqa: E402
from operators.run_report import REPORT_NAME  # noqa: E402


def main() -> int:
    app = BiomedCLIPZeroShotApp()
    try:
        app.run()
    except ModelPackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.ALL_FAILED
    summary = app.report.summary()
    if app.output_path is None:  # compose() sets it before anything runs
        raise RuntimeError("the application ran without an output folder")
    report_path = app.output_path / REPORT_NAME
    if summary["structured_reports"] == 0:
        print(
            f"error: no usable image in the input: {summary['files']} file(s), {summary['skipped']} skipped, "
            f"{summary['refused']} refused, {summary['not_used']} not selected; see {report_path}",
            file=sys.stderr,
        )
        return ExitCode.ALL_FAILED
    for path in app.report.outputs:
        print(f"SR written: {path}")
    print(f"run report: {report_path}")
    if summary["refused"]:
        print(f"warning: {summary['refused']} of {summary['files']} input file(s) refused; reasons in {report_path}", file=sys.stderr)
        return ExitCode.SOME_FAILED
    return ExitCode.NONE_FAILED


if __name__ == "__main__":
    sys.exit(main())
