#!/usr/bin/env python3
"""Copy the embedded sample study out of pydicom's test files into a folder.

Study 98892001 of pydicom's ``dicomdirtests`` (fictitious patient): two CT series of one study,
CT2N (2 slices) and CT5N (5 slices). Files are copied byte for byte.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from app.sample_study import SOURCE


def make_sample_study(out: Path) -> list[Path]:
    files = sorted(p for p in SOURCE.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{SOURCE}: pydicom's test files are missing")
    copied = []
    for src in files:
        dst = out / src.relative_to(SOURCE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(dst)
    return copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write the study into")
    args = parser.parse_args()
    print(f"sample study: {len(make_sample_study(args.out))} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
