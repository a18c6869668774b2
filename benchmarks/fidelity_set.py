#!/usr/bin/env python3
"""A set of real model inputs for precision-fidelity measurements (``benchmark_backends.py``,
``validate_model.py``): every decodable image/frame of pydicom's test files, pydicom-data and
deid-data, through the app's own preprocessing, topped up to ``--count`` with seeded random crops
and flips of those images. Stored as 224 x 224 grey uint8 (the [0, 1] intensity before CLIP
normalisation; colour images as luminance) so that it travels to a GPU machine: 512 images = 25 MB.

    .venv/bin/python -m benchmarks.fidelity_set --count 512 --out .bench/fidelity.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from operators.imaging.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    UnsupportedImage,
    decode_frame,
    to_model_input,
    to_unit,
)
from operators.imaging.sampling import series_images  # noqa: E402
from operators.intake.inventory import scan_input

ROOT = Path(__file__).resolve().parent.parent

LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def corpus_folders() -> list[Path]:
    import deid_data
    import pydicom
    from pydicom.data import get_testdata_file

    return [
        Path(pydicom.__file__).parent / "data" / "test_files",
        Path(get_testdata_file("693_UNCR.dcm")).parent,  # pydicom-data
        Path(deid_data.__file__).parent,
    ]


def grey_224(unit: np.ndarray) -> np.ndarray:
    """Resize/crop as the app does, then undo the CLIP normalisation of channel 0 -> [0, 1] grey."""
    if unit.ndim == 3:
        unit = unit @ LUMINANCE
    return (to_model_input(unit)[0] * CLIP_STD[0] + CLIP_MEAN[0]).clip(0.0, 1.0)


def source_images(max_frames_per_file: int = 8) -> list[np.ndarray]:
    from pydicom import dcmread

    images = []
    for folder in corpus_folders():
        for item in scan_input(folder):
            if item.skip_reason:
                continue
            try:
                ds = dcmread(item.path)
                frames = series_images([ds])
                step = max(1, len(frames) // max_frames_per_file)
                for position, problem in frames[::step][:max_frames_per_file]:
                    if problem is None:
                        images.append(to_unit(ds, decode_frame(ds, position.frame), position.frame))
            except (UnsupportedImage, ValueError, AttributeError, KeyError):
                continue  # the fidelity set only needs images that decode
    return images


def make_set(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sources = [u for u in source_images() if min(u.shape[:2]) >= 16]
    out = [grey_224(u) for u in sources[:count]]
    while len(out) < count:
        unit = sources[int(rng.integers(len(sources)))]
        h, w = unit.shape[:2]
        scale = rng.uniform(0.5, 0.9)
        ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = unit[top : top + ch, left : left + cw]
        out.append(grey_224(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return (np.stack(out) * 255.0 + 0.5).astype(np.uint8)


def to_pixel_values(grey: np.ndarray) -> np.ndarray:
    """uint8 N x 224 x 224 -> CLIP-normalised float32 N x 3 x 224 x 224."""
    unit = grey.astype(np.float32)[:, None] / 255.0
    return ((unit - CLIP_MEAN[None, :, None, None]) / CLIP_STD[None, :, None, None]).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "fidelity.npz")
    args = parser.parse_args()
    images = make_set(args.count)
    calibration = make_set(64, seed=1)[-48:]  # other random crops: calibration apart from evaluation
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images, calibration=calibration)
    print(f"{len(images)} images -> {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
