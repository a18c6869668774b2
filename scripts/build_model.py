#!/usr/bin/env python3
"""Build the BiomedCLIP model package folder the app reads at run time.

    python scripts/build_model.py --random-init --seed 0 --out models/biomedclip
    python scripts/build_model.py --random-init --seed 0 --variants fp16,fp16-ort,int8-dynamic,int8-qdq,fp8-qdq --out DIR
    python scripts/build_model.py --weights hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 --out DIR
    python scripts/build_model.py --weights /path/to/open_clip/snapshot [--text-model /path/to/BiomedBERT] --out DIR

Offline (HF_HUB_OFFLINE=1), from the Hugging Face cache or from plain folders: docs/models.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.builder import DEFAULT_CALIBRATION, DEFAULT_LABELS, HUB_ID, VARIANTS, UnusableWeights, build_package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help=f"'{HUB_ID}' or a local open_clip snapshot folder")
    source.add_argument("--random-init", action="store_true", help="exact architecture, seeded random weights (offline)")
    parser.add_argument("--text-model", type=Path, default=None,
                        help="with --weights DIR: the BiomedBERT folder (config.json, vocab.txt, tokenizer files); "
                             "default: DIR itself or DIR/BiomedNLP-BiomedBERT-base-uncased-abstract")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="label set JSON (default models/labels.json)")
    parser.add_argument("--out", type=Path, required=True, help="package folder to write (replaced atomically)")
    parser.add_argument("--variants", default="", help=f"comma-separated extra ONNX variants: {','.join(VARIANTS)}")
    parser.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION,
                        help="folder of DICOM images for int8-qdq / fp8-qdq calibration (default: pydicom's test images)")
    parser.add_argument("--calibration-images", type=int, default=64, help="images used for calibration (default 64)")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    try:
        manifest = build_package(None if args.random_init else args.weights, args.seed, args.labels, args.out,
                                 variants, args.calibration, args.calibration_images, args.text_model)
    except (FileNotFoundError, UnusableWeights) as exc:
        print(f"build_model.py: {exc}", file=sys.stderr)
        return 2
    kind = "RANDOM weights, not for clinical use" if manifest.weights.random_init else manifest.weights.source
    print(f"model package written to {args.out} ({kind}; {len(manifest.files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
