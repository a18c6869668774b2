"""Builds the BiomedCLIP model package folder (see ``operators/model_package.py`` for its layout).

Weights come from the Hugging Face hub (``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``),
from a local open_clip snapshot folder, or — fully offline — from a seeded random initialisation of
the exact BiomedCLIP architecture (timm ViT-B/16 image tower with CLS pooling and a linear 768→512
projection; BiomedBERT-base text tower with MLP projection, context 256). A random package says so
in its manifest, in every SR's algorithm parameters and in a warning at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from operators.model_package import FORMAT_VERSION, MANIFEST, sha256_file
from operators.zero_shot import LabelSet, ensemble_prompt_embeddings

HERE = Path(__file__).resolve().parent
BIOMEDCLIP_CONFIG = HERE / "biomedclip_open_clip_config.json"
DEFAULT_LABELS = HERE / "labels.json"
HUB_ID = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
PACKAGE_VERSION = "1.0.0"
ONNX_OPSET = 17
BERT_VOCAB_SIZE = 30522


@dataclass(frozen=True)
class Weights:
    source: str  # "random-init", a hub id or a folder
    random_init: bool
    seed: int | None
    sha256: str | None  # of the checkpoint file, for real weights


def _write_offline_text_config(folder: Path) -> None:
    """BiomedBERT-base config and a generated WordPiece vocab, enough to build the text tower offline.

    Only ``[PAD] = 0`` matters for the attention mask; the other ids merely need to exist.
    """
    from transformers import BertConfig

    BertConfig(vocab_size=BERT_VOCAB_SIZE).save_pretrained(folder)
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens += pieces + ["##" + p for p in pieces]
    tokens += [f"[unused{i}]" for i in range(99, 99 + BERT_VOCAB_SIZE - len(tokens))]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512})
    )


def load_biomedclip(weights: str | None, seed: int | None, workdir: Path) -> tuple[Any, Any, Weights]:
    """Return ``(open_clip model, tokenizer, Weights)``; ``weights=None`` means seeded random init."""
    import open_clip
    import torch

    if weights is None:
        if seed is None:
            raise ValueError("random initialisation needs a seed")
        folder = workdir / "biomedclip-random"
        folder.mkdir(parents=True)
        _write_offline_text_config(folder)
        config = json.loads(BIOMEDCLIP_CONFIG.read_text())
        config["model_cfg"]["text_cfg"]["hf_model_name"] = str(folder)
        config["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = str(folder)
        (folder / "open_clip_config.json").write_text(json.dumps(config))
        torch.manual_seed(seed)
        model = open_clip.create_model(f"local-dir:{folder}", pretrained_text=False)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        info = Weights("random-init", True, seed, None)
    elif weights.startswith("hf-hub:"):
        from open_clip.pretrained import download_pretrained_from_hf

        model = open_clip.create_model(weights)
        tokenizer = open_clip.get_tokenizer(weights)
        checkpoint = Path(download_pretrained_from_hf(weights.removeprefix("hf-hub:")))
        info = Weights(weights, False, None, sha256_file(checkpoint))
    else:
        folder = Path(weights).resolve()
        checkpoints = sorted(folder.glob("open_clip_pytorch_model.*")) + sorted(folder.glob("open_clip_model.*"))
        if not checkpoints:
            raise FileNotFoundError(f"{folder}: no open_clip checkpoint (open_clip_pytorch_model.bin/.safetensors)")
        model = open_clip.create_model(f"local-dir:{folder}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        info = Weights(str(folder), False, None, sha256_file(checkpoints[0]))
    model.eval()
    return model, tokenizer, info


def image_tower(model: Any) -> Any:
    """The image encoder as exported: pixel_values -> image_features (not normalised)."""
    import torch

    class ImageEncoder(torch.nn.Module):
        def __init__(self, visual: torch.nn.Module) -> None:
            super().__init__()
            self.visual = visual

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.visual(pixel_values)

    return ImageEncoder(model.visual).eval()


def export_onnx(model: Any, path: Path) -> None:
    import torch

    example = torch.zeros(2, 3, 224, 224)
    # The TorchScript exporter: the dynamo exporter also works but is 2x slower here.
    torch.onnx.export(
        image_tower(model),
        (example,),
        str(path),
        input_names=["pixel_values"],
        output_names=["image_features"],
        dynamic_axes={"pixel_values": {0: "batch"}, "image_features": {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


def label_embeddings(model: Any, tokenizer: Any, labels: LabelSet) -> np.ndarray:
    import torch

    per_label = []
    with torch.no_grad():
        for label in labels.labels:
            per_label.append(model.encode_text(tokenizer(list(label.prompts))).float().numpy())
    return ensemble_prompt_embeddings(per_label)


def build_package(weights: str | None, seed: int | None, labels_path: Path, out: Path) -> dict[str, Any]:
    """Build the package into ``out`` atomically (a half-built package is never visible there)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    labels = LabelSet.from_json(labels_path)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory() as work:
            model, tokenizer, info = load_biomedclip(weights, seed, Path(work))
            export_onnx(model, staging / "image_encoder.onnx")
            save_file(
                {k: v.contiguous() for k, v in model.visual.state_dict().items()},
                str(staging / "image_encoder.safetensors"),
            )
            embeddings = label_embeddings(model, tokenizer, labels)
            logit_scale = float(model.logit_scale.exp().item())
        np.save(staging / "label_embeddings.npy", embeddings)
        shutil.copyfile(labels_path, staging / "labels.json")
        config = json.loads(BIOMEDCLIP_CONFIG.read_text())
        (staging / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir())}
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": "biomedclip-zero-shot",
            "version": PACKAGE_VERSION,
            "model": "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            "intended_use": "research only (BiomedCLIP model card); not a medical device",
            "weights": {
                "source": info.source,
                "random_init": info.random_init,
                "seed": info.seed,
                "sha256": info.sha256,
            },
            "image_encoder": {
                "onnx": "image_encoder.onnx",
                "safetensors": "image_encoder.safetensors",
                "input": "pixel_values",
                "output": "image_features",
                "opset": ONNX_OPSET,
            },
            "embed_dim": int(embeddings.shape[1]),
            "logit_scale": logit_scale,
            "labels_sha256": hashlib.sha256((staging / "labels.json").read_bytes()).hexdigest(),
            "preprocessing": {
                "image_size": 224,
                "resize": "bicubic, shorter side to 224, centre crop",
                "mean": config["preprocess_cfg"]["mean"],
                "std": config["preprocess_cfg"]["std"],
            },
            "built_with": {
                "open_clip": open_clip.__version__,
                "torch": torch.__version__,
            },
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for p in staging.iterdir():
            os.chmod(p, 0o644)
        os.chmod(staging, 0o755)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
