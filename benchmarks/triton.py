#!/usr/bin/env python3
"""Remote inference on one Triton Inference Server vs the local model, on this machine's CPU.

1. App start-up, side by side in one run (interleaved, medians over ``--repeats``): from launching
   ``python app`` on the sample study to its log line ``Inference backend: ...`` (imports, settings,
   the model package's manifest check, the backend ready), for the local model (ONNX Runtime fp32, the
   CPU default) and for ``-t`` against a running ``python -m app.inference_server``; with the verified
   stamp (a normal start) and, for the local model, without it (``BIOMEDCLIP_CACHE_DIR`` unwritable:
   every start re-hashes the package, as before the stamp). Also the import of the SDK's core and its
   two DICOM operators alone, as the SDK does it (MONAI core and torch with it) and as the app now does
   it (``app/sdk_imports.py``).
2. Throughput (``--instances``, e.g. 1,2,4,8): that many app processes on the sample study at once,
   against the one server vs each with its local model: studies/min and the total peak RSS (the apps',
   plus the server's and its Python model's for Triton).

    .venv/bin/python -m benchmarks.triton --package models/biomedclip   # writes benchmarks/triton.json, the BENCHMARKS.md section
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.common import machine, write_section
from scripts.make_sample_study import make_sample_study
from tests.support.triton_server import inference_server

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "triton.json"
BEGIN, END = "<!-- triton:begin -->", "<!-- triton:end -->"
READY_LINE = "Inference backend: "
SDK_IMPORT = "import monai.deploy.core, monai.deploy.conditions, monai.deploy.operators.dicom_data_loader_operator, " \
             "monai.deploy.operators.dicom_series_selector_operator"
LEAN_IMPORT = f"from app.sdk_imports import import_sdk_lean; import_sdk_lean(); {SDK_IMPORT}"


def app_command(study: Path, output: Path, package: Path, netloc: str | None) -> list[str]:
    return [sys.executable, str(ROOT / "app"), "-i", str(study), "-o", str(output), "-m", str(package), *(["-t", netloc] if netloc else [])]


def start_up(study: Path, package: Path, netloc: str | None, env: dict[str, str], work: Path) -> dict[str, float]:
    """Seconds to the backend being ready, and to the end of the run."""
    output = Path(tempfile.mkdtemp(dir=work))
    began = time.perf_counter()
    process = subprocess.Popen(app_command(study, output, package, netloc), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    ready = None
    for line in process.stderr:
        if ready is None and READY_LINE in line:
            ready = time.perf_counter() - began
    if process.wait() != 0 or ready is None:
        raise RuntimeError(f"the app failed (exit {process.returncode})")
    return {"ready_s": ready, "total_s": time.perf_counter() - began}


def import_seconds(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - began


def concurrent(study: Path, package: Path, netloc: str | None, instances: int, env: dict[str, str], work: Path) -> dict[str, float]:
    """``instances`` apps at once: studies/min and the sum of their peak RSS (MiB)."""
    began = time.perf_counter()
    processes = [subprocess.Popen(app_command(study, Path(tempfile.mkdtemp(dir=work)), package, netloc), env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(instances)]
    peak_kib = 0
    for process in processes:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"an app failed (exit {process.returncode})")
        peak_kib += usage.ru_maxrss
    elapsed = time.perf_counter() - began
    return {"studies_per_min": 60 * instances / elapsed, "apps_peak_rss_mib": peak_kib / 1024, "elapsed_s": elapsed}


def server_rss_mib(pid: int) -> float:
    """Peak RSS of the server wrapper's process tree (tritonserver and its Python backend stub)."""
    total = 0
    for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=ROOT / "models" / "biomedclip")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--instances", default="", help="comma-separated counts of concurrent app instances, e.g. 1,2,4,8")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    load_before = os.getloadavg()
    results: dict = {"machine": machine(), "package": str(args.package), "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        study = work / "study"
        make_sample_study(study)
        (work / "not-a-folder").write_text("")
        no_stamp = {**env, "BIOMEDCLIP_CACHE_DIR": str(work / "not-a-folder")}  # unwritable: every start re-hashes
        with inference_server(args.package, work / "server.log") as server:
            start_up(study, args.package, None, env, work)  # the stamp written, the page cache warm
            runs: dict[str, list[dict[str, float]]] = {"local": [], "local, no stamp (re-hash)": [], "triton": []}
            imports: dict[str, list[float]] = {"SDK as it imports itself": [], "SDK, lean (app/sdk_imports.py)": []}
            for _ in range(args.repeats):
                runs["local"].append(start_up(study, args.package, None, env, work))
                runs["triton"].append(start_up(study, args.package, server.netloc, env, work))
                runs["local, no stamp (re-hash)"].append(start_up(study, args.package, None, no_stamp, work))
                imports["SDK as it imports itself"].append(import_seconds(SDK_IMPORT))
                imports["SDK, lean (app/sdk_imports.py)"].append(import_seconds(LEAN_IMPORT))
            results["start_up"] = {name: {"ready_s": [r["ready_s"] for r in rows], "total_s": [r["total_s"] for r in rows]}
                                   for name, rows in runs.items()}
            results["imports_s"] = imports
            counts = [int(n) for n in args.instances.split(",") if n]
            results["concurrency"] = []
            for n in counts:
                for mode, netloc in (("triton", server.netloc), ("local", None)):
                    row = {"instances": n, "mode": mode, **concurrent(study, args.package, netloc, n, env, work)}
                    if netloc:
                        row["server_peak_rss_mib"] = server_rss_mib(server.process.pid)
                    results["concurrency"].append(row)
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    write_section(section(results), BEGIN, END)
    return 0


def section(results: dict) -> str:
    median = statistics.median
    load = results["load_average"]
    lines = [
        BEGIN,
        "## Triton remote inference (`benchmarks/triton.py`)",
        "",
        f"Machine: {results['machine']}, shared with other work: load average "
        f"{' '.join(f'{x:.2f}' for x in load['before'])} before the run, {' '.join(f'{x:.2f}' for x in load['after'])} after. "
        f"Server: `python -m app.inference_server` (tritonserver 2.51 from the nvidia-pytriton wheel, the Python-backend "
        f"model over ONNX Runtime fp32), package `{Path(results['package']).name}`. Medians of {results['repeats']} interleaved runs.",
        "",
        # the load after includes the run's own concurrent instances: only the load before says "other work"
        *([f"**The machine was overloaded during this run (load average {load['before'][0]:.1f} on {os.cpu_count()} cores, from "
            "other work): every figure below is dominated by waiting for a core and varies several-fold between repeats; "
            "compare rows only within this run, and re-run on a quiet machine for absolute numbers.**", ""]
          if load["before"][0] > 2 * (os.cpu_count() or 1) else []),
        "App start-up: from launching `python app` on the sample study (2 CT series, 7 images) to its log line "
        "`Inference backend: ...` (imports, settings, manifest check, backend ready); and the whole run.",
        "",
        "| app | start-up (s, median) | runs | whole run (s, median) |",
        "|---|---:|---|---:|",
    ]
    for name, rows in results["start_up"].items():
        lines.append(f"| {name} | {median(rows['ready_s']):.2f} | {', '.join(f'{x:.2f}' for x in rows['ready_s'])} | "
                     f"{median(rows['total_s']):.2f} |")
    lines += ["", "| import of the SDK core and its two DICOM operators, alone | s (median) |", "|---|---:|"]
    lines += [f"| {name} | {median(values):.2f} |" for name, values in results["imports_s"].items()]
    if results.get("concurrency"):
        lines += ["", "Concurrent app instances on the sample study, against the one server vs each with its local model "
                  "(RSS ratio: the apps' and the server's peak RSS over the same number of local instances'):", "",
                  "| instances | mode | studies/min | apps' peak RSS, total (MiB) | server's peak RSS (MiB) | RSS ratio |",
                  "|---:|---|---:|---:|---:|---:|"]
        local = {row["instances"]: row["apps_peak_rss_mib"] for row in results["concurrency"] if row["mode"] == "local"}
        for row in results["concurrency"]:
            server = f"{row['server_peak_rss_mib']:.0f}" if "server_peak_rss_mib" in row else "—"
            ratio = (f"{(row['apps_peak_rss_mib'] + row['server_peak_rss_mib']) / local[row['instances']]:.0%}"
                     if "server_peak_rss_mib" in row and row["instances"] in local else "—")
            lines.append(f"| {row['instances']} | {row['mode']} | {row['studies_per_min']:.1f} | {row['apps_peak_rss_mib']:.0f} | {server} | {ratio} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
