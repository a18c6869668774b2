#!/usr/bin/env python3
"""The listener with a Triton server (issue 14): result latency, urgent studies, jobs at once.

Everything on loopback: the listener (``python -m app.listener``, bound to 127.0.0.1), a running
``python -m app.inference_server`` (127.0.0.1), and pynetdicom peers in this process: the sender, and
the Storage SCP standing in for the PACS, which notes when each SR arrives. Each study sent is a copy of
the sample study (2 CT series, 7 instances) with fresh UIDs and pixels of its own (noise added: the server's
embedding cache must not answer one study with another's images). The server's Prometheus metrics give the
images its models answered from their embedding cache and those they computed, per study.

1. Latency: from the last instance's C-STORE response to the SR received at the PACS, minus the quiet
   period, for a listener with ``-t`` (prefetch on, the default), one with ``-t`` and ``prefetch_embeddings``
   false, one with ``-t`` whose app asks for the int8 graph (where the package has an int8 variant:
   ``inference.precision`` int8, the server's int8 model) and one with the local model (no ``-t``),
   interleaved; medians over ``--repeats``. Split into the MAP job (its ``job_finished`` seconds in the
   journal) and the rest, and into inference (the job's run report: its requests to the server, or the
   local model) and the rest.
2. Urgent: a study with Requested Procedure Priority STAT (the default ``urgent`` rule) sent alone, then
   sent behind ``--routine`` routine studies (the listener with ``-t`` and its default
   ``max_concurrent_jobs``): its latency both times, against the goal "≤ its solo latency + one job"
   (one job: the median duration of that run's jobs, which ran beside each other).
3. Jobs at once (``--jobs``, e.g. 1,2,4): ``--studies`` routine studies pushed at once to a listener with
   ``-t`` and that ``max_concurrent_jobs``: studies/min from the end of the transfer to the last SR.

    .venv/bin/python -m benchmarks.triton_listener --package models/biomedclip   # writes benchmarks/triton_listener.json, the BENCHMARKS.md section
    .venv/bin/python -m benchmarks.triton_listener --report      # the section and chart again from benchmarks/triton_listener.json
    .venv/bin/python -m benchmarks.triton_listener --routine 4 --studies 2 --jobs 2 --repeats 1 --out /tmp/quick.json --no-section
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from copy import deepcopy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from app.cli import TRITON_ENV
from app.listener.config import TRITON_CONCURRENT_JOBS, ListenerConfig
from benchmarks.common import machine, write_section
from benchmarks.pipeline import make_ct_series
from operators.inference.triton_repository import PYTHON_INT8_MODEL, REPOSITORY
from scripts.make_sample_study import make_sample_study
from tests.support.listener_peers import wait_for
from tests.support.loopback_listener import PACS_AE, send
from tests.support.loopback_listener import LoopbackListener as Listener
from tests.support.loopback_listener import LoopbackPacs as Pacs
from tests.support.triton_server import Server, inference_server

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "triton_listener.json"
BEGIN, END = "<!-- triton-listener:begin -->", "<!-- triton-listener:end -->"
LATENCY_GOAL_S = 2.0  # issue 14: last instance -> SR at the PACS, minus the quiet period
SR_TIMEOUT_S = 1800
INT8, NO_PREFETCH = "triton, int8", "triton, no prefetch"
#: Each study's pixels differ from every other's by up to this much (stored values), seeded: the server's embedding
#: cache must not answer a study's images because an earlier copy of the sample study had the same pixels.
PIXEL_NOISE = 20
NOISE = np.random.default_rng(0)


def new_study(template: list[pydicom.Dataset], priority: str | None = None) -> list[pydicom.Dataset]:
    """A copy of the sample study as another study: fresh Study, Series and SOP Instance UIDs, and pixels of its
    own (noise added), so that no image is one the server has seen; with ``priority`` as every instance's
    Requested Procedure Priority (0040,1003)."""
    study_uid, series_uids = generate_uid(), {ds.SeriesInstanceUID: generate_uid() for ds in template}
    copies = []
    for ds in template:
        copy = deepcopy(ds)  # Dataset.copy() is shallow: its elements would be the template's
        copy.StudyInstanceUID, copy.SeriesInstanceUID = study_uid, series_uids[ds.SeriesInstanceUID]
        copy.SOPInstanceUID = generate_uid()
        pixels, limits = ds.pixel_array, np.iinfo(ds.pixel_array.dtype)
        noisy = pixels.astype(np.int64) + NOISE.integers(-PIXEL_NOISE, PIXEL_NOISE + 1, pixels.shape)
        copy.PixelData = np.clip(noisy, limits.min, limits.max).astype(pixels.dtype).tobytes()
        if priority is not None:
            copy.RequestedProcedurePriority = priority
        copies.append(copy)
    return copies


def int8_variant(package: Path) -> bool:
    """Whether the package's Triton repository has the int8 model (the package has an int8 variant)."""
    return (package / REPOSITORY / PYTHON_INT8_MODEL).is_dir()


def int8_config(folder: Path) -> Path:
    """A copy of the app's settings asking for the int8 graph (``inference.precision``)."""
    config = shutil.copytree(ROOT / "app" / "config", folder) / "app.json"
    settings = json.loads(config.read_text())
    settings["inference"]["precision"] = "int8"
    config.write_text(json.dumps(settings))
    return config


def sr_latency(pacs: Pacs, listener: Listener, study: list[pydicom.Dataset], quiet_period_s: float,
               server: Server | None = None) -> dict[str, float]:
    """One study alone: seconds after the quiet period to its SR, the job's share and the rest; with ``server``, the
    images its models answered from their embedding cache and those they computed (the prefetch's and the job's)."""
    uid = study[0].StudyInstanceUID
    before = cache_counts(server)
    sent = send(listener.port, [study])
    wait_for(lambda: uid in pacs.arrived, SR_TIMEOUT_S, "the SR at the PACS", 0.01)
    after = pacs.arrived[uid] - sent - quiet_period_s
    job, inference = listener.job_seconds()[-1], listener.last_job_inference_s()
    hits, computed = (now - then for now, then in zip(cache_counts(server), before))
    return {"after_quiet_period_s": after, "job_s": job, "inference_s": inference, "not_inference_s": after - inference, "other_s": after - job,
            "images_from_cache": hits, "images_computed": computed}


def cache_counts(server: Server | None) -> tuple[int, int]:
    """The server's models' embedding cache counters, summed: (hits, misses)."""
    counts = server.embedding_cache().values() if server else ()
    return sum(hits for hits, _ in counts), sum(misses for _, misses in counts)


def latency(pacs: Pacs, listeners: dict[str, Listener], template: list[pydicom.Dataset], repeats: int, quiet_period_s: float,
            server: Server) -> dict:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in listeners}
    for repeat in range(repeats):
        names = list(listeners)
        for name in names[repeat % 2:] + names[:repeat % 2]:
            runs[name].append(sr_latency(pacs, listeners[name], new_study(template), quiet_period_s, server))
            print(f"latency {repeat + 1}, {name}: {runs[name][-1]}", flush=True)
    return {name: {"runs": r, "median": {k: statistics.median(x[k] for x in r) for k in r[0]}} for name, r in runs.items()}


def urgent_behind_routine(pacs: Pacs, listener: Listener, template: list[pydicom.Dataset], routine: int, quiet_period_s: float,
                          server: Server) -> dict:
    solo = sr_latency(pacs, listener, new_study(template, "STAT"), quiet_period_s, server)
    print(f"STAT alone: {solo}", flush=True)
    jobs_before = len(listener.job_seconds())
    queue = [new_study(template) for _ in range(routine)]
    send(listener.port, queue)
    stat = new_study(template, "STAT")
    sent = send(listener.port, [stat])
    uids = [study[0].StudyInstanceUID for study in [*queue, stat]]
    wait_for(lambda: all(uid in pacs.arrived for uid in uids), SR_TIMEOUT_S, "every SR at the PACS", 0.05)
    jobs = listener.job_seconds()[jobs_before:]
    stat_uid = stat[0].StudyInstanceUID
    order = [uid for uid in pacs.order if uid in uids]
    result = {"routine": routine, "solo": solo, "behind_routine_s": pacs.arrived[stat_uid] - sent - quiet_period_s,
              "stat_sr_position": order.index(stat_uid) + 1, "job_s": jobs, "median_job_s": statistics.median(jobs)}
    print(f"STAT behind {routine} routine: {result}", flush=True)
    return result


def throughput(pacs: Pacs, listener: Listener, template: list[pydicom.Dataset], studies: int, quiet_period_s: float) -> dict:
    batch = [new_study(template) for _ in range(studies)]
    sent = send(listener.port, batch)
    uids = [study[0].StudyInstanceUID for study in batch]
    wait_for(lambda: all(uid in pacs.arrived for uid in uids), SR_TIMEOUT_S, "every SR at the PACS", 0.05)
    seconds = max(pacs.arrived[uid] for uid in uids) - sent - quiet_period_s
    return {"studies": studies, "seconds": seconds, "studies_per_min": 60 * studies / seconds,
            "median_job_s": statistics.median(listener.job_seconds())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=ROOT / "models" / "biomedclip", help="a model package with triton/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quiet-period", type=float, default=2.0)
    parser.add_argument("--ct-slices", type=int, default=200, help="slices of the CT series also measured for latency (0: none)")
    parser.add_argument("--routine", type=int, default=20, help="routine studies queued ahead of the STAT one")
    parser.add_argument("--studies", type=int, default=6, help="studies pushed at once for each --jobs value")
    parser.add_argument("--jobs", default="1,2,4", help="comma-separated max_concurrent_jobs values to measure")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-section", action="store_true", help="do not write the BENCHMARKS.md section")
    parser.add_argument("--report", action="store_true", help="measure nothing: the section and chart from --out's results")
    args = parser.parse_args(argv)
    if args.report:
        return report(json.loads(args.out.read_text()), args.out)
    package = args.package.resolve()
    env = {k: v for k, v in os.environ.items() if k != TRITON_ENV} | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    results: dict = {"machine": machine(), "package": package.name, "quiet_period_s": args.quiet_period, "repeats": args.repeats,
                     "load_before": os.getloadavg()}
    began = time.perf_counter()
    pacs = Pacs()
    running: list[Listener] = []

    def listener(folder: Path, app_config: Path | None = None, **settings: object) -> Listener:
        running.append(Listener(folder, {"model_dir": str(package), "quiet_period_s": args.quiet_period,
                                         "destination": f"{PACS_AE}@127.0.0.1:{pacs.port}"} | settings,
                                env | ({"BIOMEDCLIP_APP_CONFIG": str(app_config)} if app_config else {})).start())
        return running[-1]

    try:
        with tempfile.TemporaryDirectory() as folder, inference_server(package, Path(folder) / "server.log", metrics=True) as server:
            work = Path(folder)
            make_sample_study(work / "sample")
            template = [pydicom.dcmread(p) for p in sorted((work / "sample").rglob("*")) if p.is_file()]
            with_server = {"local": listener(work / "local"), "triton": listener(work / "triton", triton_server=server.netloc),
                           NO_PREFETCH: listener(work / "triton-no-prefetch", triton_server=server.netloc, prefetch_embeddings=False)}
            if int8_variant(package):  # the same listener whose app asks for the server's int8 model
                with_server[INT8] = listener(work / "triton-int8", int8_config(work / "config"), triton_server=server.netloc)
            for one in with_server.values():  # the first run of each pays for cold caches: not measured
                sr_latency(pacs, one, new_study(template), args.quiet_period)
            results["latency"] = latency(pacs, with_server, template, args.repeats, args.quiet_period, server)
            if args.ct_slices:  # the same listeners (but the int8 one) on a long series, which the job samples
                make_ct_series(work / "ct", args.ct_slices)
                ct = [pydicom.dcmread(p) for p in sorted((work / "ct").iterdir())]
                on_ct = {name: one for name, one in with_server.items() if name != INT8}
                results["ct_slices"], results["ct"] = args.ct_slices, []
                for quiet in (args.quiet_period, ListenerConfig.quiet_period_s):  # this run's, and the listener's default
                    if quiet != args.quiet_period:
                        on_ct = {name: listener(work / f"{name}-{quiet:g}".replace(", ", "-"), quiet_period_s=quiet, **settings)
                                 for name, settings in (("local", {}), ("triton", {"triton_server": server.netloc}),
                                                        (NO_PREFETCH, {"triton_server": server.netloc, "prefetch_embeddings": False}))}
                    results["ct"].append({"quiet_period_s": quiet, "latency": latency(pacs, on_ct, ct, args.repeats, quiet, server)})
            results["urgent"] = urgent_behind_routine(pacs, with_server["triton"], template, args.routine, args.quiet_period, server)
            results["default_jobs_with_triton"] = TRITON_CONCURRENT_JOBS  # the triton listener sets no max_concurrent_jobs
            for one in with_server.values():
                one.stop()
            results["throughput"] = []
            for jobs in (int(n) for n in args.jobs.split(",") if n):
                measured = listener(work / f"jobs-{jobs}", triton_server=server.netloc, max_concurrent_jobs=jobs)
                results["throughput"].append({"max_concurrent_jobs": jobs, **throughput(pacs, measured, template, args.studies, args.quiet_period)})
                measured.stop()
                print(f"jobs {jobs}: {results['throughput'][-1]}", flush=True)
    finally:
        for one in running:
            one.stop()
        pacs.stop()
    results["load_after"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - began
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.no_section:
        print(section(results))
        return 0
    return report(results, args.out)


def report(results: dict, out: Path) -> int:
    """The BENCHMARKS.md section and the chart (``out`` as .png) of one run's results."""
    write_section(section(results), BEGIN, END)
    chart(results, out.with_suffix(".png"))
    print(section(results))
    return 0


def latency_table(lat: dict) -> list[str]:
    lines = ["| listener | latency after the quiet period (s) | of which the MAP job (s) | outside the job (s) "
             "| of which the job's inference (s) | all but inference (s) | images from the server's cache / computed | runs (s), in order |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    labels = {"triton": "with `-t` (Triton), prefetch (the default)", NO_PREFETCH: "with `-t`, `prefetch_embeddings` false",
              INT8: "with `-t`, `inference.precision` int8, prefetch", "local": "local model (no `-t`)"}
    for name, label in ((name, label) for name, label in labels.items() if name in lat):
        m, runs = lat[name]["median"], ", ".join(f"{r['after_quiet_period_s']:.2f}" for r in lat[name]["runs"])
        cached = f"{m['images_from_cache']:g} / {m['images_computed']:g}" if name != "local" else "–"
        lines.append(f"| {label} | {m['after_quiet_period_s']:.2f} | {m['job_s']:.2f} | {m['other_s']:.2f} | {m['inference_s']:.2f} "
                     f"| {m['not_inference_s']:.2f} | {cached} | {runs} |")
    return lines


def ct_paragraph(results: dict) -> list[str]:
    lines = ["", f"A {results['ct_slices']}-slice 512 x 512 CT series (pydicom's `693_UNCR`, each slice with noise of its own), whose "
             "16 evenly spaced images the job samples (`max_images_per_series`), the same listeners; at this run's quiet period and "
             "at the listener's default:"]
    for run in results["ct"]:
        lat = run["latency"]
        prefetched, without = lat["triton"]["median"]["after_quiet_period_s"], lat[NO_PREFETCH]["median"]["after_quiet_period_s"]
        lines += ["", f"Quiet period {run['quiet_period_s']:g} s:", "", *latency_table(lat), "",
                  f"Goal ≤ {LATENCY_GOAL_S:g} s with `-t`: {'met' if prefetched <= LATENCY_GOAL_S else 'not met'} ({prefetched:.2f} s with "
                  f"prefetch, {without:.2f} s without)."]
    lines += ["", "Past 16 images the job samples the series evenly, which only its end decides: the prefetch sends the images "
              "of the job's sampling plan over what arrived once the series has received nothing for 0.5 s, so what the job finds "
              "computed is what the server computed of those 16 images between then and the end of the quiet period."]
    return lines


def chart(results: dict, path: Path) -> None:
    """Latency after the quiet period per listener, split into the job's inference and everything else, with the goal:
    the sample study and, where measured, the CT series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = [(f"sample study, quiet period {results['quiet_period_s']:g} s", results["latency"])]
    studies += [(f"{results['ct_slices']}-slice CT, quiet period {run['quiet_period_s']:g} s", run["latency"]) for run in results.get("ct", [])]
    labels = {"local": "local model", NO_PREFETCH: "-t, no prefetch", "triton": "-t, prefetch", INT8: "-t int8, prefetch"}
    fig, axes = plt.subplots(len(studies), 1, figsize=(8, 2.2 + 1.6 * len(studies)), squeeze=False)
    for ax, (title, lat) in zip(axes[:, 0], studies):
        names = [name for name in labels if name in lat]
        inference = [lat[name]["median"]["inference_s"] for name in names]
        rest = [lat[name]["median"]["not_inference_s"] for name in names]
        ax.barh([labels[name] for name in names], inference, label="the job's inference")
        ax.barh([labels[name] for name in names], rest, left=inference, label="everything else (start, load, de-identify, SR, delivery)")
        ax.axvline(LATENCY_GOAL_S, color="black", linestyle="--", label=f"goal {LATENCY_GOAL_S:g} s")
        ax.set_title(f"{title} — {results['machine']}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("seconds from the last instance to the SR at the PACS, minus the quiet period (median)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def section(results: dict) -> str:
    lat, urgent = results["latency"], results["urgent"]
    load = " ".join(f"{x:.2f}" for x in results["load_before"]), " ".join(f"{x:.2f}" for x in results["load_after"])
    triton = lat["triton"]["median"]["after_quiet_period_s"]
    goal = urgent["solo"]["after_quiet_period_s"] + urgent["median_job_s"]
    lines = [
        BEGIN,
        "## Listener with a Triton server (`benchmarks/triton_listener.py`)",
        "",
        f"Machine: {results['machine']}, shared with other work: load average {load[0]} before the run, {load[1]} after "
        f"({results['wall_s'] / 60:.0f} min). `python -m app.listener` (loopback), `python -m app.inference_server` (tritonserver 2.51, "
        f"the Python-backend models over ONNX Runtime, fp32 and, for the int8 row, int8), package `{results['package']}`; pynetdicom sends copies of the sample "
        f"study (2 CT series, 7 instances, fresh UIDs) and a pynetdicom Storage SCP plays the PACS. Quiet period "
        f"{results['quiet_period_s']:g} s.",
        "",
        *([f"**Other work kept the cores busy before this run (load average above {os.cpu_count()} on {os.cpu_count()} cores): "
           "absolute times are inflated and vary between runs; compare rows within this run.**", ""]
          if results["load_before"][0] > (os.cpu_count() or 1) else []),
        f"Latency: from the last instance's C-STORE response to the SR at the PACS, minus the quiet period; medians of "
        f"{results['repeats']} interleaved runs (after one unmeasured run each). Goal ≤ {LATENCY_GOAL_S:g} s.",
        "",
        *latency_table(lat),
    ]
    without = lat[NO_PREFETCH]["median"]
    lines += [
        "",
        f"Goal ≤ {LATENCY_GOAL_S:g} s with `-t`: {'met' if triton <= LATENCY_GOAL_S else 'not met'} ({triton:.2f} s). Each job is "
        "forked from the listener's warm process (`app/warm_start.py`), so start-up is not in it. The listener's prefetch "
        "(`app/listener/prefetch.py`) sends each instance's images to the server as they are spooled, and the server keeps their "
        "embeddings (by the SHA-256 of the pixels), so the job's requests are answered from there: the study's inference is done "
        "while the quiet period runs. Without prefetch the job's own inference, the server's fp32 ONNX Runtime on this machine's "
        f"{os.cpu_count()} CPU cores, took {without['inference_s']:.2f} s for the study's 7 images and the result came "
        f"{without['after_quiet_period_s']:.2f} s after the quiet period ({without['not_inference_s']:.2f} s of it everything but "
        "inference: quiet-period detection, loading, de-identification, preprocessing, the SR, delivery). Each study is a copy of "
        "the sample study with pixels of its own (noise added), so no study is answered from an earlier one's images."
        + (f" With the int8 graph (its fidelity to fp32: docs/backends.md) the result came "
           f"{lat[INT8]['median']['after_quiet_period_s']:.2f} s after the quiet period." if INT8 in lat else ""),
        *(ct_paragraph(results) if "ct" in results else []),
        "",
        f"Urgent: a study with Requested Procedure Priority STAT, alone and then pushed right behind {urgent['routine']} routine "
        f"studies, to the listener with `-t` and its default {results['default_jobs_with_triton']} jobs at once.",
        "",
        "| STAT study | latency after the quiet period (s) |",
        "|---|---:|",
        f"| alone | {urgent['solo']['after_quiet_period_s']:.2f} |",
        f"| behind {urgent['routine']} routine studies (its SR arrived {urgent['stat_sr_position']} of {urgent['routine'] + 1}) | "
        f"{urgent['behind_routine_s']:.2f} |",
        "",
        f"One job, the median duration of the {urgent['routine'] + 1} jobs of that run (the routine ones and the STAT one, "
        f"{results['default_jobs_with_triton']} at a time): "
        f"{urgent['median_job_s']:.2f} s. Goal ≤ solo latency + one job = {goal:.2f} s: "
        f"{'met' if urgent['behind_routine_s'] <= goal else 'not met'}.",
    ]
    if results.get("throughput"):
        lines += ["", f"Jobs at once with `-t`: {results['throughput'][0]['studies']} studies pushed at once; studies/min from the end "
                  "of the transfer to the last SR, minus the quiet period.", "",
                  "| max_concurrent_jobs | studies/min | seconds | median job (s) |", "|---:|---:|---:|---:|"]
        lines += [f"| {row['max_concurrent_jobs']} | {row['studies_per_min']:.1f} | {row['seconds']:.1f} | {row['median_job_s']:.2f} |"
                  for row in results["throughput"]]
    lines += ["", f"Raw: `benchmarks/{OUT.name}`.", "", f"![listener latency](benchmarks/{OUT.with_suffix('.png').name})", END]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
