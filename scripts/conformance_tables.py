#!/usr/bin/env python3
"""Regenerate the tables of docs/conformance.md from the code (``app/listener/conformance.py``).

    python scripts/conformance_tables.py [--check]

``--check``: change nothing; exit 1 if the document's tables differ from the code's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.listener.conformance import render

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "conformance.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether the tables are current")
    args = parser.parse_args()
    current = DOCUMENT.read_text()
    wanted = render(current)
    if args.check:
        print(f"{DOCUMENT}: tables {'current' if wanted == current else 'OUT OF DATE: run scripts/conformance_tables.py'}")
        return 0 if wanted == current else 1
    DOCUMENT.write_text(wanted)
    print(f"{DOCUMENT}: tables written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
