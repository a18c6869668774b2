"""``scripts/validate_model.py`` on a study folder with files it cannot use: progress bars and one summary
line of the skipped files on stderr, the fidelity result (JSON) on stdout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_progress_and_one_line_summary_of_skipped_files(sample_study: Path, model_package: Path) -> None:
    (sample_study / "notes.txt").write_text("not DICOM")
    first = next(path for path in sorted(sample_study.rglob("*")) if path.is_file() and path.suffix != ".txt")
    shutil.copyfile(first, sample_study / "copy-of-first")
    files = sum(path.is_file() for path in sample_study.rglob("*"))

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "validate_model.py"), str(sample_study), "-m", str(model_package),
         "--precision", "fp32"],
        capture_output=True, text=True, timeout=600,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    summary = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
    assert summary == [f"skipped: 2 of {files} file(s): 1 duplicate SOP Instance UID, 1 not a DICOM file"]
    assert "Skipping input file" not in result.stderr, "one summary line, not a warning per file"
    for bar in ("preprocessing", "candidate onnxruntime", "reference onnxruntime"):
        assert f"{bar}" in result.stderr and "100%" in result.stderr, bar
    fidelity = json.loads(result.stdout)
    assert fidelity["images"] == files - 2 and fidelity["top1_agreement"] == 1.0 and fidelity["cosine_min"] > 0.9999
