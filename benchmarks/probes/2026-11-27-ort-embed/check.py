"""Check on the lent GPU (onnxruntime-gpu installed): ``OnnxRuntimeBackend.embed`` (numpy in and out, the
app's path) with ``cuda_graphs=True`` returns what the uncaptured CUDA provider returns, for two batch
shapes and a replay of the first; and a plain (TorchScript) export with ``cuda_graphs=True`` is refused as
``BackendUnavailable`` naming the file. Output in results.txt.

    python benchmarks/probes/2026-11-27-ort-embed/check.py
"""
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
from models.builder import export_onnx, export_onnx_fused_for_onnxruntime
from operators.inference.backends.base import BackendUnavailable
from operators.inference.backends.onnxruntime import OnnxRuntimeBackend
from benchmarks.gpu import build_tower

folder = Path(tempfile.mkdtemp())
path, plain_export = folder / "fused-fp16.onnx", folder / "plain-fp32.onnx"
model = SimpleNamespace(visual=build_tower())
export_onnx_fused_for_onnxruntime(model, path, fp16=True)
export_onnx(model, plain_export)
graphs = OnnxRuntimeBackend(str(path), "pixel_values", "image_features", "fp16", cuda_graphs=True)
plain = OnnxRuntimeBackend(str(path), "pixel_values", "image_features", "fp16")
print(graphs.name, "|", plain.name)
rng = np.random.default_rng(0)
first, second = (rng.standard_normal((n, 3, 224, 224), dtype=np.float32) for n in (8, 3))
a1, b, a2 = graphs.embed(first), graphs.embed(second), graphs.embed(first)
r1, rb = plain.embed(first), plain.embed(second)
for label, got, want in (("batch 8", a1, r1), ("batch 3", b, rb), ("batch 8 replayed", a2, r1)):
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    print(f"{label}: shape {got.shape} dtype {got.dtype}, max |diff| {np.abs(got - want).max():.2e}, cosine min {cosine.min():.6f}")
print("replay identical to first capture:", np.array_equal(a1, a2), "| torch", torch.__version__)
try:
    OnnxRuntimeBackend(str(plain_export), "pixel_values", "image_features", cuda_graphs=True)
    print("plain export with cuda_graphs: NOT refused")
except BackendUnavailable as exc:
    print("plain export with cuda_graphs refused:", str(exc)[:400])
