#!/usr/bin/env python3
"""Where the GPU time and the FP8/INT8 fidelity go: ablations of the compiled image tower.

Run on the lent H100/H200 (as ``benchmark_backends.py gpu``; needs the fidelity set):

    python -m benchmarks.gpu_ablations --fidelity .bench/fidelity.npz --out $OUT/ablations.json

Every row is torch.compile + CUDA graphs, timed at batch 1 and 256 in one process, fidelity vs eager
fp32 on the same 512 images:

- bf16: timm's modules / + patch embedding as one GEMM / + GELU in fc1's cuBLASLt epilogue
  (``operators.inference.backends.vit_kernels``);
- FP8 per-tensor static scales (the product's FP8 path) with and without Hopper fast accumulation;
- FP8 per-token activation x per-channel weight scales (dynamic), and INT8 the same way
  (``torch._int_mm``): finer scales, do they buy fidelity, what do they cost;
- FP8 on one kind of layer at a time (eager, fidelity only): is the FP8 error concentrated anywhere.

``report`` turns the JSON into the ablation tables of BENCHMARKS.md's backends section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu import build_tower, fidelity, load_fidelity_set, time_gpu
from operators.imaging.preprocessing import IMAGE_SIZE
from operators.inference.backends.fp8 import FP8_MAX

ROOT = Path(__file__).resolve().parent.parent
INT8_MAX = 127.0


def rowwise_linear(linear: Any, kind: str) -> Any:
    """nn.Linear with per-output-channel weight scales and per-token (row) dynamic activation scales,
    in FP8 e4m3 (``torch._scaled_mm``) or INT8 (``torch._int_mm``, int32 accumulation)."""
    import torch

    class RowwiseLinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            weight = linear.weight.detach().float()
            self.limit = FP8_MAX if kind == "fp8" else INT8_MAX
            scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / self.limit
            quantised = (weight / scale).to(torch.float8_e4m3fn) if kind == "fp8" else torch.round(weight / scale).to(torch.int8)
            self.register_buffer("w_q", quantised.t())  # column-major second operand
            self.register_buffer("w_scale", scale.t().contiguous())  # 1 x N
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1])
            x_scale = flat.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / self.limit  # M x 1
            scaled = (flat.float() / x_scale).clamp(-self.limit, self.limit)
            if kind == "fp8":
                y = torch._scaled_mm(scaled.to(torch.float8_e4m3fn), self.w_q, scale_a=x_scale, scale_b=self.w_scale,
                                     bias=self.bias, out_dtype=torch.bfloat16, use_fast_accum=True)
            else:
                y = (torch._int_mm(torch.round(scaled).to(torch.int8), self.w_q).float() * x_scale * self.w_scale).to(x.dtype)
                y = y if self.bias is None else y + self.bias
            return y.reshape(*x.shape[:-1], y.shape[-1])

    return RowwiseLinear()


def variants(calibration: np.ndarray) -> list[tuple[str, Callable[[], Any]]]:
    """Name -> a TorchBackend (torch.compile + CUDA graphs) for each configuration."""
    import torch

    from operators.inference.backends.fp8 import replace_linears
    from operators.inference.backends.pytorch import TorchBackend
    from operators.inference.backends.vit_kernels import fuse_kernels

    def backend(tower: Any, precision: str = "bf16", **options: Any) -> TorchBackend:
        return TorchBackend(tower, "cuda", precision, compile=True, cuda_graphs=True, **options)

    def patch_gemm_only() -> Any:
        return fuse_kernels(build_tower().to("cuda", torch.bfloat16), gelu_epilogue=False)

    def fp8(fast_accum: bool) -> TorchBackend:
        made = backend(build_tower(), "fp8", calibration=calibration)
        for layer in made.forward.modules():
            if hasattr(layer, "fast_accum"):
                layer.fast_accum = fast_accum
        return made

    def rowwise(kind: str) -> TorchBackend:  # INT8 needs > 16 rows: the pooled projection (1 row at batch 1) stays bf16
        made = backend(patch_gemm_only(), fused_kernels=False)
        # swapped after TorchBackend's cast to bf16, which would also cast the quantised weights
        replace_linears(made.forward.trunk.blocks, lambda linear: rowwise_linear(linear, kind))
        return made

    return [
        ("bf16, timm modules", lambda: backend(build_tower(), fused_kernels=False)),
        ("bf16, + patch embedding as GEMM", lambda: backend(patch_gemm_only(), fused_kernels=False)),
        ("bf16, + GELU in the fc1 epilogue (product)", lambda: backend(build_tower())),
        ("fp8 per-tensor static, promoted accumulation", lambda: fp8(False)),
        ("fp8 per-tensor static, fast accumulation (product)", lambda: fp8(True)),
        ("fp8 per-token x per-channel, dynamic", lambda: rowwise("fp8")),
        ("int8 per-token x per-channel, dynamic", lambda: rowwise("int8")),
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from operators.inference.backends.fp8 import _fp8_linear, replace_linears

    images = load_fidelity_set(args.fidelity)

    def embed(forward: Callable[[Any], Any], dtype: Any, chunk: int = 256) -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([forward(torch.from_numpy(images[i : i + chunk]).to("cuda", dtype)).float().cpu().numpy()
                                   for i in range(0, len(images), chunk)])

    reference = embed(build_tower().eval().cuda(), torch.float32)
    timed = []
    for name, make in variants(load_fidelity_set(args.fidelity, "calibration")):
        if args.only and args.only not in name:
            continue
        made = make()
        row: dict[str, Any] = {"config": name}
        for batch in (1, 256):
            x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device="cuda")
            row[f"bs{batch}_ms"] = statistics.median(time_gpu(made.embed_tensor, x, 200 if batch == 1 else 40))
        row["bs256_images_per_s"] = 256 / row["bs256_ms"] * 1e3
        row["fidelity"] = fidelity(embed(made.embed_tensor, torch.float32), reference)
        timed.append(row)
        print(f"{name:52s} bs1 {row['bs1_ms']:.3f} ms  bs256 {row['bs256_images_per_s']:8,.0f} img/s  {row['fidelity']}", flush=True)
        del made
        torch._dynamo.reset()
    sensitivity = []
    for layer in ("qkv", "proj", "fc1", "fc2"):  # ("proj" is the attention output and the final projection)
        tower = replace_linears(build_tower().eval().to("cuda", torch.bfloat16), _fp8_linear, lambda name, _, layer=layer: name == layer)
        sensitivity.append({"fp8_only_in": layer, "fidelity": fidelity(embed(tower, torch.bfloat16, 128), reference)})
        print("fp8 only in", layer, sensitivity[-1]["fidelity"], flush=True)
    props = torch.cuda.get_device_properties(0)
    return {"kind": "ablations", "device": props.name, "compute_capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
            "fidelity_images": len(images), "compiled": timed, "fp8_sensitivity": sensitivity}


def report(data: dict[str, Any]) -> str:
    lines = [f"#### Ablations on {data['device']} (`benchmarks/gpu_ablations.py`; torch.compile + CUDA graphs, "
             f"fidelity vs eager fp32 on {data['fidelity_images']} images)", "",
             "| configuration | bs1 ms | bs256 img/s | cosine min / mean | top-1 agreement |", "|---|---:|---:|---:|---:|"]
    for row in data["compiled"]:
        f = row["fidelity"]
        lines.append(f"| {row['config']} | {row['bs1_ms']:.3f} | {row['bs256_images_per_s']:,.0f} | "
                     f"{f['cosine_min']:.4f} / {f['cosine_mean']:.4f} | {f['top1_agreement']:.1%} |")
    lines += ["", "FP8 (per-tensor, dynamic) on one kind of linear layer only, the rest bf16, eager:", "",
              "| FP8 only in | cosine min / mean | top-1 agreement |", "|---|---:|---:|"]
    for row in data["fp8_sensitivity"]:
        f = row["fidelity"]
        lines.append(f"| {row['fp8_only_in']} | {f['cosine_min']:.4f} / {f['cosine_mean']:.4f} | {f['top1_agreement']:.1%} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fidelity", type=Path, default=ROOT / ".bench" / "fidelity.npz")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", help="run only the configurations whose name contains this text")
    parser.add_argument("--report", type=Path, help="print the Markdown tables of an earlier run's JSON")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
