#!/usr/bin/env python3
"""Triton's perf_analyzer against ``python -m app.inference_server`` on this machine's CPU: the image encoder's
throughput and p95 latency vs request concurrency, with the model's dynamic batching and without it.

The server serves the package's Python-backend model (ONNX Runtime fp32), as the app's ``-t`` uses it. Each
request is one image (batch 1, 3 × 224 × 224 float32, random values) over HTTP; with dynamic batching
(the package's ``config.pbtxt``: preferred batch sizes 8 and 16, 5 ms queue delay) Triton merges concurrent
requests into one execution. "Without" is the same model reloaded with its configuration less
``dynamic_batching``, through Triton's model-load API with a configuration override (the server runs with
explicit model control): the package itself is not changed.

perf_analyzer lives in an environment of its own, never .venv or .venv-triton: requirements-perf-analyzer.txt
says how to install it. Measurements are windows of ``max(16, 2 × concurrency)`` requests; a point counts once
three windows in a row agree within ``--stability`` percent on throughput and p95 latency (perf_analyzer's rule).

    .venv/bin/python -m benchmarks.triton_perf_analyzer --package models/biomedclip --perf-analyzer /tmp/pa/bin/perf_analyzer
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from benchmarks.common import machine, write_section
from tests.support.triton_server import inference_server

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "triton_perf_analyzer.json"
BEGIN, END = "<!-- triton-perf-analyzer:begin -->", "<!-- triton-perf-analyzer:end -->"
MODEL = "biomedclip_image_encoder_python"
#: what perf_analyzer prints of the server's statistics: images inferred and model executions (batches)
SERVER_COUNTS = re.compile(r"Server:\s+Inference count: (\d+)\s+Execution count: (\d+)")


def _http(netloc: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"http://{netloc}{path}", data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        text = answer.read()
    return json.loads(text) if text else {}


def reload_without_dynamic_batching(netloc: str) -> None:
    """The served model again, its configuration less ``dynamic_batching`` (Triton's model repository extension:
    ``POST v2/repository/models/NAME/load`` with a ``config`` parameter)."""
    config = _http(netloc, f"/v2/models/{MODEL}/config")
    config.pop("dynamic_batching")
    _http(netloc, f"/v2/repository/models/{MODEL}/load", {"parameters": {"config": json.dumps(config)}})
    if "dynamic_batching" in _http(netloc, f"/v2/models/{MODEL}/config"):
        raise RuntimeError(f"{MODEL}: the server kept its dynamic batching after the reload")


def origin(binary: Path) -> str:
    """Which tritonclient wheel the binary came from (its venv's metadata), else its path."""
    wheels = sorted(binary.parent.parent.glob("lib/python*/site-packages/tritonclient-*.dist-info"))
    return f"tritonclient {wheels[0].name.removeprefix('tritonclient-').removesuffix('.dist-info')}" if wheels else str(binary)


def measure(binary: Path, netloc: str, concurrency: int, stability: int, work: Path) -> dict:
    """One perf_analyzer point: throughput, latency percentiles (ms), the server's mean batch; or why none."""
    report = work / f"c{concurrency}.csv"
    command = [str(binary), "-m", MODEL, "-u", netloc, "-i", "http", "-b", "1", "--input-data", "random",
               "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-mode", "count_windows",
               "--measurement-request-count", str(max(16, 2 * concurrency)), "-s", str(stability), "--percentile", "95",
               "-f", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0 or not report.exists():
        lines = (result.stdout + result.stderr).strip().splitlines()
        return {"concurrency": concurrency, "error": lines[-1] if lines else f"perf_analyzer exit {result.returncode}"}
    (row,) = csv.DictReader(report.open())
    counts = SERVER_COUNTS.search(result.stdout)
    return {
        "concurrency": concurrency,
        "images_per_s": float(row["Inferences/Second"]),
        **{f"{p}_ms": int(row[f"{p} latency"]) / 1000 for p in ("p50", "p95", "p99")},
        "server_queue_ms": int(row["Server Queue"]) / 1000,
        "server_compute_ms": int(row["Server Compute Infer"]) / 1000,
        "mean_batch": int(counts[1]) / int(counts[2]) if counts else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=ROOT / "models" / "biomedclip")
    parser.add_argument("--perf-analyzer", type=Path, default=Path(os.environ.get("PERF_ANALYZER", "perf_analyzer")),
                        help="the perf_analyzer binary (default: $PERF_ANALYZER, else perf_analyzer on PATH)")
    parser.add_argument("--concurrency", default="1,2,4,8,16", help="comma-separated request concurrencies")
    parser.add_argument("--stability", type=int, default=50, help="perf_analyzer's -s: percent by which three windows may differ")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    found = shutil.which(args.perf_analyzer)
    if found is None:
        print(f"error: {args.perf_analyzer}: no perf_analyzer there (install it as requirements-perf-analyzer.txt says)", file=sys.stderr)
        return 2
    binary = Path(found)
    counts = [int(n) for n in args.concurrency.split(",") if n]
    results: dict = {"machine": machine(), "package": str(args.package), "model": MODEL, "perf_analyzer": origin(binary),
                     "stability_percent": args.stability, "load_average": {"before": os.getloadavg()}, "runs": {}}
    with tempfile.TemporaryDirectory() as folder, inference_server(args.package, Path(folder) / "server.log") as server:
        for mode in ("dynamic batching", "no dynamic batching"):
            if mode == "no dynamic batching":
                reload_without_dynamic_batching(server.netloc)
            results["runs"][mode] = [measure(binary, server.netloc, n, args.stability, Path(folder)) for n in counts]
            print(json.dumps({mode: results["runs"][mode]}), flush=True)
    results["load_average"]["after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    write_section(section(results), BEGIN, END)
    return 0


def section(results: dict) -> str:
    load = results["load_average"]
    lines = [
        BEGIN,
        "## Triton server under perf_analyzer (`benchmarks/triton_perf_analyzer.py`)",
        "",
        f"Machine: {results['machine']}, shared with other work: load average {' '.join(f'{x:.2f}' for x in load['before'])} "
        f"before the run, {' '.join(f'{x:.2f}' for x in load['after'])} after. Server: `python -m app.inference_server` "
        f"(tritonserver 2.51, CPU), model `{results['model']}` (Python backend over ONNX Runtime fp32), package "
        f"`{Path(results['package']).name}`; client: perf_analyzer ({results['perf_analyzer']}) on the same cores, HTTP, "
        f"one image per request (random values), windows of max(16, 2 × concurrency) requests, stable within "
        f"{results['stability_percent']} %. Latencies are the client's; mean batch = images / model executions on the server.",
        "",
        "| dynamic batching | concurrency | images/s | p50 ms | p95 ms | p99 ms | server queue ms | server compute ms | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, rows in results["runs"].items():
        on = "yes" if mode == "dynamic batching" else "no"
        for row in rows:
            if "error" in row:
                lines.append(f"| {on} | {row['concurrency']} | — | — | — | — | — | — | {row['error']} |")
                continue
            batch = f"{row['mean_batch']:.1f}" if row["mean_batch"] is not None else "—"
            lines.append(f"| {on} | {row['concurrency']} | {row['images_per_s']:.2f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
                         f"{row['p99_ms']:.0f} | {row['server_queue_ms']:.0f} | {row['server_compute_ms']:.0f} | {batch} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
