#!/usr/bin/env python3
"""Copy the embedded sample study (``app/sample_study.py``: two CT series of one study from pydicom's
test files) into a folder, byte for byte."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.sample_study import make_sample_study

__all__ = ["make_sample_study"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write the study into")
    args = parser.parse_args()
    print(f"sample study: {len(make_sample_study(args.out))} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
