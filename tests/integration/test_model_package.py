"""The model package: exact BiomedCLIP architecture, ONNX Runtime == open_clip PyTorch, integrity checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.builder import load_biomedclip
from operators.imaging.preprocessing import to_model_input
from operators.inference.backends.base import BackendSpec
from operators.inference.backends.onnxruntime import OnnxRuntimeBackend
from operators.inference.backends.pytorch import TorchBackend
from operators.inference.backends.registry import create_backend
from operators.inference.model_package import ModelPackage, ModelPackageError, Weights
from tests.conftest import SEED
from tests.support.resize_reference import REAL_IMAGES, real_image, torch_model_input


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory: pytest.TempPathFactory):
    model, tokenizer, weights = load_biomedclip(None, SEED, tmp_path_factory.mktemp("ref"))
    return model, tokenizer, weights


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_architecture_is_biomedclip(reference_model) -> None:
    model, tokenizer, weights = reference_model
    assert weights.random_init and weights.seed == SEED
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(195.9e6, rel=1e-3)
    assert model.visual.trunk.patch_embed.proj.kernel_size == (16, 16)
    assert model.text.config.num_hidden_layers == 12 and model.text.config.hidden_size == 768
    assert tokenizer(["a chest X-ray"]).shape == (1, 256)
    assert model.encode_image(torch.zeros(1, 3, 224, 224)).shape == (1, 512)


def test_onnx_runtime_equals_open_clip_pytorch(model_package: Path, reference_model) -> None:
    model = reference_model[0]
    x = np.random.default_rng(1).standard_normal((3, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = model.encode_image(torch.from_numpy(x)).numpy()
    package = ModelPackage.load(model_package)
    fp32 = BackendSpec(precision="fp32")
    for backend in (OnnxRuntimeBackend.from_package(package, fp32), TorchBackend.from_package(package, fp32, "cpu")):
        assert _cosine(backend.embed(x), expected).min() >= 0.9999, backend.name
    assert create_backend(BackendSpec("auto"), package).name.startswith("onnxruntime")


def test_the_numpy_resize_keeps_the_models_probabilities_and_top_label(fp32_model_package: Path) -> None:
    """Real DICOM images resized by the app (numpy) and by torch's ``F.interpolate``: the same top label."""
    package = ModelPackage.load(fp32_model_package)
    backend = OnnxRuntimeBackend.from_package(package, BackendSpec(precision="fp32"))
    units = [real_image(name) for name in REAL_IMAGES]
    numpy_p, torch_p = (package.head.probabilities(backend.embed(np.stack([prepare(u) for u in units])))
                        for prepare in (to_model_input, torch_model_input))
    assert np.array_equal(numpy_p.argmax(1), torch_p.argmax(1))
    assert np.abs(numpy_p - torch_p).max() <= 1e-5


def test_label_embeddings_come_from_the_text_tower(model_package: Path, reference_model) -> None:
    model, tokenizer, _ = reference_model
    package = ModelPackage.load(model_package)
    label = package.labels.labels[0]
    with torch.no_grad():
        text = model.encode_text(tokenizer(list(label.prompts))).numpy()
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    mean = text.mean(0) / np.linalg.norm(text.mean(0))
    assert _cosine(package.head.label_embeddings[:1], mean[None])[0] == pytest.approx(1.0, abs=1e-5)
    assert package.head.logit_scale == pytest.approx(float(model.logit_scale.exp()))


def test_random_package_says_so(model_package: Path, caplog: pytest.LogCaptureFixture) -> None:
    package = ModelPackage.load(model_package)
    assert package.manifest.weights == Weights(source="random-init", random_init=True, seed=SEED, sha256=None)
    assert "RANDOM-INIT" in package.identity
    assert "RANDOM weights" in caplog.text


def test_seeded_builds_are_identical(reference_model, tmp_path: Path) -> None:
    again = load_biomedclip(None, SEED, tmp_path)[0]
    for (name, a), b in zip(reference_model[0].state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_corrupt_package_is_refused(model_package: Path, tmp_path: Path) -> None:
    copy = tmp_path / "pkg"
    shutil.copytree(model_package, copy, ignore=shutil.ignore_patterns("image_encoder.*"))
    for encoder in model_package.glob("image_encoder.*"):  # large and untouched: link, don't copy
        (copy / encoder.name).symlink_to(encoder)
    embeddings = np.load(copy / "label_embeddings.npy")
    np.save(copy / "label_embeddings.npy", embeddings[::-1])
    with pytest.raises(ModelPackageError, match="label_embeddings.npy: sha256 does not match"):
        ModelPackage.load(copy)
