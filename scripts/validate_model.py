#!/usr/bin/env python3
"""Validate a backend/precision against fp32 on a site's own DICOM images before switching to it.

Every image under DICOM_DIR goes through the app's own inventory and preprocessing (at most 2 images
per file, evenly spaced); embeddings from the candidate and from ONNX Runtime fp32 are compared:
cosine (min, mean) and agreement of the zero-shot top-1 label over the package's label set. Progress
bars on stderr; one line there says how many files were skipped and why; the result (JSON) on stdout.

    .venv/bin/python scripts/validate_model.py DICOM_DIR -m models/biomedclip --backend onnxruntime --precision int8
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.fidelity import embedding_fidelity
from operators.imaging.preprocessing import preprocess_series
from operators.imaging.sampling import SamplingPolicy
from operators.inference.backends.base import BackendSpec, ImageEmbeddingBackend
from operators.inference.backends.registry import create_backend
from operators.inference.model_package import ModelPackage, ModelPackageError
from operators.intake.inventory import scan_input

#: As many images per file as model_inputs_from_dicom (models/builder.py) takes for calibration.
IMAGES_PER_FILE = 2


def _kind(reason: str) -> str:
    """A skip reason without its per-file detail ("duplicate SOP Instance UID (same as a/b.dcm)")."""
    return reason.split(" (")[0].split(": ")[0]


def validation_images(folder: Path, limit: int) -> tuple[np.ndarray, int, Counter[str]]:
    """Up to ``limit`` model inputs from the images under ``folder``, the number of files, and the
    files not used counted by reason."""
    from pydicom import dcmread

    skipped: Counter[str] = Counter()
    batches: list[np.ndarray] = []
    taken = 0
    files = scan_input(folder)
    for item in tqdm(files, desc="preprocessing", unit="file", file=sys.stderr):
        if taken >= limit:
            skipped["over --max-images"] += 1
        elif item.skip_reason is not None:
            skipped[_kind(item.skip_reason)] += 1
        else:
            try:
                ds = dcmread(item.path)
                pixels = preprocess_series("", "", [ds], SamplingPolicy(IMAGES_PER_FILE).plan([ds])).pixel_values
            except (ValueError, AttributeError, KeyError):  # the app refuses these too
                skipped["could not be preprocessed"] += 1
                continue
            batches.append(pixels)
            taken += len(pixels)
    images = np.concatenate(batches)[:limit] if batches else np.empty((0,))
    return images, len(files), skipped


def _batches(images: np.ndarray, batch_size: int, desc: str) -> Iterator[np.ndarray]:
    with tqdm(total=len(images), desc=desc, unit="image", file=sys.stderr) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            yield batch
            bar.update(len(batch))


def embed(backend: ImageEmbeddingBackend, images: np.ndarray, batch_size: int, role: str) -> np.ndarray:
    return np.concatenate([backend.embed(batch) for batch in _batches(images, batch_size, f"{role} {backend.name}")])


def skipped_summary(skipped: Counter[str], files: int) -> str:
    if not skipped:
        return f"skipped: none of {files} file(s)"
    kinds = ", ".join(f"{count} {kind}" for kind, count in skipped.most_common())
    return f"skipped: {sum(skipped.values())} of {files} file(s): {kinds}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dicom_dir", type=Path)
    parser.add_argument("-m", "--model", type=Path, required=True)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--max-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    # One summary line instead of one warning per skipped file.
    logging.getLogger("operators.intake.inventory").setLevel(logging.ERROR)
    try:
        package = ModelPackage.load(args.model)
    except ModelPackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    images, files, skipped = validation_images(args.dicom_dir, args.max_images)
    print(skipped_summary(skipped, files), file=sys.stderr)
    if len(images) == 0:
        print(f"error: {args.dicom_dir}: no usable DICOM image", file=sys.stderr)
        return 2
    candidate = create_backend(BackendSpec(args.backend, args.precision), package)
    reference = create_backend(BackendSpec("onnxruntime", "fp32"), package)
    result = embedding_fidelity(
        embed(candidate, images, args.batch_size, "candidate"), embed(reference, images, args.batch_size, "reference"),
        package.head.label_embeddings,
    )
    print(json.dumps({"candidate": candidate.name, "reference": reference.name, "images": len(images), **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
