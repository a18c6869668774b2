"""Exploration (not the deliverable): which changes move the compiled image tower on Hopper.

Kept verbatim as the record of the numbers in results.txt (docs/backends.md cites them). Run on the lent
GPU from the repository root, with the fidelity set in .bench/ and open_clip/timm installed:

    PROF=1 python benchmarks/probes/2026-11-27/probe.py patch-gelu patch-gelu-flash int8-row-patch-mat ...

Variant names combine: patch (patch embedding as GEMM), gelu (GELU epilogue), flash/efficient/cudnn/flex
(attention), int8-row / fp8-row / fp8-tensor (quantised linears), -mat (max-autotune GEMMs), -cdt
(coordinate-descent tuning of Inductor's own kernels), -fuse (Inductor's int_mm + mul fusion); streams-NxB
replays N graphs captured on ONE stream at once, which shares cuBLAS's workspace: its outputs are wrong.
"""
import json, os, statistics, sys, time, traceback
from pathlib import Path
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
from benchmarks.gpu import build_tower, load_fidelity_set, fidelity, time_gpu
from operators import backends as B
from torch.nn.attention import SDPBackend, sdpa_kernel

torch.backends.cuda.matmul.allow_tf32 = False
dev = torch.device("cuda")
images = load_fidelity_set(ROOT / ".bench/fidelity.npz")
calib = load_fidelity_set(ROOT / ".bench/fidelity.npz", "calibration")


class GeluEpilogueMlp(torch.nn.Module):
    def __init__(self, mlp):
        super().__init__()
        self.fc1, self.fc2 = mlp.fc1, mlp.fc2

    def forward(self, x):
        h = torch._addmm_activation(self.fc1.bias, x.reshape(-1, x.shape[-1]), self.fc1.weight.t(), use_gelu=True)
        return self.fc2(h).reshape(*x.shape[:-1], -1)


def fuse_gelu(tower):
    for block in tower.trunk.blocks:
        block.mlp = GeluEpilogueMlp(block.mlp)
    return tower


class PatchGemm(torch.nn.Module):
    def __init__(self, pe):
        super().__init__()
        self.p = pe.patch_size[0]
        w = pe.proj.weight.detach()
        self.weight = torch.nn.Parameter(w.reshape(w.shape[0], -1), requires_grad=False)
        self.bias = pe.proj.bias

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.p
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
        return torch.nn.functional.linear(patches, self.weight, self.bias)


class Int8Row(torch.nn.Module):
    def __init__(self, linear):
        super().__init__()
        w = linear.weight.detach().float()
        s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        self.register_buffer("w_i8", torch.round(w / s).to(torch.int8).t())
        self.register_buffer("w_scale", s.t().contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        xs = flat.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / 127.0
        q = torch.round(flat.float() / xs).clamp(-127, 127).to(torch.int8)
        y = torch._int_mm(q, self.w_i8).float() * xs * self.w_scale
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], y.shape[-1])


def swap_linears(m, factory, only=None):
    for n, c in m.named_children():
        if isinstance(c, torch.nn.Linear) and c.in_features % 16 == 0 and c.out_features % 16 == 0 and (only is None or n == only):
            setattr(m, n, factory(c))
        else:
            swap_linears(c, factory, only)
    return m


class Row8(torch.nn.Module):
    """per-token dynamic activation scale, per-output-channel weight scale"""
    def __init__(self, linear, fast):
        super().__init__()
        w = linear.weight.detach().float()
        s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448.0  # (N,1)
        self.register_buffer("w_fp8", (w / s).to(torch.float8_e4m3fn).t())
        self.register_buffer("w_scale", s.t().contiguous())  # (1,N)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))
        self.fast = fast

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        xs = flat.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / 448.0
        q = (flat.float() / xs).clamp(-448, 448).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(q, self.w_fp8, scale_a=xs, scale_b=self.w_scale, bias=self.bias, out_dtype=torch.bfloat16,
                             use_fast_accum=self.fast)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def to_row8(m, fast):
    for n, c in m.named_children():
        if isinstance(c, torch.nn.Linear) and c.in_features % 16 == 0 and c.out_features % 16 == 0:
            setattr(m, n, Row8(c, fast))
        else:
            to_row8(c, fast)
    return m


class Attn(torch.nn.Module):
    def __init__(self, tower, backend):
        super().__init__()
        self.tower, self.backend = tower, backend

    def forward(self, x):
        with sdpa_kernel([self.backend]):
            return self.tower(x)


_scaled_mm = torch._scaled_mm
FAST = [False]


def patched_scaled_mm(*a, **k):  # the current per-tensor FP8 path, with fast accumulation switched by variant
    k.setdefault("use_fast_accum", FAST[0])
    return _scaled_mm(*a, **k)


torch._scaled_mm = patched_scaled_mm


def make(variant):
    t = build_tower()
    dtype = torch.float16 if "fp16" in variant else torch.bfloat16
    t = t.eval().to(dev, dtype)
    if "gelu" in variant:
        fuse_gelu(t)
    FAST[0] = "fast" in variant
    if variant.startswith("fp8-tensor"):
        t = B.to_fp8(t)
        B.calibrate_fp8(t, [torch.from_numpy(calib[i:i + 16]).to(dev, dtype) for i in range(0, len(calib), 16)])
    if "patch" in variant:
        t.trunk.patch_embed = PatchGemm(t.trunk.patch_embed)
    if variant.startswith("int8-row"):
        swap_linears(t.trunk.blocks, Int8Row)
    if variant.startswith("sens-"):  # fp8 (per-tensor, dynamic) on one kind of layer only; eager
        swap_linears(t, B._fp8_linear, only=variant.split("-")[1])
        return t, dtype
    if variant.startswith("fp8-row"):
        t = to_row8(t, fast="slow" not in variant)
    if "cudnn" in variant:
        t = Attn(t, SDPBackend.CUDNN_ATTENTION)
    if "flash" in variant:
        t = Attn(t, SDPBackend.FLASH_ATTENTION)
    if "efficient" in variant:
        t = Attn(t, SDPBackend.EFFICIENT_ATTENTION)
    if "flex" in variant:
        for block in t.trunk.blocks:
            block.attn = FlexAttn(block.attn)
    options = {}
    if "-mat" in variant:
        options["max_autotune_gemm"] = True
    if "-cdt" in variant:  # Inductor tunes its own pointwise/reduction kernels' block sizes and warps
        options["coordinate_descent_tuning"] = True
        options["max_autotune_pointwise"] = True
    if "-fuse" in variant:
        options["force_fuse_int_mm_with_mul"] = True
    return (torch.compile(t, options=options) if options else torch.compile(t)), dtype


class FlexAttn(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.qkv, self.proj, self.h = attn.qkv, attn.proj, attn.num_heads

    def forward(self, x, attn_mask=None, **kwargs):
        from torch.nn.attention.flex_attention import flex_attention
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(flex_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


def graphed(fn, shape, dtype):
    x = torch.zeros(shape, device=dev, dtype=dtype)
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.inference_mode():
        for _ in range(2):
            fn(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.inference_mode():
        y = fn(x)

    def run(b):
        x.copy_(b); g.replay(); return y
    return run


import torch.nn.attention as _na
print("torch", torch.__version__, torch.cuda.get_device_name(), "attention impls:", [n for n in dir(_na) if "impl" in n.lower()], flush=True)
for impl in ("FA3", "FA4"):
    try:
        _na.activate_flash_attention_impl(impl); print("activated", impl, flush=True); _na.restore_flash_attention_impl()
    except Exception as e:
        print(impl, "unavailable:", type(e).__name__, str(e)[:200], flush=True)
ref_tower = build_tower().to(dev)
with torch.inference_mode():
    ref = np.concatenate([ref_tower(torch.from_numpy(images[i:i + 128]).to(dev)).float().cpu().numpy() for i in range(0, 512, 128)])
del ref_tower

results = {}
for variant in sys.argv[1:]:
    if variant.startswith("streams"):  # streams-<n>x<bs>: n CUDA graphs of batch bs replayed on n streams at once
        n, bs = map(int, variant.split("-")[1].split("x"))
        fn, dtype = make("patch-gelu")
        runs = [graphed(fn, (bs, 3, 224, 224), dtype) for _ in range(n)]
        streams = [torch.cuda.Stream() for _ in range(n)]
        xs = [torch.randn(bs, 3, 224, 224, device=dev) for _ in range(n)]
        def together(_):
            main = torch.cuda.current_stream()
            for st, r, x in zip(streams, runs, xs):
                st.wait_stream(main)
                with torch.cuda.stream(st):
                    r(x)
            for st in streams:
                main.wait_stream(st)
        ms = statistics.median(time_gpu(together, None, 40))
        print(f"{variant:34s} {n * bs / ms * 1e3:8.0f} img/s ({n} streams x batch {bs})", flush=True)
        torch._dynamo.reset()
        continue
    if variant.startswith("sens-"):
        fn, dtype = make(variant)
        with torch.inference_mode():
            feats = np.concatenate([fn(torch.from_numpy(images[i:i + 128]).to(dev, dtype)).float().cpu().numpy() for i in range(0, 512, 128)])
        f = fidelity(feats, ref)
        print(f"{variant:34s} cos {f['cosine_min']:.5f}/{f['cosine_mean']:.5f} top1 {f['top1_agreement']:.4f}", flush=True)
        continue
    try:
        t0 = time.perf_counter()
        fn, dtype = make(variant)
        row = {}
        for bs in ((256,) if "-mat" in variant else (1, 256)):
            run = graphed(fn, (bs, 3, 224, 224), dtype)
            x = torch.randn(bs, 3, 224, 224, device=dev)
            ms = statistics.median(time_gpu(run, x, 200 if bs == 1 else 40))
            row[bs] = ms
            if bs == 256:
                feats = np.concatenate([run(torch.from_numpy(images[i:i + 256]).to(dev)).float().cpu().numpy() for i in range(0, 512, 256)])
            if bs == 256 and os.environ.get("PROF"):
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        run(x)
                    torch.cuda.synchronize()
                ev = sorted((e for e in prof.key_averages() if e.device_type.name == "CUDA"), key=lambda e: -e.device_time_total)
                tot = sum(e.device_time_total for e in ev) / 5e3
                print(f"  total {tot:.2f} ms/batch")
                for e in ev[:14]:
                    print(f"   {e.device_time_total / 5e3:6.2f} ms x{e.count // 5:3d}  {e.key[:120]}")
        f = fidelity(feats, ref)
        row.setdefault(1, float("nan"))
        results[variant] = {"bs1_ms": row[1], "bs256_img_s": 256 / row[256] * 1e3, **f, "s": time.perf_counter() - t0}
        print(f"{variant:34s} bs1 {row[1]:.3f} ms  bs256 {256 / row[256] * 1e3:8.0f} img/s  cos {f['cosine_min']:.5f}/{f['cosine_mean']:.5f} top1 {f['top1_agreement']:.4f}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    except Exception as e:
        traceback.print_exc(limit=3)
        print(f"{variant}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
    torch._dynamo.reset()
out = Path(os.environ.get("OUT", "/tmp")) / "probe.json"
out.write_text(json.dumps(results, indent=1))
