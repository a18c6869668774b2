"""The manifest check re-hashes only files that changed since they last matched (the verified stamp)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.builder import DEFAULT_LABELS
from operators.inference import model_package
from operators.inference.model_package import ModelPackage, ModelPackageError, sha256_file
from operators.inference.verified_stamp import CACHE_ENV
from tests.unit.test_manifest import MANIFEST


@pytest.fixture()
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small package: the label set, its embeddings and a stand-in encoder file; the stamp cache in tmp_path."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    root = tmp_path / "biomedclip"
    root.mkdir()
    shutil.copyfile(DEFAULT_LABELS, root / "labels.json")
    labels = json.loads(DEFAULT_LABELS.read_text())["labels"]
    np.save(root / "label_embeddings.npy", np.eye(len(labels), 512, dtype=np.float32))
    (root / "image_encoder.onnx").write_bytes(os.urandom(1 << 16))
    files = {p.name: sha256_file(p) for p in sorted(root.iterdir())}
    (root / "manifest.json").write_text(json.dumps({**MANIFEST, "files": files}))
    return root


@pytest.fixture()
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files hashed, in order."""
    names: list[str] = []

    def counting(path: Path) -> str:
        names.append(Path(path).name)
        return sha256_file(path)

    monkeypatch.setattr(model_package, "sha256_file", counting)
    return names


def test_a_second_start_hashes_nothing_and_a_changed_file_is_hashed_again_and_refused(package: Path, hashed: list[str]) -> None:
    ModelPackage.load(package)
    assert sorted(hashed) == ["image_encoder.onnx", "label_embeddings.npy", "labels.json"]
    hashed.clear()
    ModelPackage.load(package)
    assert hashed == []
    encoder = package / "image_encoder.onnx"
    stat = encoder.stat()
    with open(encoder, "r+b") as f:  # same size, and the old mtime put back: ctime still tells
        f.write(b"\0" * 16)
    os.utime(encoder, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelPackageError, match="image_encoder.onnx: sha256 does not match the manifest"):
        ModelPackage.load(package)
    assert hashed == ["image_encoder.onnx"]


def test_an_unwritable_cache_means_hashing_every_start(package: Path, hashed: list[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "not-a-folder"))
    ModelPackage.load(package)
    ModelPackage.load(package)
    assert len(hashed) == 6
