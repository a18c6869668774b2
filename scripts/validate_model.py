#!/usr/bin/env python3
"""Validate a backend/precision against fp32 on a site's own DICOM images before switching to it.

Every image under DICOM_DIR goes through the app's own preprocessing (sampling policy per series
file); embeddings from the candidate and from ONNX Runtime fp32 are compared: cosine (min, mean) and
agreement of the zero-shot top-1 label over the package's label set.

    .venv/bin/python scripts/validate_model.py DICOM_DIR -m models/biomedclip --backend onnxruntime --precision int8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.builder import model_inputs_from_dicom
from models.fidelity import embedding_fidelity
from operators.inference.backends.base import BackendSpec, embed_in_batches
from operators.inference.backends.registry import create_backend
from operators.inference.model_package import ModelPackage

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dicom_dir", type=Path)
    parser.add_argument("-m", "--model", type=Path, required=True)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--max-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    package = ModelPackage.load(args.model)
    images = model_inputs_from_dicom(args.dicom_dir, args.max_images)
    candidate = create_backend(BackendSpec(args.backend, args.precision), package)
    reference = create_backend(BackendSpec("onnxruntime", "fp32"), package)
    result = embedding_fidelity(
        embed_in_batches(candidate, images, args.batch_size),
        embed_in_batches(reference, images, args.batch_size),
        package.head.label_embeddings,
    )
    print(json.dumps({"candidate": candidate.name, "reference": reference.name, "images": len(images), **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
