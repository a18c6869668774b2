"""Exploration: residual adds in the GEMM epilogue + a hand-written LayerNorm (issue 5, fp16 >= 15k img/s).

Kept as the record of results.txt. Neither change paid, so the code it measures was removed after the run:
ResidualStreamBlocks (operators/inference/backends/vit_kernels.py), operators/triton_layer_norm.py and
TorchBackend(residual_stream=...) live at commit a52a607. To rerun, check that commit out and run on the
lent GPU from the repository root, with the fidelity set in .bench/ and open_clip/timm installed:

    python benchmarks/probes/2026-11-27-residual/probe.py

1. LayerNorm kernels alone at batch 256 (50,432 rows of 768): Inductor's fused residual add + LayerNorm
   as the product runs it today (reads GEMM output + residual, writes residual + normalised), Inductor's
   LayerNorm of stream + shift (reads 1, writes 1), and the Triton kernel at several launch shapes.
2. The tower, compile + CUDA graphs: today's bf16 vs ``residual_stream`` with Inductor's / the Triton
   LayerNorm, bf16 and fp16, with fidelity vs fp32 on the 512-image set and a kernel-time profile.
"""
import statistics, sys
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parents[3]
from benchmarks.gpu import build_tower, fidelity, kernel_group, load_fidelity_set, time_gpu
from operators.inference.backends.pytorch import TorchBackend
from operators.triton_layer_norm import shifted_layer_norm

dev = torch.device("cuda")
print("torch", torch.__version__, torch.cuda.get_device_name(), flush=True)
rows, width = 256 * 197, 768
tensor_bytes = rows * width * 2


def bench(fn, tensors):
    ms = do_bench(fn, warmup=50, rep=300, return_mode="median")
    print(f"   {ms * 1e3:8.1f} us  {tensors * tensor_bytes / ms / 1e9:6.2f} TB/s", flush=True)
    return ms


w, b = torch.randn(width, device=dev, dtype=torch.bfloat16), torch.randn(width, device=dev, dtype=torch.bfloat16)
shift = torch.randn(width, device=dev)
x = torch.randn(rows, width, device=dev, dtype=torch.bfloat16)
mm = torch.randn(rows, width, device=dev, dtype=torch.bfloat16)
bias = torch.randn(width, device=dev, dtype=torch.bfloat16)
copy_ms = do_bench(lambda: mm.copy_(x), warmup=50, rep=300, return_mode="median")
print(f"device copy {2 * tensor_bytes / copy_ms / 1e9:.2f} TB/s", flush=True)


@torch.compile
def today(mm, bias, x):  # what Inductor fuses after attn.proj / mlp.fc2: residual + bias add, LayerNorm
    new = x + (mm + bias)
    return new, F.layer_norm(new, (width,), w, b, 1e-6)


@torch.compile
def shifted(x, shift):
    return F.layer_norm(x.float() + shift, (width,), w.float(), b.float(), 1e-6).to(x.dtype)


print("inductor residual add + LayerNorm (4 tensors)", flush=True)
bench(lambda: today(mm, bias, x), 4)
print("inductor LayerNorm of stream + shift (2 tensors)", flush=True)
bench(lambda: shifted(x, shift), 2)
ref = shifted(x, shift).float()
best = None
for launch in ((1, 2), (1, 4), (2, 4), (4, 4), (4, 8), (8, 8), (16, 8)):
    y = shifted_layer_norm(x, shift, w, b, 1e-6, *launch)
    err = ((y.float() - ref).norm() / ref.norm()).item()
    print(f"triton rows/program={launch[0]} warps={launch[1]}  rel.err {err:.1e}", flush=True)
    ms = bench(lambda: shifted_layer_norm(x, shift, w, b, 1e-6, *launch), 2)
    if err < 1e-2 and (best is None or ms < best[0]):
        best = (ms, launch)
print("best launch", best, flush=True)

images = load_fidelity_set(ROOT / ".bench/fidelity.npz")
ref_tower = build_tower().to(dev)
with torch.inference_mode():
    reference = np.concatenate([ref_tower(torch.from_numpy(images[i:i + 128]).to(dev)).float().cpu().numpy() for i in range(0, 512, 128)])
del ref_tower

configs = [("today bf16", "bf16", False, None), ("residual bf16, inductor LN", "bf16", True, False),
           ("residual bf16, triton LN", "bf16", True, True), ("residual fp16, triton LN", "fp16", True, True),
           ("today fp16", "fp16", False, None)]
for name, precision, residual, triton_norm in configs:
    backend = TorchBackend(build_tower(), "cuda", precision, compile=True, cuda_graphs=True, residual_stream=residual)
    if residual:
        blocks = backend.forward._orig_mod.trunk.blocks
        blocks.triton_norm, blocks.norm_launch = triton_norm, best[1]
    for batch in (1, 64, 256):
        xb = torch.randn(batch, 3, 224, 224, device=dev)
        ms = statistics.median(time_gpu(backend.embed_tensor, xb, max(20, min(200, 4096 // batch))))
        print(f"{name:30s} bs{batch:<4d} {ms:8.3f} ms {batch / ms * 1e3:9.0f} img/s", flush=True)
    feats = np.concatenate([backend.embed_tensor(torch.from_numpy(images[i:i + 256]).to(dev)).float().cpu().numpy()
                            for i in range(0, 512, 256)])
    print(f"{name:30s} fidelity {fidelity(feats, reference)}", flush=True)
    xb = torch.randn(256, 3, 224, 224, device=dev)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            backend.embed_tensor(xb)
        torch.cuda.synchronize()
    groups = {}
    for e in prof.key_averages():
        if e.device_type.name == "CUDA":
            key = "layernorm (triton, hand-written)" if "shifted_layer_norm" in e.key else kernel_group(e.key)
            groups[key] = groups.get(key, 0.0) + e.device_time_total / 5 / 1e3
    print(f"{name:30s} profile ms/batch256 {dict((k, round(v, 2)) for k, v in sorted(groups.items(), key=lambda kv: -kv[1]))}", flush=True)
    del backend
    torch._dynamo.reset()
