#!/usr/bin/env python3
"""Measure what app.yaml's ``resources`` must cover; results as JSON lines (docs/deployment.md, Sizing).

    python -m benchmarks.map_resources cpu --models models/biomedclip --repeats 2 > benchmarks/map_resources.jsonl
    python -m benchmarks.map_resources gpu --dtype fp32 --batch 8     # on a GPU machine

``cpu``: runs the app (``python app -i -o -m``, one process per run) under GNU ``/usr/bin/time -v``
on the sample study and on a 200-slice 512 x 512 CT (both backends): peak RSS, wall time, CPU time
and the CPU share it got, with the load average before each run.
``gpu``: the BiomedCLIP image tower's shape (timm ``vit_base_patch16_224`` + 768->512 projection,
random weights) in PyTorch on CUDA: the process's GPU memory (CUDA context included, from
``nvidia-smi``) and the PyTorch allocator's peaks, at one dtype and batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TIME_FIELDS = {
    "max_rss_kib": r"Maximum resident set size \(kbytes\): (\d+)",
    "user_s": r"User time \(seconds\): ([\d.]+)",
    "system_s": r"System time \(seconds\): ([\d.]+)",
    "cpu_percent": r"Percent of CPU this job got: (\d+)%",
    "wall": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)",
}


def time_app_run(input_dir: Path, models: Path, config: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        command = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "app"), "-i", str(input_dir), "-o", out, "-m", str(models)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "BIOMEDCLIP_APP_CONFIG": str(config)}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"app run failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    values = {name: re.search(pattern, result.stderr).group(1) for name, pattern in TIME_FIELDS.items()}
    *hours_minutes, seconds = values.pop("wall").split(":")
    wall = sum(float(part) * 60 ** (len(hours_minutes) - i) for i, part in enumerate(hours_minutes)) + float(seconds)
    return {"max_rss_mib": round(int(values.pop("max_rss_kib")) / 1024, 1), "wall_s": round(wall, 2),
            **{name: float(value) for name, value in values.items()}}


def measure_cpu(models: Path, repeats: int) -> None:
    from benchmarks.pipeline import machine, make_ct_series, write_config
    from scripts.make_sample_study import make_sample_study

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        make_sample_study(work / "sample")
        make_ct_series(work / "ct200", 200)
        scenarios = [("sample study (2 CT series, 7 images)", work / "sample", "onnxruntime"),
                     ("200-slice 512x512 CT, 16 sampled", work / "ct200", "onnxruntime"),
                     ("200-slice 512x512 CT, 16 sampled", work / "ct200", "pytorch")]
        for repeat in range(repeats):
            for name, input_dir, backend in scenarios:
                load = os.getloadavg()[0]
                measured = time_app_run(input_dir, models, write_config(work / backend, backend, 16))
                print(json.dumps({"what": "app run (python app -i -o -m)", "input": name, "backend": backend, "repeat": repeat,
                                  **measured, "load_average_1min_before": round(load, 2), "machine": machine()}), flush=True)


def measure_gpu(dtype_name: str, batch: int) -> None:
    import timm
    import torch

    def gpu_used_mib() -> int:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"]
        return int(subprocess.check_output(query).split()[0])

    before = gpu_used_mib()
    torch.zeros(1, device="cuda")
    context = gpu_used_mib()
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype_name]
    tower = torch.nn.Sequential(timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0), torch.nn.Linear(768, 512))
    tower = tower.cuda().eval().to(dtype)
    pixels = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
    with torch.inference_mode():
        for _ in range(5):
            tower(pixels)
    torch.cuda.synchronize()
    print(json.dumps({
        "what": "image tower on CUDA (PyTorch eager)", "dtype": dtype_name, "batch": batch,
        "cuda_context_mib": context - before, "process_total_mib": gpu_used_mib() - before,
        "torch_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "torch_max_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1),
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "timm": timm.__version__,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    cpu = modes.add_parser("cpu")
    cpu.add_argument("--models", type=Path, required=True)
    cpu.add_argument("--repeats", type=int, default=2)
    gpu = modes.add_parser("gpu")
    gpu.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    gpu.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if args.mode == "cpu":
        measure_cpu(args.models, args.repeats)
    else:
        measure_gpu(args.dtype, args.batch)


if __name__ == "__main__":
    main()
