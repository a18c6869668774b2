#!/usr/bin/env python3
"""Backend x precision x batch benchmark of the BiomedCLIP image tower, with fidelity vs fp32.

GPU (run on the lent H100/H200 through the device tool; no model package needed there):

    python -m benchmarks.backends gpu --fidelity .bench/fidelity.npz --out $OUT/gpu.json [--compiled | --onnxruntime]

  builds the exact image tower (open_clip config, seeded random weights) and times, side by side with
  PyTorch eager fp32 in the same run: eager fp32/fp16/bf16, CUDA graphs fp16/bf16, FP8 (e4m3,
  torch._scaled_mm) with CUDA graphs, and with ``--compiled`` torch.compile + CUDA graphs fp16/bf16/fp8
  (and bf16 without the kernel rewrites of ``operators.inference.backends.vit_kernels``, for the ratio), and the same with
  2 or 4 batches in flight on their own CUDA streams (``streams``; there a row's ms is for all of them
  and its img/s counts them all).
  With ``--onnxruntime`` (onnxruntime-gpu installed): ONNX Runtime's CUDA provider on the package's fp32
  and fp16 ONNX and on ONNX Runtime's own fused graph, each with and without CUDA graphs, through I/O
  binding on device tensors. TensorRT and the ONNX Runtime CUDA provider are otherwise tried and recorded as
  unavailable when they are.

CPU (here): ONNX Runtime fp32 vs INT8 dynamic vs INT8 Q/DQ (MatMul/Gemm/Conv) from a package built
with ``--variants``:

    .venv/bin/python -m benchmarks.backends cpu --package models/biomedclip-variants --out benchmarks/backends_cpu.json

Report (JSON -> BENCHMARKS.md section + PNG):

    .venv/bin/python -m benchmarks.backends report benchmarks/backends_gpu.json benchmarks/backends_cpu.json

Fidelity: cosine (min, mean) of each configuration's embeddings vs fp32 on the fidelity set (512 real
images, ``make_fidelity_set.py``), and top-1 agreement of a 20-label zero-shot decision. With random
weights there is no meaningful text tower, so the 20 label embeddings are the fp32 embeddings of 20
images of the set (nearest-label decision over the rest): a proxy that keeps this network's feature
geometry. Medians over repeated CUDA-event-timed iterations after warm-up.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import cpu_name, write_section
from benchmarks.gpu import build_tower, fidelity, kernel_group, load_fidelity_set, time_gpu
from operators.imaging.preprocessing import IMAGE_SIZE

ROOT = Path(__file__).resolve().parent.parent

BATCHES = (1, 8, 64, 256)
FLOPS_PER_IMAGE = 35.1e9  # ViT-B/16 at 224 + projection (facts.md)
BEGIN, END = "<!-- backends:begin -->", "<!-- backends:end -->"


# ----------------------------------------------------------------------------------------------- GPU
def gpu(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from operators.inference.backends.base import BackendUnavailable
    from operators.inference.backends.onnxruntime import OnnxRuntimeBackend
    from operators.inference.backends.pytorch import TorchBackend

    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    images = load_fidelity_set(args.fidelity)
    calibration = load_fidelity_set(args.fidelity, "calibration")
    configs: list[tuple[str, dict[str, Any]]] = [
        ("pytorch eager fp32", {"precision": "fp32"}),
        ("pytorch eager fp16", {"precision": "fp16"}),
        ("pytorch eager bf16", {"precision": "bf16"}),
        ("pytorch cudagraph fp16", {"precision": "fp16", "cuda_graphs": True}),
        ("pytorch cudagraph bf16", {"precision": "bf16", "cuda_graphs": True}),
        ("pytorch cudagraph fp8 dynamic scales", {"precision": "fp8", "cuda_graphs": True}),
    ]
    batches = BATCHES
    if args.autotune:  # max-autotune GEMM templates with fused epilogues; minutes of tuning per shape
        batches = (1, 256)
        configs = [configs[0]] + [
            ("pytorch max-autotune+cudagraph fp16",
             {"precision": "fp16", "compile": True, "cuda_graphs": True, "compile_mode": "max-autotune-no-cudagraphs"}),
            ("pytorch max-autotune+cudagraph fp8 static scales",
             {"precision": "fp8", "compile": True, "cuda_graphs": True, "calibration": calibration,
              "compile_mode": "max-autotune-no-cudagraphs"}),
        ]
    elif args.compiled:
        configs = [configs[0]] + [
            ("pytorch compile+cudagraph bf16, timm modules", {"precision": "bf16", "compile": True, "cuda_graphs": True,
                                                             "fused_kernels": False}),
            ("pytorch compile+cudagraph fp16", {"precision": "fp16", "compile": True, "cuda_graphs": True}),
            ("pytorch compile+cudagraph bf16", {"precision": "bf16", "compile": True, "cuda_graphs": True}),
            ("pytorch compile+cudagraph fp8 static scales",
             {"precision": "fp8", "compile": True, "cuda_graphs": True, "calibration": calibration}),
            # several batches in flight, one CUDA stream + graph each: can one batch's memory-bound kernels
            # overlap another's GEMMs? (measured: only while a batch is too small to fill the GPU)
            ("pytorch compile+cudagraph fp16, 2 streams", {"precision": "fp16", "compile": True, "cuda_graphs": True, "streams": 2}),
            ("pytorch compile+cudagraph fp16, 4 streams", {"precision": "fp16", "compile": True, "cuda_graphs": True, "streams": 4}),
            ("pytorch compile+cudagraph bf16, 2 streams", {"precision": "bf16", "compile": True, "cuda_graphs": True, "streams": 2}),
            ("pytorch compile+cudagraph bf16, 4 streams", {"precision": "bf16", "compile": True, "cuda_graphs": True, "streams": 4}),
            ("pytorch compile+cudagraph fp8 static scales, 2 streams",
             {"precision": "fp8", "compile": True, "cuda_graphs": True, "calibration": calibration, "streams": 2}),
            ("pytorch compile+cudagraph fp8 static scales, 4 streams",
             {"precision": "fp8", "compile": True, "cuda_graphs": True, "calibration": calibration, "streams": 4}),
        ]
    elif args.onnxruntime:
        configs = [configs[0], configs[4]] + onnxruntime_configs(Path(tempfile.mkdtemp(prefix="onnx-")))

    def make_backend(options: dict[str, Any]) -> Any:
        if "onnx" not in options:
            streams = options.pop("streams", 1)
            backend = TorchBackend(build_tower(), "cuda", **options)
            return StreamLanes(backend, streams) if streams > 1 else backend
        backend = OnnxRuntimeBackend(options["onnx"], "pixel_values", "image_features", options["precision"],
                                     cuda_graphs=options["cuda_graphs"])
        if "CUDAExecutionProvider" not in backend.name:
            raise BackendUnavailable(f"onnxruntime {backend.ort.__version__} has no CUDAExecutionProvider")
        return backend

    results, reference, unavailable = [], None, {}
    for name, options in configs:
        torch.cuda.empty_cache()
        setup_start = time.perf_counter()
        try:
            backend = make_backend(options)
            run_result = time_backend(name, backend, batches, images)
        except BackendUnavailable as exc:
            unavailable[name] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - an ONNX Runtime configuration that fails is recorded, the rest go on
            if "onnx" not in options:
                raise
            unavailable[name] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
            print(f"{name:34s} {unavailable[name]}", flush=True)
            continue
        rows, features = run_result
        if reference is None:
            reference = features
        results.append({"config": name, "rows": rows, "fidelity": fidelity(features, reference),
                        "setup_and_timing_s": time.perf_counter() - setup_start})
        print(f"{name:34s} fidelity {results[-1]['fidelity']}", flush=True)
        del backend
        torch._dynamo.reset()  # each configuration compiles afresh, not against the earlier ones' recompile limit
    for name, probe in (("tensorrt", "tensorrt"), ("onnxruntime CUDA", "onnxruntime")):
        if any(r["config"].startswith(name) for r in results):
            continue
        try:
            module = importlib.import_module(probe)
            if probe == "onnxruntime" and "CUDAExecutionProvider" not in module.get_available_providers():
                raise BackendUnavailable(f"onnxruntime {module.__version__} has no CUDAExecutionProvider")
            unavailable[name] = f"importable ({module.__version__}) but not benchmarked in this run"
        except (ImportError, BackendUnavailable) as exc:
            unavailable[name] = str(exc)
    return {
        "kind": "gpu", "device": props.name, "compute_capability": f"{props.major}.{props.minor}",
        "torch": torch.__version__, "cuda": torch.version.cuda, "fidelity_images": len(images),
        "results": results, "unavailable": unavailable,
    } | ({"onnxruntime": importlib.import_module("onnxruntime").__version__} if args.onnxruntime else {})


class StreamLanes:
    """``streams`` batches in flight at once, each replaying its own CUDA graph on its own stream.

    Measured on a lent H200 (BENCHMARKS.md): it adds images/s only while one batch leaves the GPU idle
    (batch 1: x1.4-1.8, batch 8: +9 %), never past what one larger batch gives, and nothing at batch >= 64;
    so the app runs one lane and only this benchmark uses more."""

    def __init__(self, backend: Any, streams: int) -> None:
        import torch

        self.backend, self.streams = backend, streams
        self.lanes = [torch.cuda.Stream(backend.device) for _ in range(streams)]
        self.name = f"{backend.name}-{streams}streams"

    def embed_tensors(self, batches: Sequence[Any]) -> list[Any]:
        """Up to one device batch per lane; the outputs are the lanes' graph buffers, valid until the next call."""
        import torch

        if len(batches) > self.streams:
            raise ValueError(f"{len(batches)} batches for {self.streams} streams")
        main = torch.cuda.current_stream(self.backend.device)
        outputs = []
        for stream, batch in zip(self.lanes, batches):
            graph, static_in, static_out = self.backend.graph_for(tuple(batch.shape), stream)
            stream.wait_stream(main)  # the input is ready, the lane's last output has been read
            with torch.cuda.stream(stream):
                static_in.copy_(batch)
                graph.replay()
            outputs.append(static_out)
        for stream in self.lanes[: len(batches)]:
            main.wait_stream(stream)
        return outputs


def time_backend(name: str, backend: Any, batches: Sequence[int], images: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Timed rows per batch size, and the embeddings of the fidelity images."""
    import torch

    device = torch.device("cuda")
    lanes = getattr(backend, "streams", 1)  # each timed call embeds `lanes` batches at once

    def embed(xs: list[Any]) -> list[Any]:
        return backend.embed_tensors(xs) if lanes > 1 else [backend.embed_tensor(xs[0])]

    rows = []
    for batch in batches:
        xs = [torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=device) for _ in range(lanes)]
        torch.cuda.reset_peak_memory_stats(device)
        ms = statistics.median(time_gpu(embed, xs, max(20, min(200, 4096 // batch))))
        rows.append({"batch": batch, "streams": lanes, "median_ms": ms, "images_per_s": lanes * batch / ms * 1e3,
                     "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20})
        print(f"{name:34s} bs{batch:<4d} {ms:8.3f} ms {lanes * batch / ms * 1e3:10.0f} img/s", flush=True)
    chunks = [torch.from_numpy(images[i : i + max(batches)]).to(device) for i in range(0, len(images), max(batches))]
    features = np.concatenate([output.float().cpu().numpy() for start in range(0, len(chunks), lanes)
                               for output in embed(chunks[start : start + lanes])])
    return rows, features


def onnxruntime_configs(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """ONNX Runtime CUDA configurations over ONNX artefacts built here from the same seeded tower: the
    package's fp32 and fp16 (TorchScript export; what TensorRT takes) and ONNX Runtime's own fused graph
    (``export_onnx_fused_for_onnxruntime``), each with and without CUDA graphs."""
    from types import SimpleNamespace

    from models.builder import export_onnx, export_onnx_fused_for_onnxruntime, onnx_fp16

    model = SimpleNamespace(visual=build_tower())
    export_onnx(model, folder / "fp32.onnx")
    onnx_fp16(folder / "fp32.onnx", folder / "fp16.onnx")
    for precision in ("fp32", "fp16"):
        fusions = export_onnx_fused_for_onnxruntime(model, folder / f"fused-{precision}.onnx", precision == "fp16")
    print("ONNX Runtime fusions:", fusions, flush=True)
    return [(f"onnxruntime CUDA {precision}{', ORT fusions' if fused else ''}{' + CUDA graphs' if graphs else ''}",
             {"onnx": str(folder / f"{'fused-' if fused else ''}{precision}.onnx"), "precision": precision, "cuda_graphs": graphs})
            for fused in (False, True) for precision in ("fp32", "fp16") for graphs in (False, True)]


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """Where the GPU time goes at batch 256: kernel time grouped by kind (compiled fp16; compiled fp8 static)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from operators.inference.backends.pytorch import TorchBackend

    out: dict[str, Any] = {}
    top_kernels: dict[str, Any] = {}
    calibration = load_fidelity_set(args.fidelity, "calibration")
    for precision in ("fp16", "fp8"):
        backend = TorchBackend(build_tower(), "cuda", precision, compile=True, calibration=calibration if precision == "fp8" else None)
        x = torch.randn(256, 3, IMAGE_SIZE, IMAGE_SIZE, device="cuda")
        for _ in range(3):
            backend.embed_tensor(x)
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                backend.embed_tensor(x)
            torch.cuda.synchronize()
        kernels = sorted(((e.key, e.device_time_total / 5 / 1e3, e.count // 5) for e in prof.key_averages()
                          if e.device_type.name == "CUDA"), key=lambda k: -k[1])
        groups: dict[str, float] = {}
        for name, ms, _ in kernels:
            groups[kernel_group(name)] = groups.get(kernel_group(name), 0.0) + ms
        out[precision] = dict(sorted(groups.items(), key=lambda kv: -kv[1]))
        top_kernels[precision] = [{"kernel": name[:160], "ms": ms, "calls": calls} for name, ms, calls in kernels[:12]]
        print(precision, {k: round(v, 2) for k, v in out[precision].items()}, "ms per batch of 256", flush=True)
        for name, ms, calls in kernels[:12]:
            print(f"   {ms:7.2f} ms x{calls:3d}  {name[:110]}", flush=True)
        del backend
        torch._dynamo.reset()
    return {"kind": "profile", "device": torch.cuda.get_device_name(), "ms_per_batch256": out, "top_kernels": top_kernels}


# ----------------------------------------------------------------------------------------------- CPU
def cpu(args: argparse.Namespace) -> dict[str, Any]:
    from operators.inference.backends.onnxruntime import OnnxRuntimeBackend
    from operators.inference.model_package import ModelPackage

    package = ModelPackage.load(args.package, verify=False)
    images = load_fidelity_set(args.fidelity)[: args.images]
    configs = [("onnxruntime fp32", "fp32", ()), ("onnxruntime int8 dynamic", "int8", ("dynamic",)),
               ("onnxruntime int8 Q/DQ MatMul/Gemm/Conv", "int8", ("qdq",))]
    backends = {name: OnnxRuntimeBackend(str(package.artefact(p, flavour)), "pixel_values", "image_features", p)
                for name, p, flavour in configs}
    timings: dict[str, dict[int, list[float]]] = {name: {1: [], 8: []} for name in backends}
    rng = np.random.default_rng(0)
    for _ in range(args.repeats):  # interleaved: every backend sees the same machine state
        for batch in (1, 8):
            x = rng.standard_normal((batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
            for name, backend in backends.items():
                backend.embed(x)  # warm
                start = time.perf_counter()
                backend.embed(x)
                timings[name][batch].append((time.perf_counter() - start) * 1e3)
    reference = None
    results = []
    for name, backend in backends.items():
        features = np.concatenate([backend.embed(images[i : i + 8]) for i in range(0, len(images), 8)])
        reference = features if reference is None else reference
        rows = [{"batch": b, "median_ms": statistics.median(t), "images_per_s": b / statistics.median(t) * 1e3}
                for b, t in timings[name].items()]
        results.append({"config": name, "rows": rows, "fidelity": fidelity(features, reference),
                        "onnx_mb": package.artefact(*[(p, f) for n, p, f in configs if n == name][0]).stat().st_size / 1e6})
        print(name, rows, results[-1]["fidelity"], flush=True)
    return {"kind": "cpu", "device": f"{cpu_name()}, {os.cpu_count()} cores", "load_average": os.getloadavg(),
            "repeats": args.repeats, "fidelity_images": len(images), "results": results}


# -------------------------------------------------------------------------------------------- report
def report(paths: list[Path], out_dir: Path) -> str:
    from benchmarks.gpu_ablations import report as ablation_tables

    runs = [json.loads(p.read_text()) for p in paths]
    lines = [BEGIN, "## Inference backends (`benchmarks/backends.py`)", ""]
    for run in runs:
        if run["kind"] == "profile":
            lines += profile_table(run)
            continue
        if run["kind"] == "ablations":
            lines += [ablation_tables(run), ""]
            continue
        kind = run["kind"].upper()
        configs = [r["config"] for r in run["results"]]
        onnxruntime_run = any(c.startswith("onnxruntime") for c in configs)
        mode = (" — ONNX Runtime's CUDA provider" + (f" (onnxruntime-gpu {run['onnxruntime']})" if "onnxruntime" in run else "")
                if onnxruntime_run
                else " — torch.compile + CUDA graphs" if any("compile" in c for c in configs) else " — eager and CUDA graphs")
        lines.append(f"### {kind}: {run['device']}" + (f" (compute capability {run['compute_capability']}, torch {run['torch']}){mode}" if kind == "GPU" else ""))
        lines.append("")
        if kind == "CPU":
            lines.append(f"ONNX Runtime, median of {run['repeats']} interleaved runs, load average {run['load_average'][0]:.2f} "
                         "(other work shared the 2 cores: compare the ratios).")
        else:
            streams = any(row.get("streams", 1) > 1 for r in run["results"] for row in r["rows"])
            lines.append("CUDA-event medians after warm-up"
                         + (" (\"n streams\": n batches of that size in flight at once, ms for all n, img/s counting all)"
                            if streams else "") + "; fidelity vs eager fp32 on "
                         f"{run['fidelity_images']} real images; seeded random weights (same compute as real weights). "
                         f"Physical limit at {FLOPS_PER_IMAGE / 1e9:.1f} GFLOP/image (dense matmul measured on a lent H200: "
                         f"bf16 766, fp8 1,384 TFLOP/s): ≈ {766e12 / FLOPS_PER_IMAGE:,.0f} img/s fp16/bf16, "
                         f"≈ {1384e12 / FLOPS_PER_IMAGE:,.0f} img/s fp8. PyTorch's fp32 is true fp32 (its default, TF32 off)"
                         + ("; ONNX Runtime's CUDA fp32 runs its matmuls on TF32 tensor cores (its rows reach ~130 TFLOP/s, "
                            "twice plain fp32's peak)." if onnxruntime_run else "."))
        memory = "peak_gpu_mib" in run["results"][0]["rows"][-1]
        lines += ["", "| configuration | " + " | ".join(f"bs{r['batch']} ms (img/s)" for r in run["results"][0]["rows"])
                  + (" | peak GPU MiB (largest batch)" if memory else "") + " | cosine min / mean | top-1 agreement |",
                  "|---|" + "---:|" * (len(run["results"][0]["rows"]) + 2 + memory)]
        for result in run["results"]:
            cells = [f"{r['median_ms']:.2f} ({r['images_per_s']:,.0f})" for r in result["rows"]]
            f = result["fidelity"]
            # ONNX Runtime allocates outside PyTorch: torch's peak counts only the bound input/output buffers
            peak = ("" if not memory else " | n/a (own allocator)" if result["config"].startswith("onnxruntime")
                    else f" | {result['rows'][-1]['peak_gpu_mib']:,.0f}")
            lines.append(f"| {result['config']} | " + " | ".join(cells) + peak
                         + f" | {f['cosine_min']:.4f} / {f['cosine_mean']:.4f} | {f['top1_agreement']:.1%} |")
        for name, why in run.get("unavailable", {}).items():
            why = "failed: " + why.rsplit("FAIL : ", 1)[-1] if why.startswith("failed:") else why  # ORT's message, not its prefix
            lines.append(f"| {name} | not run: {why} |" + " |" * (len(run['results'][0]['rows']) + 1))
        lines.append("")
    lines += target_table(runs)
    chart(runs, out_dir / "backends.png")
    lines += ["![throughput vs batch](benchmarks/backends.png)", "", END]
    return "\n".join(lines)


def profile_table(run: dict[str, Any]) -> list[str]:
    groups = run["ms_per_batch256"]
    names = sorted({g for by_group in groups.values() for g in by_group}, key=lambda g: -groups["fp16"].get(g, 0))
    lines = [f"#### Where the GPU time goes ({run['device']}, torch.compile, batch 256, kernel ms per batch; `profile` mode)", "",
             "| kernels | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    lines += [f"| {name} | " + " | ".join(f"{groups[p].get(name, 0):.2f}" for p in groups) + " |" for name in names]
    lines.append("| total | " + " | ".join(f"{sum(groups[p].values()):.2f}" for p in groups) + " |")
    return lines + [""]


def target_table(runs: list[dict[str, Any]]) -> list[str]:
    """The issue's GPU targets against the best measured configuration of these runs."""
    # (configuration, batch-1 latency in ms or None where several batches are in flight, img/s at batch 256, fidelity)
    measured = [(r["config"], None if r["rows"][0].get("streams", 1) > 1 else r["rows"][0]["median_ms"],
                 r["rows"][-1]["images_per_s"], r["fidelity"])
                for run in runs if run["kind"] == "gpu" for r in run["results"] if r["rows"][-1]["batch"] == 256]
    measured += [(r["config"] + " (ablation)", r["bs1_ms"], r["bs256_images_per_s"], r["fidelity"])
                 for run in runs if run["kind"] == "ablations" for r in run["compiled"]]
    if not measured:
        return []

    def throughput(entry: Any) -> float:
        return entry[2]

    def faithful(entry: Any) -> bool:
        return entry[3]["cosine_min"] >= 0.999 and entry[3]["top1_agreement"] >= 0.995

    def row(target: str, entry: Any, value: str, met: bool) -> str:
        return f"| {target} | {value} | {entry[0]} | {'met' if met else 'missed'} |"

    fastest_bs1 = min((e for e in measured if e[1] is not None), key=lambda e: e[1])
    half = max((e for e in measured if "fp16" in e[0] or "bf16" in e[0]), key=throughput)
    quantised = [e for e in measured if "fp8" in e[0] or "int8" in e[0]]
    fastest_q = max(quantised, key=throughput)
    lines = ["#### Targets (issue 5) against the best measured configuration", "",
             "| target | measured | configuration | |", "|---|---:|---|---|",
             row("batch 1 ≤ 0.5 ms", fastest_bs1, f"{fastest_bs1[1]:.3f} ms", fastest_bs1[1] <= 0.5),
             row("fp16/bf16 ≥ 15,000 img/s", half, f"{throughput(half):,.0f} img/s", throughput(half) >= 15000),
             row("fp8/int8 ≥ 25,000 img/s, cosine ≥ 0.999, top-1 ≥ 99.5 %", fastest_q,
                 f"{throughput(fastest_q):,.0f} img/s, {fastest_q[3]['cosine_min']:.4f}, {fastest_q[3]['top1_agreement']:.1%}",
                 throughput(fastest_q) >= 25000 and faithful(fastest_q))]
    for entry in [e for e in quantised if faithful(e) and e is not fastest_q][:1]:
        lines.append(row("(the fastest fp8/int8 within the fidelity bounds)", entry,
                         f"{throughput(entry):,.0f} img/s, {entry[3]['cosine_min']:.4f}, {entry[3]['top1_agreement']:.1%}",
                         throughput(entry) >= 25000))
    return lines + [""]


def chart(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gpu_runs = [r for r in runs if r["kind"] == "gpu"]
    if not gpu_runs:
        return
    fig, ax = plt.subplots(figsize=(9, 6))
    # each configuration once (runs repeat their fp32 baseline); the line style tells the runs apart
    first: dict[str, tuple[dict[str, Any], str]] = {}
    for run, style in zip(gpu_runs, ("-", "--", "-.", ":")):
        for result in run["results"]:
            first.setdefault(result["config"], (result, style))
    results = list(first.values())
    colours = plt.cm.tab20(np.arange(len(results)) % 20)
    for (result, style), colour in zip(results, colours):
        rows = result["rows"]
        ax.plot([r["batch"] for r in rows], [r["images_per_s"] for r in rows], marker="o", linestyle=style, color=colour,
                label=result["config"])
    peak_bf16 = 766e12 / FLOPS_PER_IMAGE
    ax.axhline(peak_bf16, color="k", linestyle="--", linewidth=1, label=f"dense bf16 limit {peak_bf16:,.0f} img/s")
    ax.axhline(1384e12 / FLOPS_PER_IMAGE, color="grey", linestyle=":", linewidth=1,
               label=f"dense fp8 limit {1384e12 / FLOPS_PER_IMAGE:,.0f} img/s")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title(f"BiomedCLIP image tower on {gpu_runs[0]['device']}", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    g = sub.add_parser("gpu")
    g.add_argument("--fidelity", type=Path, default=ROOT / ".bench" / "fidelity.npz")
    g.add_argument("--compiled", action="store_true")
    g.add_argument("--autotune", action="store_true")
    g.add_argument("--onnxruntime", action="store_true", help="ONNX Runtime's CUDA provider (onnxruntime-gpu)")
    g.add_argument("--out", type=Path, required=True)
    pr = sub.add_parser("profile")
    pr.add_argument("--fidelity", type=Path, default=ROOT / ".bench" / "fidelity.npz")
    pr.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("cpu")
    c.add_argument("--package", type=Path, required=True)
    c.add_argument("--fidelity", type=Path, default=ROOT / ".bench" / "fidelity.npz")
    c.add_argument("--images", type=int, default=512)
    c.add_argument("--repeats", type=int, default=7)
    c.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("json", type=Path, nargs="+")
    args = parser.parse_args()
    if args.mode == "report":
        section = report(args.json, ROOT / "benchmarks")
        write_section(section, BEGIN, END)
        print(section)
        return 0
    run = {"gpu": gpu, "cpu": cpu, "profile": profile}[args.mode]
    result = {**run(args), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
