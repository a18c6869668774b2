"""``python app -i INPUT -o OUTPUT -m MODELS`` (or HOLOSCAN_INPUT_PATH / _OUTPUT_PATH / _MODEL_PATH).

Exit codes: 0 = an SR was written for every study with a usable image (skipped files are listed in
OUTPUT/run_report.json); 2 = nothing usable in the input or no usable model package (one-line reason
on stderr); 1 = an unexpected error (traceback).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.application import REPORT_NAME, BiomedCLIPZeroShotApp  # noqa: E402
from operators.model_package import ModelPackageError  # noqa: E402


def main() -> int:
    app = BiomedCLIPZeroShotApp()
    try:
        app.run()
    except ModelPackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = app.report.summary()
    if summary["structured_reports"] == 0:
        print(
            f"error: no usable image in the input: {summary['files']} file(s), {summary['skipped']} skipped, "
            f"{summary['not_used']} not selected; see {app.output_path / REPORT_NAME}",
            file=sys.stderr,
        )
        return 2
    for path in app.report.outputs:
        print(f"SR written: {path}")
    print(f"run report: {app.output_path / REPORT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
