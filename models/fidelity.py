"""Fidelity of a backend/precision against fp32: what changes when the numbers get cheaper."""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embedding_fidelity(features: np.ndarray, reference: np.ndarray, label_embeddings: np.ndarray) -> dict[str, float]:
    """Cosine (min, mean) of each image's embedding vs fp32, and how often the zero-shot top-1 label
    (nearest label embedding) stays the same."""
    a, b = _unit(features.astype(np.float32)), _unit(reference.astype(np.float32))
    cosine = (a * b).sum(axis=1)
    labels = _unit(label_embeddings.astype(np.float32))
    agreement = float(np.mean((a @ labels.T).argmax(axis=1) == (b @ labels.T).argmax(axis=1)))
    return {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()), "top1_agreement": agreement}
