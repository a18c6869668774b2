"""Shared fixtures: a seeded random-weight BiomedCLIP package (exact architecture, built offline),
the embedded sample study, and a helper that runs the app the way a user does."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ["HF_HUB_OFFLINE"] = "1"  # a wrong local path then fails at once instead of retrying a hub

# after HF_HUB_OFFLINE: huggingface_hub reads it when first imported
from models.builder import DEFAULT_LABELS, VARIANTS, build_package  # noqa: E402
from scripts.make_sample_study import make_sample_study  # noqa: E402

SEED = 0
#: Markers every test of a tier gets (pyproject.toml lists them): ``-m "not slow"`` is the fast loop.
TIER_MARKERS = {"integration": ("slow",), "network": ("slow", "network")}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(ROOT / "tests").parts[0]
        for marker in TIER_MARKERS.get(tier, ()):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def model_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package with every ONNX variant (fp16, fp16-ort, int8-dynamic, and int8-qdq / fp8-qdq calibrated on 16 images)."""
    out = tmp_path_factory.mktemp("models") / "biomedclip"
    build_package(None, SEED, DEFAULT_LABELS, out, variants=VARIANTS, calibration_count=16)
    return out


@pytest.fixture(scope="session")
def fp32_model_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same seeded package with the fp32 graph only: quicker to build, for tests of the serving code."""
    out = tmp_path_factory.mktemp("models-fp32") / "biomedclip"
    build_package(None, SEED, DEFAULT_LABELS, out)
    return out


@pytest.fixture()
def sample_study(tmp_path: Path) -> Path:
    folder = tmp_path / "input"
    make_sample_study(folder)
    return folder


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 and mode of every file under ``folder``: proves inputs were not modified."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_app(input_dir: Path, output_dir: Path, model_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python app -i IN -o OUT -m MODELS``, exactly as the README runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "app"), "-i", str(input_dir), "-o", str(output_dir), "-m", str(model_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=600,
    )
