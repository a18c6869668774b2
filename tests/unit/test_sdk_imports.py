"""The app imports the MONAI Deploy SDK without MONAI core and torch (app/sdk_imports.py), and torch stays
importable afterwards for the PyTorch backend."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import sys
from app.sdk_imports import import_sdk_lean
import_sdk_lean()
import app.application, operators.inference.backends.registry, operators.inference.backends.triton
print(sorted(m for m in ("torch", "torchvision", "open_clip", "onnxruntime", "monai.networks", "monai.bundle") if m in sys.modules))
import torch
print(torch.ones(1).item())
"""


def test_the_graph_and_the_triton_backend_import_without_monai_core_torch_or_onnxruntime() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["[]", "1.0"]
