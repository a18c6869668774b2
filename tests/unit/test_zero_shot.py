"""Zero-shot head: normalisation, softmax over labels, series aggregate, label-set validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from operators.inference.zero_shot import LabelSet, ZeroShotHead, aggregate_series, ensemble_prompt_embeddings


def test_probabilities_follow_the_clip_formula() -> None:
    labels = np.eye(3, 4, dtype=np.float32)
    head = ZeroShotHead(labels, logit_scale=10.0)
    image = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 3.0, 4.0, 0.0]], dtype=np.float32)
    probs = head.probabilities(image)
    # image 2 normalised = (0, .6, .8, 0): logits (0, 6, 8)
    expected = np.exp([0.0, 6.0, 8.0]) / np.exp([0.0, 6.0, 8.0]).sum()
    assert probs[1] == pytest.approx(expected, rel=1e-5)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert probs[0].argmax() == 0


def test_series_aggregate_is_the_mean_of_image_probabilities() -> None:
    per_image = np.array([[0.7, 0.3], [0.1, 0.9]])
    assert aggregate_series(per_image) == pytest.approx([0.4, 0.6])
    with pytest.raises(ValueError):
        aggregate_series(np.zeros((0, 2)))


def test_prompt_ensemble_is_unit_norm() -> None:
    rng = np.random.default_rng(0)
    embeddings = ensemble_prompt_embeddings([rng.standard_normal((3, 8)), rng.standard_normal((1, 8))])
    assert np.linalg.norm(embeddings, axis=1) == pytest.approx([1.0, 1.0], abs=1e-6)


def test_label_set_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    code = {"value": "1", "scheme": "99X", "meaning": "x"}
    path.write_text(json.dumps({"task": code, "labels": [{"name": "a", "code": code, "prompts": ["a"]}]}))
    with pytest.raises(ValueError, match=f"{path}: a zero-shot label set needs at least two labels"):
        LabelSet.from_json(path)
    path.write_text(json.dumps({"task": code, "labels": [{"name": "a", "code": code, "prompts": []}] * 2}))
    with pytest.raises(ValueError, match="label names must be unique"):
        LabelSet.from_json(path)
