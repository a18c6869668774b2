"""The GPU benchmarks' shared library: the exact image tower with seeded weights, CUDA-event timing,
fidelity against fp32 on the fidelity set, and kernel grouping for profiles. Used by ``benchmarks.backends``,
``benchmarks.gpu_ablations`` and the dated probes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.fidelity_set import to_pixel_values
from models.fidelity import embedding_fidelity

ROOT = Path(__file__).resolve().parent.parent
LABELS = 20


def fidelity(features: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The first ``LABELS`` fp32 embeddings act as the label set; the rest are scored against them."""
    return embedding_fidelity(features[LABELS:], reference[LABELS:], reference[:LABELS])


def load_fidelity_set(path: Path, part: str = "images") -> np.ndarray:
    return to_pixel_values(np.load(path)[part])


def build_tower(seed: int = 0) -> Any:
    import torch
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    config = json.loads((ROOT / "models" / "biomedclip_open_clip_config.json").read_text())["model_cfg"]
    torch.manual_seed(seed)
    return _build_vision_tower(config["embed_dim"], CLIPVisionCfg(**config["vision_cfg"])).eval()


def time_gpu(run: Callable[[Any], Any], batch: Any, iterations: int) -> list[float]:
    import torch

    for _ in range(3):
        run(batch)
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(batch)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def kernel_group(name: str) -> str:
    """Inductor names its Triton kernels after every op they fuse (an FP8 quantisation feeding
    ``_scaled_mm`` has "scaled_mm" in its name), so Triton kernels are grouped by what they compute."""
    name = name.lower()
    if name.startswith("triton_"):
        if "layer_norm" in name:
            return "layernorm (+ residual add, fp8 quantisation)"
        return "gelu (+ fp8 quantisation)" if "gelu" in name else "other elementwise/copies"
    if any(k in name for k in ("sdpa", "flash", "fmha", "attention")):
        return "attention"
    if any(k in name for k in ("gemm", "nvjet", "cutlass", "xmma", "matmul", "sm90")):
        return "gemm (fp16: with the GELU epilogue)"
    return "other elementwise/copies"
