"""The model package's manifest is read in one place, typed, and refused with the file and the key when broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from operators.inference.model_package import FORMAT_VERSION, Manifest, ModelPackage, ModelPackageError

MANIFEST = {
    "format_version": FORMAT_VERSION, "name": "biomedclip-zero-shot", "version": "1.0.0", "model": "BiomedCLIP",
    "intended_use": "research only", "weights": {"source": "random-init", "random_init": True, "seed": 0, "sha256": None},
    "image_encoder": {"onnx": "image_encoder.onnx", "variants": {"int8-dynamic": "image_encoder.int8-dynamic.onnx"},
                      "safetensors": "image_encoder.safetensors", "input": "pixel_values", "output": "image_features", "opset": 17},
    "embed_dim": 512, "logit_scale": 100.0, "labels_sha256": "ab" * 32, "preprocessing": {"image_size": 224},
    "built_with": {"torch": "2.14.1"}, "files": {},
}


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(text)
    return folder


def test_a_manifest_reads_into_typed_fields(tmp_path: Path) -> None:
    manifest = Manifest.read(write(tmp_path, json.dumps(MANIFEST)) / "manifest.json")
    assert manifest.weights.random_init and manifest.weights.seed == 0
    assert manifest.image_encoder.variants == {"int8-dynamic": "image_encoder.int8-dynamic.onnx"}
    assert manifest.logit_scale == 100.0


@pytest.mark.parametrize(("text", "reason"), [
    (json.dumps(MANIFEST)[:200], "unreadable manifest"),
    ("[]", "not a JSON object"),
    (json.dumps({k: v for k, v in MANIFEST.items() if k != "logit_scale"}), "manifest key logit_scale is missing"),
    (json.dumps({**MANIFEST, "weights": {"source": "x"}}), "manifest key weights.random_init is missing"),
    (json.dumps({**MANIFEST, "format_version": 99}), "unsupported format_version 99"),
], ids=["truncated", "not-an-object", "missing-key", "missing-nested-key", "future-format"])
def test_a_broken_manifest_is_refused_naming_the_file_and_the_reason(tmp_path: Path, text: str, reason: str) -> None:
    folder = write(tmp_path / "biomedclip", text)
    with pytest.raises(ModelPackageError, match=reason) as raised:
        ModelPackage.load(folder)
    assert str(folder / "manifest.json") in str(raised.value)
