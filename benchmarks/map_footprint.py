#!/usr/bin/env python3
"""What of the MAP image's size can be measured without Docker: the installed size of the Python
packages the image installs, and of the model package it bakes in (docs/deployment.md, "Image size").

    python -m benchmarks.map_footprint --models models/biomedclip > benchmarks/map_footprint.json

The packages are the container's requirement list (``scripts/package_map.py``, the same function the
build context uses); each one's size is the sum of the files its installed ``RECORD`` lists, as
installed here (Linux x86_64, Python 3.11; the image installs the same pins for Python 3.12). Not
measured: the CUDA 13.0 runtime base image, the Ubuntu packages the Dockerfile adds, Python itself,
and what pip leaves in its cache.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from pathlib import Path

from packaging.requirements import Requirement

from scripts.package_map import DEPLOY, ROOT, container_requirements

GIB = 2**30


def installed_bytes(distribution: str) -> int:
    """Bytes of the files the distribution's RECORD lists (those present on disk)."""
    files = importlib.metadata.distribution(distribution).files or []
    return sum(path.stat().st_size for path in (Path(str(f.locate())) for f in files) if path.is_file())


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=ROOT / "models" / "biomedclip")
    args = parser.parse_args()
    pins = [line for line in container_requirements(ROOT / "requirements.txt", DEPLOY / "not-in-container.txt").splitlines()
            if line and not line.startswith("#")]
    sizes = {Requirement(pin).name: installed_bytes(Requirement(pin).name) for pin in pins}
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:10]
    print(json.dumps({
        "python_packages": len(sizes),
        "python_packages_gib": round(sum(sizes.values()) / GIB, 2),
        "largest_gib": {name: round(size / GIB, 2) for name, size in largest},
        "model_package_gib": round(folder_bytes(args.models) / GIB, 3),
        "model_package": args.models.name,
    }, indent=2))


if __name__ == "__main__":
    main()
