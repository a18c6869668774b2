"""``python app -i INPUT -o OUTPUT -m MODELS`` (or HOLOSCAN_INPUT_PATH / _OUTPUT_PATH / _MODEL_PATH).

Exit codes (README "Exit codes"):
0 = none failed: an SR was written for every study with a usable image, and no input file was refused;
3 = some failed: SRs were written, but some files were refused (each with its reason in
    OUTPUT/run_report.json; one summary line on stderr);
2 = all failed: no SR written — nothing usable in the input — or no usable model package (one-line
    reason on stderr);
1 = an unexpected error (traceback).
Files outside the app's scope (not DICOM, non-image SOP classes, duplicates, series not selected)
are listed as skipped or not used and are not failures.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.application import REPORT_NAME, BiomedCLIPZeroShotApp  # noqa: E402
from operators.inference.model_package import ModelPackageError  # noqa: E402

EXIT_NONE_FAILED = 0
EXIT_UNEXPECTED_ERROR = 1
EXIT_ALL_FAILED = 2
EXIT_SOME_FAILED = 3


def main() -> int:
    app = BiomedCLIPZeroShotApp()
    try:
        app.run()
    except ModelPackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ALL_FAILED
    summary = app.report.summary()
    report_path = app.output_path / REPORT_NAME
    if summary["structured_reports"] == 0:
        print(
            f"error: no usable image in the input: {summary['files']} file(s), {summary['skipped']} skipped, "
            f"{summary['refused']} refused, {summary['not_used']} not selected; see {report_path}",
            file=sys.stderr,
        )
        return EXIT_ALL_FAILED
    for path in app.report.outputs:
        print(f"SR written: {path}")
    print(f"run report: {report_path}")
    if summary["refused"]:
        print(f"warning: {summary['refused']} of {summary['files']} input file(s) refused; reasons in {report_path}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_NONE_FAILED


if __name__ == "__main__":
    sys.exit(main())
