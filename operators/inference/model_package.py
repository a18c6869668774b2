"""The model package the app reads at run time (built by ``scripts/build_model.py``).

Layout of a package folder::

    manifest.json              identity, provenance, preprocessing constants, sha256 of every file
    image_encoder.onnx         BiomedCLIP image tower, input ``pixel_values`` (N x 3 x 224 x 224,
                               dynamic N), output ``image_features`` (N x 512, not normalised)
    image_encoder.<variant>.onnx  optional variants of the same graph (``build_model.py --variants``):
                               ``fp16`` (weights and activations fp16, for TensorRT strongly typed
                               networks), ``int8-dynamic`` (ONNX Runtime CPU), ``int8-qdq`` (explicit
                               symmetric Q/DQ on MatMul/Gemm/Conv, for TensorRT and ONNX Runtime)
    image_encoder.safetensors  the same tower's weights, for the PyTorch backend
    open_clip_config.json      the open_clip model config the tower is rebuilt from
    label_embeddings.npy       L x 512 float32, unit-norm label embeddings (prompt-ensembled)
    labels.json                the coded label set the embeddings were computed from
    triton/                    the Triton Inference Server model repository (``triton_repository``)

The runtime needs neither the text tower nor a tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from operators.inference.verified_stamp import VerifiedStamp
from operators.inference.zero_shot import LabelSet, ZeroShotHead

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


class ModelPackageError(RuntimeError):
    """The model package is missing, incomplete or corrupt."""


class MissingArtefact(ModelPackageError):
    """The package has no file for the requested precision."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_package_dir(model_path: Path) -> Path:
    """Accept the package folder itself or a models folder holding exactly one package (MAP layout)."""
    model_path = Path(model_path)
    if (model_path / MANIFEST).is_file():
        return model_path
    candidates = sorted(p.parent for p in model_path.glob(f"*/{MANIFEST}")) if model_path.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelPackageError(
            f"{model_path}: no model package ({MANIFEST}) found; build one with scripts/build_model.py"
        )
    raise ModelPackageError(f"{model_path}: several model packages found; pass one with -m")


@dataclass(frozen=True)
class Weights:
    source: str  # "random-init", a hub id or a local snapshot folder
    random_init: bool
    seed: int | None
    sha256: str | None  # of the weights file the package was built from


@dataclass(frozen=True)
class ImageEncoder:
    onnx: str  # the fp32 graph
    variants: Mapping[str, str]  # variant name (e.g. "int8-dynamic") -> file
    safetensors: str
    input: str
    output: str
    opset: int


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: what the package is, where it came from, and the sha256 of every file in it."""

    format_version: int
    name: str
    version: str
    model: str
    intended_use: str
    weights: Weights
    image_encoder: ImageEncoder
    embed_dim: int
    logit_scale: float
    labels_sha256: str
    preprocessing: Mapping[str, Any]
    built_with: Mapping[str, Any]
    files: Mapping[str, str]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path) -> Manifest:
        """Every key present and of the right kind, else ``ModelPackageError`` naming ``source`` and the key."""
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelPackageError(f"{source}: unsupported format_version {data.get('format_version')}")
        try:
            values = _fields_of(cls, data, source, "")
            return cls(**{**values, "weights": Weights(**_fields_of(Weights, data["weights"], source, "weights.")),
                          "image_encoder": ImageEncoder(**_fields_of(ImageEncoder, data["image_encoder"], source, "image_encoder."))})
        except TypeError as exc:  # a section that is not an object
            raise ModelPackageError(f"{source}: malformed manifest ({exc})") from None

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelPackageError(f"{path}: unreadable manifest ({exc})") from None
        if not isinstance(data, dict):
            raise ModelPackageError(f"{path}: the manifest is not a JSON object")
        return cls.from_dict(data, path)


def _fields_of(cls: type, data: Mapping[str, Any], source: Path, prefix: str) -> dict[str, Any]:
    missing = [f.name for f in fields(cls) if f.name not in data]
    if missing:
        raise ModelPackageError(f"{source}: manifest key {prefix}{missing[0]} is missing")
    return {f.name: data[f.name] for f in fields(cls)}


@dataclass(frozen=True)
class ModelPackage:
    root: Path
    manifest: Manifest
    labels: LabelSet
    head: ZeroShotHead

    @classmethod
    def load(cls, model_path: Path, verify: bool = True) -> ModelPackage:
        """``verify``: every listed file's sha256 against the manifest, except files whose verified stamp
        (``verified_stamp``) shows them unchanged since they last matched."""
        root = find_package_dir(model_path)
        manifest = Manifest.read(root / MANIFEST)
        stamp = VerifiedStamp(root)
        for name, expected in manifest.files.items():
            path = root / name
            if not path.is_file():
                raise ModelPackageError(f"{path}: listed in the manifest but missing")
            if verify and not stamp.is_verified(name, path, expected):
                if sha256_file(path) != expected:
                    raise ModelPackageError(f"{path}: sha256 does not match the manifest (corrupt or replaced)")
                stamp.record(name, path, expected)
        if verify:
            stamp.save(manifest.files)
        labels = LabelSet.from_json(root / "labels.json")
        embeddings = np.load(root / "label_embeddings.npy")
        if embeddings.shape[0] != len(labels.labels):
            raise ModelPackageError(f"{root}: {embeddings.shape[0]} label embeddings for {len(labels.labels)} labels")
        package = cls(root, manifest, labels, ZeroShotHead(embeddings, float(manifest.logit_scale)))
        if package.is_random_init:
            logger.warning(
                "Model package %s has RANDOM weights (seed %s): outputs are NOT clinical findings.",
                root.name,
                manifest.weights.seed,
            )
        return package

    @property
    def is_random_init(self) -> bool:
        return self.manifest.weights.random_init

    def variants(self) -> dict[str, str]:
        return {"fp32": self.manifest.image_encoder.onnx, **self.manifest.image_encoder.variants}

    def has_artefact(self, precision: str) -> bool:
        return any(v == precision or v.startswith(precision + "-") for v in self.variants())

    def artefact(self, precision: str, preferred: tuple[str, ...] = ("dynamic", "qdq"), flavour_first: bool = False) -> Path:
        """ONNX file for ``precision``: the plain one, else the first of ``preferred`` flavours the package
        has (for int8 there is no plain one); ``flavour_first`` tries the flavours before the plain one."""
        variants = self.variants()
        flavours = [f"{precision}-{flavour}" for flavour in preferred]
        for name in ([*flavours, precision] if flavour_first else [precision, *flavours]):
            if name in variants:
                return self.root / variants[name]
        raise MissingArtefact(
            f"{self.root}: no {precision} image encoder in the package (build it with scripts/build_model.py --variants)"
        )

    def image_tower(self) -> Any:
        """The image tower as a PyTorch module (open_clip architecture + the package's safetensors)."""
        from open_clip.model import CLIPVisionCfg, _build_vision_tower
        from safetensors.torch import load_file

        config = json.loads((self.root / "open_clip_config.json").read_text())["model_cfg"]
        tower = _build_vision_tower(config["embed_dim"], CLIPVisionCfg(**config["vision_cfg"]))
        tower.load_state_dict(load_file(str(self.root / self.manifest.image_encoder.safetensors)))
        return tower.eval()

    @property
    def identity(self) -> str:
        """Short identity for the SR: package version and weights identity."""
        weights = self.manifest.weights
        if weights.random_init:
            who = f"RANDOM-INIT seed={weights.seed} NOT FOR CLINICAL USE"
        else:
            who = f"weights sha256:{(weights.sha256 or '')[:16]}"
        return f"{self.manifest.version} ({who})"
