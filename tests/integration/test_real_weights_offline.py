"""Real-weight routes, offline (HF_HUB_OFFLINE=1, no network): ``build_model.py --weights hf-hub:…`` from a Hugging
Face cache, and ``--weights DIR --text-model DIR`` from plain folders, each from BiomedCLIP's repositories in their
real file names and layout (seeded random weights). Each package's image embeddings and label probabilities
must match open_clip's own model loaded from the same files. One build per route (about 700 MB each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.builder import DEFAULT_CALIBRATION, DEFAULT_LABELS, HUB_ID, TEXT_REPO, model_inputs_from_dicom
from operators.inference.backends.base import BackendSpec, embed_in_batches
from operators.inference.backends.registry import create_backend
from operators.inference.model_package import ModelPackage
from tests.support.biomedclip_repositories import Repositories, make_repositories

ROOT = Path(__file__).resolve().parents[2]
SEED = 7

#: open_clip's own zero-shot, written independently of the package code: image features and label
#: probabilities (prompt embeddings normalised, averaged per label, normalised; logit scale; softmax).
OPEN_CLIP_REFERENCE = """
import json, sys
import numpy as np, open_clip, torch
model, _ = open_clip.create_model_from_pretrained(sys.argv[1])
model.eval()  # no dropout
tokenizer = open_clip.get_tokenizer(sys.argv[1])
images = torch.from_numpy(np.load(sys.argv[2]))
labels = json.load(open(sys.argv[3]))["labels"]
with torch.no_grad():
    features = model.encode_image(images)
    text = []
    for label in labels:
        t = torch.nn.functional.normalize(model.encode_text(tokenizer(label["prompts"])), dim=-1).mean(0)
        text.append(torch.nn.functional.normalize(t, dim=-1))
    logits = model.logit_scale.exp() * torch.nn.functional.normalize(features, dim=-1) @ torch.stack(text).T
np.savez(sys.argv[4], features=features.numpy(), probabilities=logits.softmax(-1).numpy())
"""


def _offline(hub_cache: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "PYTHONPATH": str(ROOT)}


def _build(out: Path, hub_cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_model.py"), *args, "--out", str(out)],
                          capture_output=True, text=True, env=_offline(hub_cache), timeout=900)


@pytest.fixture(scope="session")
def repositories(tmp_path_factory: pytest.TempPathFactory) -> Repositories:
    return make_repositories(tmp_path_factory.mktemp("carried-in"), SEED)


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    return model_inputs_from_dicom(DEFAULT_CALIBRATION, 6)


@pytest.fixture(scope="session")
def reference(repositories: Repositories, images: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("reference")
    np.save(folder / "images.npy", images)
    subprocess.run([sys.executable, "-c", OPEN_CLIP_REFERENCE, HUB_ID, str(folder / "images.npy"), str(DEFAULT_LABELS),
                    str(folder / "reference.npz")], check=True, env=_offline(repositories.hub_cache), timeout=600)
    return dict(np.load(folder / "reference.npz"))


def _matches_open_clip(package_dir: Path, images: np.ndarray, reference: dict[str, np.ndarray]) -> None:
    package = ModelPackage.load(package_dir)
    assert not package.is_random_init
    features = embed_in_batches(create_backend(BackendSpec("onnxruntime", "fp32"), package), images, 8)
    probabilities = package.head.probabilities(features)

    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    assert cosine(features, reference["features"]).min() >= 0.9999
    assert cosine(probabilities, reference["probabilities"]).min() >= 0.9999
    assert (probabilities.argmax(1) == reference["probabilities"].argmax(1)).all()


def test_hugging_face_cache_route_builds_offline_and_matches_open_clip(
    repositories: Repositories, images: np.ndarray, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    result = _build(tmp_path / "biomedclip", repositories.hub_cache, "--weights", HUB_ID)
    assert result.returncode == 0, result.stderr[-2000:]
    _matches_open_clip(tmp_path / "biomedclip", images, reference)


def test_plain_folder_route_builds_offline_without_any_cache_and_matches_open_clip(
    repositories: Repositories, images: np.ndarray, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    result = _build(tmp_path / "biomedclip", empty_cache, "--weights", str(repositories.clip), "--text-model", str(repositories.text))
    assert result.returncode == 0, result.stderr[-2000:]
    _matches_open_clip(tmp_path / "biomedclip", images, reference)


def test_a_missing_text_model_is_one_line_naming_it(repositories: Repositories, tmp_path: Path) -> None:
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    result = _build(tmp_path / "biomedclip", empty_cache, "--weights", str(repositories.clip))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and TEXT_REPO in result.stderr and "--text-model" in result.stderr
    assert not (tmp_path / "biomedclip").exists()


def test_an_empty_hugging_face_cache_is_one_line_naming_the_repository(tmp_path: Path) -> None:
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    result = _build(tmp_path / "biomedclip", empty_cache, "--weights", HUB_ID)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"build_model.py: {HUB_ID}: not loadable")


@pytest.mark.parametrize("damage", ["truncated", "another model"])
def test_a_damaged_checkpoint_is_one_line_naming_it(repositories: Repositories, tmp_path: Path, damage: str) -> None:
    """A download cut short, or a checkpoint of another model under BiomedCLIP's file name."""
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "open_clip_config.json").symlink_to(repositories.clip / "open_clip_config.json")
    checkpoint = folder / "open_clip_pytorch_model.bin"
    if damage == "truncated":
        with open(repositories.clip / checkpoint.name, "rb") as whole:
            checkpoint.write_bytes(whole.read(1 << 20))
    else:
        import torch

        torch.save({"visual.proj": torch.zeros(3, 3)}, checkpoint)
    result = _build(tmp_path / "biomedclip", tmp_path, "--weights", str(folder), "--text-model", str(repositories.text))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith(f"build_model.py: {checkpoint.resolve()}: not a BiomedCLIP checkpoint")
    assert not (tmp_path / "biomedclip").exists()
