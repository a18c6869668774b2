#!/usr/bin/env python3
"""Measure what app.yaml's ``resources`` must cover; results as JSON lines (docs/deployment.md, Sizing).

    python scripts/measure_map_resources.py cpu --input sample_study --models models/biomedclip --repeats 3
    python scripts/measure_map_resources.py gpu --dtype fp32 --batch 8     # on a GPU machine

``cpu``: runs the app (``python app -i -o -m``) under GNU ``/usr/bin/time -v``: peak RSS, wall time,
CPU time and the CPU share it used, with the machine's load average before each run.
``gpu``: the BiomedCLIP image tower's shape (timm ``vit_base_patch16_224`` + 768->512 projection,
random weights) in PyTorch on CUDA: the process's GPU memory (CUDA context included, from
``nvidia-smi``) and the PyTorch allocator's peaks, at one dtype and batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def measure_cpu(input_dir: Path, models: Path, repeats: int) -> None:
    for repeat in range(repeats):
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as out:
            command = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "app"), "-i", str(input_dir), "-o", out, "-m", str(models)]
            result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if result.returncode != 0:
            raise SystemExit(f"app run failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
        values = {name: re.search(pattern, result.stderr).group(1) for name, pattern in TIME_FIELDS.items()}
        minutes, seconds = values.pop("wall").rsplit(":", 1)
        print(json.dumps({
            "what": "app run (python app -i -o -m)", "input": input_dir.name, "repeat": repeat,
            "max_rss_mib": round(int(values.pop("max_rss_kib")) / 1024, 1), "wall_s": round(float(minutes.replace(":", "")) * 60 + float(seconds), 2),
            **{name: float(value) for name, value in values.items()},
            "load_average_1min_before": round(load, 2), "cpu": _cpu_name(), "cores": os.cpu_count(),
        }))


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
    cpu.add_argument("--input", type=Path, required=True)
    cpu.add_argument("--models", type=Path, required=True)
    cpu.add_argument("--repeats", type=int, default=3)
    gpu = modes.add_parser("gpu")
    gpu.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    gpu.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if args.mode == "cpu":
        measure_cpu(args.input, args.models, args.repeats)
    else:
        measure_gpu(args.dtype, args.batch)


if __name__ == "__main__":
    main()
