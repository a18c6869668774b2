"""The embedded sample study: study 98892001 of pydicom's ``dicomdirtests`` (a fictitious patient), two
CT series of one study, CT2N (2 slices) and CT5N (5 slices). It ships inside the pydicom wheel, so
every installation of the app has it: ``scripts/make_sample_study.py`` copies it out for the
quick start, ``python -m app.smoke_test`` sends it through an installed deployment, the web demo offers
its middle CT5N slice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom

SOURCE = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001"
#: The demo's sample image: the middle slice of CT5N.
DEMO_IMAGE = SOURCE / "CT5N" / "2693"


def sample_files() -> list[Path]:
    """The sample study's files, sorted; an error naming the folder if pydicom's copy is missing."""
    files = sorted(p for p in SOURCE.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{SOURCE}: pydicom's test files are missing")
    return files


def make_sample_study(out: Path) -> list[Path]:
    """Copy the sample study byte for byte into ``out`` (its series folders kept); return the copies."""
    copied = []
    for src in sample_files():
        dst = out / src.relative_to(SOURCE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(dst)
    return copied
