"""Zero-shot classification over a coded label set (CLIP-style, as in BiomedCLIP).

Each label has one or more prompt templates and a code (SNOMED CT where one exists, else the local
coding scheme ``99BMCLIP``, see ``docs/coding.md``). At model-build time every prompt is encoded by
the text tower; the prompt embeddings of a label are L2-normalised, averaged and re-normalised
(CLIP prompt ensembling). At run time only those label embeddings are needed:

    logits = logit_scale * normalise(image_features) @ label_embeddings.T
    probabilities = softmax(logits) over labels

Per-series aggregate rule: the arithmetic mean of the per-image probability vectors, so it still
sums to 1; the top label is its arg-max.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.sr.coding import Code

#: Private coding scheme for concepts that have no standard code (PS3.16 8.2: "99" prefix).
LOCAL_SCHEME = "99BMCLIP"

#: Method of every per-label probability measurement.
ZERO_SHOT_PROBABILITY = Code("ZSPROB", LOCAL_SCHEME, "Zero-shot softmax probability")


def _code(entry: dict[str, str]) -> Code:
    return Code(entry["value"], entry["scheme"], entry["meaning"])


@dataclass(frozen=True)
class Label:
    name: str
    code: Code
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class LabelSet:
    """The classification task (a coded concept) and its coded labels with prompts."""

    task: Code
    labels: tuple[Label, ...]

    @classmethod
    def from_json(cls, path: Path) -> LabelSet:
        data = json.loads(Path(path).read_text())
        labels = tuple(
            Label(item["name"], _code(item["code"]), tuple(item["prompts"])) for item in data["labels"]
        )
        if len(labels) < 2:
            raise ValueError(f"{path}: a zero-shot label set needs at least two labels")
        names = [label.name for label in labels]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: label names must be unique")
        if any(not label.prompts for label in labels):
            raise ValueError(f"{path}: every label needs at least one prompt")
        return cls(_code(data["task"]), labels)

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def ensemble_prompt_embeddings(prompt_embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """One embedding per label from its prompts' text embeddings (each ``P_i x D``)."""
    return np.stack([l2_normalise(l2_normalise(p).mean(axis=0)) for p in prompt_embeddings]).astype(np.float32)


@dataclass(frozen=True)
class ZeroShotHead:
    """Label embeddings (``L x D``, unit norm) and the learned temperature of the model."""

    label_embeddings: np.ndarray
    logit_scale: float

    def probabilities(self, image_features: np.ndarray) -> np.ndarray:
        """Per-image softmax over labels (``N x L``) from raw image features (``N x D``)."""
        logits = self.logit_scale * l2_normalise(image_features.astype(np.float32)) @ self.label_embeddings.T
        return softmax(logits)


def aggregate_series(per_image: np.ndarray) -> np.ndarray:
    """Per-series probabilities: mean of the per-image probability vectors (documented rule)."""
    if per_image.ndim != 2 or per_image.shape[0] == 0:
        raise ValueError("aggregate_series needs a non-empty N x L probability matrix")
    return per_image.mean(axis=0)
