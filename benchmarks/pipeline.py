#!/usr/bin/env python3
"""Pipeline benchmark: per-stage wall time and images/s of the real app, ONNX Runtime fp32 vs PyTorch fp32.

Runs ``python app`` as a user does (one process per run) on
  - the embedded sample study (2 CT series, 7 images),
  - a 200-slice CT series (made from pydicom-data's 512 x 512 CT ``693_UNCR``, new UIDs per slice),
    with the default sampling policy (16 of 200) and with every slice (``max_images_per_series=200``),
for each backend, ``--repeats`` times, interleaved so that both backends see the same machine state.
Stage times come from ``run_report.json`` (operator compute time); ``startup`` is the rest of the
process wall time (imports, model load, graph set-up). Reports medians.

    .venv/bin/python -m benchmarks.pipeline            # writes benchmarks/pipeline.{json,png}, BENCHMARKS.md section
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

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from benchmarks.common import machine, write_section
from scripts.make_sample_study import make_sample_study

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("load", "select", "deidentify", "preprocess", "infer", "write_sr")
BACKENDS = ("onnxruntime", "pytorch")
BEGIN, END = "<!-- pipeline:begin -->", "<!-- pipeline:end -->"


def make_ct_series(out: Path, slices: int) -> None:
    """``slices`` CT instances of one series, 1.25 mm apart, from one real 512 x 512 CT slice."""
    template = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    study, series = generate_uid(entropy_srcs=["bench-study"]), generate_uid(entropy_srcs=["bench-series"])
    out.mkdir(parents=True)
    for i in range(slices):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, -1.25 * i]
        ds.save_as(out / f"CT{i:04d}.dcm", enforce_file_format=True)


def write_config(folder: Path, backend: str, max_images: int) -> Path:
    settings = json.loads((ROOT / "app" / "config" / "app.json").read_text())
    settings["inference"]["backend"] = backend
    settings["sampling"]["max_images_per_series"] = max_images
    rules = ROOT / "app" / "config" / settings["series_selection_rules"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / rules.name).write_text(rules.read_text())
    path = folder / "app.json"
    path.write_text(json.dumps(settings))
    return path


def run_once(input_dir: Path, model: Path, config: Path, work: Path) -> dict[str, float]:
    output = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "app"), "-i", str(input_dir), "-o", str(output), "-m", str(model)],
        capture_output=True,
        text=True,
        env={**os.environ, "BIOMEDCLIP_APP_CONFIG": str(config), "HF_HUB_OFFLINE": "1"},
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"app failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads((output / "run_report.json").read_text())
    timings = {stage: report["timings_s"].get(stage, 0.0) for stage in STAGES}
    timings["load_average"] = os.getloadavg()[0]
    timings["images"] = sum(s.get("images_inferred", 0) for s in report["series"])
    timings["pipeline"] = sum(timings[s] for s in STAGES)
    timings["startup"] = wall - timings["pipeline"]
    timings["wall"] = wall
    return timings


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [f"{r['scenario']}\n{r['backend']}" for r in results]
    bottom = [0.0] * len(results)
    for stage in ("startup", *STAGES):
        values = [r["median"][stage] for r in results]
        ax.bar(labels, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("seconds (median)")
    ax.set_title(f"Pipeline wall time by stage — {machine()}", fontsize=9)
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: list[dict], repeats: int) -> str:
    lines = [
        BEGIN,
        "## Pipeline on CPU (`benchmarks/pipeline.py`)",
        "",
        f"Machine: {machine()}; 1-minute load average during the runs (median) "
        f"{statistics.median(r['median']['load_average'] for r in results):.1f}. Median of {repeats} runs each, backends interleaved in one run; seeded random",
        "BiomedCLIP weights (same compute as real weights). Stage times are operator compute times from",
        "`run_report.json`; *startup* is the rest of the process (imports, model load and sha256 check, ONNX Runtime",
        "session, highdicom's standard tables, graph set-up). *Non-model share* = stages other than `infer` / all stages.",
        "",
        "| scenario | backend | images | load | select | de-id | preprocess | infer | SR | non-model share | images/s (pipeline) | startup | wall |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["median"]
        share = 1 - m["infer"] / m["pipeline"]
        lines.append(
            f"| {r['scenario']} | {r['backend']} | {m['images']:.0f} | {m['load']:.3f} | {m['select']:.4f} | "
            f"{m['deidentify']:.3f} | {m['preprocess']:.3f} | {m['infer']:.2f} | {m['write_sr']:.3f} | "
            f"{share:.1%} | {m['images'] / m['pipeline']:.2f} | {m['startup']:.1f} | {m['wall']:.1f} |"
        )
    lines += ["", "![pipeline stages](benchmarks/pipeline.png)", "", END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "biomedclip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    args = parser.parse_args()
    args.out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_sample_study(work / "sample")
        make_ct_series(work / "ct200", 200)
        scenarios = [("sample study", work / "sample", 16), ("200-slice CT, 16 sampled", work / "ct200", 16),
                     ("200-slice CT, all", work / "ct200", 200)]
        results = []
        for name, folder, max_images in scenarios:
            runs: dict[str, list] = {b: [] for b in BACKENDS}
            for repeat in range(args.repeats):
                for backend in BACKENDS:
                    config = write_config(work / f"config-{backend}-{max_images}", backend, max_images)
                    runs[backend].append(run_once(folder, args.model, config, work))
                    print(f"{name} / {backend} / run {repeat + 1}: {runs[backend][-1]['wall']:.1f} s", flush=True)
            results += [{"scenario": name, "backend": b, "runs": runs[b], "median": median_of(runs[b])} for b in BACKENDS]
    (args.out / "pipeline.json").write_text(json.dumps({"machine": machine(), "repeats": args.repeats, "results": results}, indent=2))
    chart(results, args.out / "pipeline.png")
    section = markdown(results, args.repeats)
    write_section(section, BEGIN, END)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
