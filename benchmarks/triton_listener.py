#!/usr/bin/env python3
"""The listener with a Triton server (issue 14): result latency, urgent studies, jobs at once.

Everything on loopback: the listener (``python -m app.listener``, bound to 127.0.0.1), a running
``python -m app.inference_server`` (127.0.0.1), and pynetdicom peers in this process: the sender, and
the Storage SCP standing in for the PACS, which notes when each SR arrives. Each study sent is a copy of
the sample study (2 CT series, 7 instances) with fresh UIDs.

1. Latency: from the last instance's C-STORE response to the SR received at the PACS, minus the quiet
   period, for a listener with ``-t``, one with ``-t`` whose app asks for the int8 graph (where the package
   has an int8 variant: ``inference.precision`` int8, the server's int8 model) and one with the local model
   (no ``-t``), interleaved; medians over ``--repeats``. Split into the MAP job (its ``job_finished`` seconds in the journal) and the rest,
   and into inference (the job's run report: its requests to the server, or the local model) and the rest.
2. Urgent: a study with Requested Procedure Priority STAT (the default ``urgent`` rule) sent alone, then
   sent behind ``--routine`` routine studies (the listener with ``-t`` and its default
   ``max_concurrent_jobs``): its latency both times, against the goal "≤ its solo latency + one job"
   (one job: the median duration of that run's jobs, which ran beside each other).
3. Jobs at once (``--jobs``, e.g. 1,2,4): ``--studies`` routine studies pushed at once to a listener with
   ``-t`` and that ``max_concurrent_jobs``: studies/min from the end of the transfer to the last SR.

    .venv/bin/python -m benchmarks.triton_listener --package models/biomedclip   # writes benchmarks/triton_listener.json, the BENCHMARKS.md section
    .venv/bin/python -m benchmarks.triton_listener --routine 4 --studies 2 --jobs 2 --repeats 1 --out /tmp/quick.json --no-section
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import Comprehensive3DSRStorage, generate_uid
from pynetdicom import AE, evt

from app.cli import TRITON_ENV
from app.listener.config import TRITON_CONCURRENT_JOBS
from benchmarks.common import machine, write_section
from operators.inference.triton_repository import PYTHON_INT8_MODEL, REPOSITORY
from operators.run_report import REPORT_NAME
from scripts.make_sample_study import make_sample_study
from tests.support.listener_peers import wait_for
from tests.support.triton_server import inference_server

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "triton_listener.json"
BEGIN, END = "<!-- triton-listener:begin -->", "<!-- triton-listener:end -->"
LISTENER_AE, SENDER_AE, PACS_AE = "BIOMEDCLIP", "STORESCU", "PACS"
LATENCY_GOAL_S = 2.0  # issue 14: last instance -> SR at the PACS, minus the quiet period
SR_TIMEOUT_S = 1800
INT8 = "triton, int8"


class Pacs:
    """A pynetdicom Storage SCP on loopback noting when each SR arrives, by Study Instance UID."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.order: list[str] = []
        self._lock = threading.Lock()
        ae = AE(PACS_AE)
        ae.add_supported_context(Comprehensive3DSRStorage)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = int(self.server.server_address[1])

    def _store(self, event: evt.Event) -> int:
        study = str(event.dataset.StudyInstanceUID)
        with self._lock:
            self.arrived[study] = time.perf_counter()
            self.order.append(study)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@dataclass
class Listener:
    """``python -m app.listener`` with its own spool and output, on a free loopback port."""

    folder: Path
    settings: dict
    env: dict[str, str]
    process: subprocess.Popen | None = field(default=None, init=False)
    port: int = field(default=0, init=False)

    def start(self) -> Listener:
        self.folder.mkdir(parents=True)
        config = self.folder / "listener.json"
        config.write_text(json.dumps({"ae_title": LISTENER_AE, "bind_host": "127.0.0.1", "port": 0,
                                      "allowed_calling_ae_titles": [SENDER_AE], "spool_dir": str(self.folder / "spool"),
                                      "output_dir": str(self.folder / "output"), "delivery_initial_backoff_s": 0.5,
                                      "delivery_max_backoff_s": 2.0, "min_free_bytes": 64 * 2**20, **self.settings}))
        port_file = self.folder / "port"
        with open(self.folder / "listener.log", "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "app.listener", "--config", str(config), "--port-file", str(port_file)],
                                            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_file.exists() or self.process.poll() is not None, 120, "the listener to listen", 0.1)  # type: ignore[union-attr]
        if self.process.poll() is not None:
            raise RuntimeError(f"the listener exited: {(self.folder / 'listener.log').read_text()[-2000:]}")
        self.port = int(port_file.read_text())
        return self

    def journal(self) -> list[dict]:
        return [json.loads(line) for line in (self.folder / "spool" / "journal.jsonl").read_text().splitlines()]

    def job_seconds(self) -> list[float]:
        """The ``job_finished`` durations, in journal order."""
        return [r["seconds"] for r in self.journal() if r["event"] == "job_finished"]

    def last_job_inference_s(self) -> float:
        """The last finished job's inference seconds (its run report's ``infer`` timing: the requests to the
        server, or the local model)."""
        arrival = [r["arrival"] for r in self.journal() if r["event"] == "job_finished"][-1]
        return json.loads((self.folder / "output" / arrival / REPORT_NAME).read_text())["timings_s"]["infer"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


def new_study(template: list[pydicom.Dataset], priority: str | None = None) -> list[pydicom.Dataset]:
    """A copy of the sample study as another study: fresh Study, Series and SOP Instance UIDs; with
    ``priority`` as every instance's Requested Procedure Priority (0040,1003)."""
    study_uid, series_uids = generate_uid(), {ds.SeriesInstanceUID: generate_uid() for ds in template}
    copies = []
    for ds in template:
        copy = deepcopy(ds)  # Dataset.copy() is shallow: its elements would be the template's
        copy.StudyInstanceUID, copy.SeriesInstanceUID = study_uid, series_uids[ds.SeriesInstanceUID]
        copy.SOPInstanceUID = generate_uid()
        if priority is not None:
            copy.RequestedProcedurePriority = priority
        copies.append(copy)
    return copies


def send(port: int, studies: list[list[pydicom.Dataset]]) -> float:
    """C-STORE every instance of ``studies`` over one association; returns perf_counter() after the last response."""
    ae = AE(SENDER_AE)
    for sop_class, syntax in {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for study in studies for ds in study}:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    if not assoc.is_established:
        raise RuntimeError("the listener refused the association")
    try:
        for study in studies:
            for ds in study:
                status = assoc.send_c_store(ds)
                if not status or status.Status != 0x0000:
                    raise RuntimeError(f"C-STORE failed: {status}")
        return time.perf_counter()
    finally:
        assoc.release()


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


def sr_latency(pacs: Pacs, listener: Listener, study: list[pydicom.Dataset], quiet_period_s: float) -> dict[str, float]:
    """One study alone: seconds after the quiet period to its SR, the job's share and the rest."""
    uid = study[0].StudyInstanceUID
    sent = send(listener.port, [study])
    wait_for(lambda: uid in pacs.arrived, SR_TIMEOUT_S, "the SR at the PACS", 0.01)
    after = pacs.arrived[uid] - sent - quiet_period_s
    job, inference = listener.job_seconds()[-1], listener.last_job_inference_s()
    return {"after_quiet_period_s": after, "job_s": job, "inference_s": inference, "not_inference_s": after - inference, "other_s": after - job}


def latency(pacs: Pacs, listeners: dict[str, Listener], template: list[pydicom.Dataset], repeats: int, quiet_period_s: float) -> dict:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in listeners}
    for repeat in range(repeats):
        names = list(listeners)
        for name in names[repeat % 2:] + names[:repeat % 2]:
            runs[name].append(sr_latency(pacs, listeners[name], new_study(template), quiet_period_s))
            print(f"latency {repeat + 1}, {name}: {runs[name][-1]}", flush=True)
    return {name: {"runs": r, "median": {k: statistics.median(x[k] for x in r) for k in r[0]}} for name, r in runs.items()}


def urgent_behind_routine(pacs: Pacs, listener: Listener, template: list[pydicom.Dataset], routine: int, quiet_period_s: float) -> dict:
    solo = sr_latency(pacs, listener, new_study(template, "STAT"), quiet_period_s)
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
    parser.add_argument("--routine", type=int, default=20, help="routine studies queued ahead of the STAT one")
    parser.add_argument("--studies", type=int, default=6, help="studies pushed at once for each --jobs value")
    parser.add_argument("--jobs", default="1,2,4", help="comma-separated max_concurrent_jobs values to measure")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-section", action="store_true", help="do not write the BENCHMARKS.md section")
    args = parser.parse_args(argv)
    package = args.package.resolve()
    env = {k: v for k, v in os.environ.items() if k != TRITON_ENV} | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    results: dict = {"machine": machine(), "package": package.name, "quiet_period_s": args.quiet_period, "repeats": args.repeats,
                     "load_before": os.getloadavg()}
    began = time.perf_counter()
    pacs = Pacs()
    running: list[Listener] = []

    def listener(folder: Path, app_config: Path | None = None, **settings: object) -> Listener:
        running.append(Listener(folder, {"model_dir": str(package), "quiet_period_s": args.quiet_period,
                                         "destination": f"{PACS_AE}@127.0.0.1:{pacs.port}", **settings},
                                env | ({"BIOMEDCLIP_APP_CONFIG": str(app_config)} if app_config else {})).start())
        return running[-1]

    try:
        with tempfile.TemporaryDirectory() as folder, inference_server(package, Path(folder) / "server.log") as server:
            work = Path(folder)
            make_sample_study(work / "sample")
            template = [pydicom.dcmread(p) for p in sorted((work / "sample").rglob("*")) if p.is_file()]
            with_server = {"local": listener(work / "local"), "triton": listener(work / "triton", triton_server=server.netloc)}
            if int8_variant(package):  # the same listener whose app asks for the server's int8 model
                with_server[INT8] = listener(work / "triton-int8", int8_config(work / "config"), triton_server=server.netloc)
            for one in with_server.values():  # the first run of each pays for cold caches: not measured
                sr_latency(pacs, one, new_study(template), args.quiet_period)
            results["latency"] = latency(pacs, with_server, template, args.repeats, args.quiet_period)
            results["urgent"] = urgent_behind_routine(pacs, with_server["triton"], template, args.routine, args.quiet_period)
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
    if not args.no_section:
        write_section(section(results), BEGIN, END)
    print(section(results))
    return 0


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
        *([f"**Other work kept the cores busy during this run (load average above {os.cpu_count()} on {os.cpu_count()} cores): "
           "absolute times are inflated and vary between runs; compare rows within this run.**", ""]
          if max(results["load_before"][0], results["load_after"][0]) > (os.cpu_count() or 1) else []),
        f"Latency: from the last instance's C-STORE response to the SR at the PACS, minus the quiet period; medians of "
        f"{results['repeats']} interleaved runs (after one unmeasured run each). Goal ≤ {LATENCY_GOAL_S:g} s.",
        "",
        "| listener | latency after the quiet period (s) | of which the MAP job (s) | outside the job (s) "
        "| of which inference (s) | all but inference (s) | runs (s), in order |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    labels = {"triton": "with `-t` (Triton)", INT8: "with `-t`, `inference.precision` int8", "local": "local model (no `-t`)"}
    for name, label in ((name, label) for name, label in labels.items() if name in lat):
        m, runs = lat[name]["median"], ", ".join(f"{r['after_quiet_period_s']:.2f}" for r in lat[name]["runs"])
        lines.append(f"| {label} | {m['after_quiet_period_s']:.2f} | {m['job_s']:.2f} | {m['other_s']:.2f} | {m['inference_s']:.2f} "
                     f"| {m['not_inference_s']:.2f} | {runs} |")
    rest = lat["triton"]["median"]["not_inference_s"]
    lines += [
        "",
        f"Goal ≤ {LATENCY_GOAL_S:g} s with `-t`: {'met' if triton <= LATENCY_GOAL_S else 'not met'} ({triton:.2f} s). Each job is "
        "forked from the listener's warm process (`app/warm_start.py`), so start-up is no longer in it; what remains is "
        f"inference, the server's fp32 ONNX Runtime on this machine's {os.cpu_count()} CPU cores ({lat['triton']['median']['inference_s']:.2f} s "
        f"for the study's 7 images), and {rest:.2f} s for everything else (quiet-period detection, loading, de-identification, "
        f"preprocessing, the SR, delivery): {'within' if rest <= LATENCY_GOAL_S else 'above'} the goal. The whole goal needs "
        "inference faster than this CPU gives: a GPU server (BENCHMARKS.md \"Triton on a GPU\")."
        + (f" With the int8 graph (its fidelity to fp32: docs/backends.md) inference took {lat[INT8]['median']['inference_s']:.2f} s "
           f"and the result came {lat[INT8]['median']['after_quiet_period_s']:.2f} s after the quiet period: "
           f"{'met' if lat[INT8]['median']['after_quiet_period_s'] <= LATENCY_GOAL_S else 'not met either'}." if INT8 in lat else ""),
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
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
