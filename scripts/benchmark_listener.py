#!/usr/bin/env python3
"""Listener benchmark, on loopback inside a private network namespace (scripts/listener_peers.py).

1. Reception: instances/s from dcmtk ``storescu`` into the listener (every instance fsync'd into the
   spool before it is acknowledged; TCP_NODELAY on), for 1 and 4 concurrent associations, 800
   copies of pydicom's 39 KB ``CT_small`` CT. References, interleaved with it: dcmtk ``storescp``
   (writes without fsync), and a bare pynetdicom Storage SCP that discards what it receives (the
   ceiling pynetdicom sets). Medians over ``--repeats``. The quiet period is long, so no job runs
   while receiving. Also the rate of durable (fsync'd, atomic) 39 KB file writes alone, 1 and 4 writers.
2. Result latency: from the end of the transfer of the sample study (2 CT series, 7 instances) to
   the SR stored at the PACS (dcmtk storescp), minus the quiet period; split into the MAP job
   (from the journal) and the rest (completion tick, job start, delivery).

    .venv/bin/python scripts/benchmark_listener.py   # writes benchmarks/listener.json and the BENCHMARKS.md section
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchmark_common import machine, write_section  # noqa: E402

from scripts.listener_peers import (  # noqa: E402
    PACS_AE,
    PACS_PORT,
    DcmtkPacs,
    ListenerProcess,
    LoopbackNamespace,
    listener_config,
    make_ct_studies,
    wait_for,
)
from operators.atomic import write_atomically  # noqa: E402
from scripts.make_sample_study import make_sample_study  # noqa: E402

BEGIN, END = "<!-- listener:begin -->", "<!-- listener:end -->"
INSTANCES = 800
TARGET_PER_S = 300  # issue 6, for 38 KB CT instances on loopback with Nagle off
BARE_SCP_PORT = 11114
#: A pynetdicom Storage SCP doing nothing but answer Success, with TCP_NODELAY like the listener.
BARE_SCP = f"""
import sys
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification
from app.listener.tcp import NODELAY_HANDLER
ae = AE("BARE")
ae.add_supported_context(CTImageStorage)
ae.add_supported_context(Verification)
ae.start_server(("127.0.0.1", {BARE_SCP_PORT}), evt_handlers=[NODELAY_HANDLER, (evt.EVT_C_STORE, lambda event: 0)])
"""


def send(ns: LoopbackNamespace, files: list[Path], associations: int, called_ae: str, port: int) -> float:
    """Seconds for ``associations`` concurrent storescu processes to send ``files`` (split evenly)."""
    started = time.perf_counter()
    senders = [ns.popen(["storescu", "-aet", "STORESCU", "-aec", called_ae, "127.0.0.1", port, *files[k::associations]],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for k in range(associations)]
    for sender in senders:
        output, _ = sender.communicate(timeout=600)
        if sender.returncode != 0:
            raise RuntimeError(f"storescu failed: {output.decode()[-2000:]}")
    return time.perf_counter() - started


class BareScp:
    def __init__(self, ns: LoopbackNamespace) -> None:
        self.process = ns.popen([sys.executable, "-c", BARE_SCP], cwd=ROOT)
        try:
            wait_for(lambda: ns.run(["echoscu", "-aec", "BARE", "127.0.0.1", BARE_SCP_PORT]).returncode == 0, 60, "the bare pynetdicom SCP", 0.2)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def reception(ns: LoopbackNamespace, work: Path, files: list[Path], repeats: int) -> dict:
    results: dict[str, list[float]] = {}
    for repeat in range(repeats):
        for associations in (1, 4):
            for receiver in ("listener", "storescp", "bare pynetdicom SCP"):
                run = work / f"recv-{receiver}-{associations}-{repeat}"
                run.mkdir()
                stored = len(files)
                if receiver == "listener":
                    peer = ListenerProcess(ns, listener_config(run, run / "unused-model", quiet_period_s=3600), run / "listener.log").start()
                    seconds = send(ns, files, associations, "BIOMEDCLIP", 11112)
                    stored = len(list((run / "spool" / "arrivals").glob("*/*.dcm")))
                elif receiver == "storescp":
                    peer = DcmtkPacs(ns, run / "pacs")
                    seconds = send(ns, files, associations, PACS_AE, PACS_PORT)
                    stored = len(peer.received())
                else:
                    peer = BareScp(ns)
                    seconds = send(ns, files, associations, "BARE", BARE_SCP_PORT)
                peer.stop()
                if stored != len(files):
                    raise RuntimeError(f"{receiver}: {stored} of {len(files)} instances stored")
                key = f"{receiver}, {associations} association(s)"
                results.setdefault(key, []).append(len(files) / seconds)
                print(f"{key}: {results[key][-1]:.0f} instances/s", flush=True)
                shutil.rmtree(run)
    return {k: {"runs": v, "median": statistics.median(v)} for k, v in results.items()}


def durable_writes(work: Path, size: int = 39_266, count: int = 400) -> dict:
    """Files/s of ``write_atomically`` (temporary file, fsync, rename, fsync of the folder) alone."""
    data = os.urandom(size)
    rates = {}
    for writers in (1, 4):
        folder = work / f"writes-{writers}"
        folder.mkdir()

        def write(k: int) -> None:
            for i in range(k, count, writers):
                write_atomically(folder / f"{i}.dcm", lambda f: f.write(data))

        started = time.perf_counter()
        threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rates[f"{writers} writer(s)"] = count / (time.perf_counter() - started)
        shutil.rmtree(folder)
    print(f"durable writes: {rates}", flush=True)
    return rates


def latency(ns: LoopbackNamespace, work: Path, model: Path, repeats: int, quiet_period_s: float) -> dict:
    study = work / "sample"
    make_sample_study(study)
    files = sorted(p for p in study.rglob("*") if p.is_file())
    pacs = DcmtkPacs(ns, work / "pacs")
    (work / "lat").mkdir()
    listener = ListenerProcess(ns, listener_config(work / "lat", model, quiet_period_s=quiet_period_s), work / "lat.log").start()
    runs = []
    try:
        for repeat in range(repeats):
            before = len(pacs.received())
            send(ns, files, 1, "BIOMEDCLIP", 11112)
            last_instance = time.perf_counter()
            wait_for(lambda: len(pacs.received()) > before, 900, "the SR at the PACS", 0.01)
            total = time.perf_counter() - last_instance
            job = [json.loads(line) for line in (work / "lat" / "spool" / "journal.jsonl").read_text().splitlines()]
            job_s = [r["seconds"] for r in job if r["event"] == "job_finished"][-1]
            runs.append({"after_quiet_period_s": total - quiet_period_s, "job_s": job_s, "other_s": total - quiet_period_s - job_s})
            print(f"latency run {repeat + 1}: {runs[-1]}", flush=True)
    finally:
        listener.stop()
        pacs.stop()
    return {"quiet_period_s": quiet_period_s, "runs": runs,
            "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]}}


def markdown(data: dict) -> str:
    rec, lat = data["reception"], data["latency"]
    lines = [
        BEGIN,
        "## DICOM listener (`scripts/benchmark_listener.py`)",
        "",
        f"Machine: {data['machine']}, shared with other work: load average {data['load_before']} before the run,",
        f"{data['load_after']} after. Loopback inside a private network namespace. Medians of {data['repeats']} interleaved runs.",
        "",
        f"Reception of {INSTANCES} CT instances (pydicom's `CT_small`, 39 KB each) from dcmtk `storescu` (`TCP_NODELAY=1`);",
        "the listener fsyncs every instance into the spool before acknowledging it. References: dcmtk `storescp`",
        "(stores without fsync) and a bare pynetdicom SCP that discards the data sets (TCP_NODELAY on).",
        "",
        "| receiver | associations | instances/s (median) | runs |",
        "|---|---:|---:|---|",
    ]
    for key, value in rec.items():
        receiver, associations = key.split(", ")
        lines.append(f"| {receiver} | {associations.split()[0]} | {value['median']:.0f} | {', '.join(f'{v:.0f}' for v in value['runs'])} |")
    m = lat["median"]
    best = max(v["median"] for k, v in rec.items() if k.startswith("listener"))
    lines += ["", f"Target ≥ {TARGET_PER_S} instances/s into the listener: {'met' if best >= TARGET_PER_S else 'not met'} here (best median {best:.0f}/s)."]
    writes = data["durable_writes_per_s"]
    lines += [
        "",
        f"Durable 39 KB file writes alone (`operators/atomic.py`: temporary file, fsync, rename, fsync of the folder):",
        f"{writes['1 writer(s)']:.0f}/s with 1 writer, {writes['4 writer(s)']:.0f}/s with 4 (the file system commits concurrent fsyncs together).",
        "One association waits for each acknowledgement, so its rate is bounded by one durable write per instance.",
    ]
    lines += [
        "",
        f"Result latency, sample study (2 CT series, 7 instances), quiet period {lat['quiet_period_s']:g} s: from the end of",
        "the transfer to the SR stored at the PACS (dcmtk `storescp`), minus the quiet period.",
        "",
        "| latency after the quiet period (s) | of which the MAP job (s) | completion + delivery (s) |",
        "|---:|---:|---:|",
        f"| {m['after_quiet_period_s']:.2f} | {m['job_s']:.2f} | {m['other_s']:.2f} |",
        "",
        "The MAP job is a fresh `python app` process (imports, model load, inference on CPU) per study.",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "biomedclip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quiet-period", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    args = parser.parse_args()
    if not LoopbackNamespace.available():
        print("error: needs `unshare --net` (root) to confine the peers to loopback", file=sys.stderr)
        return 2
    data = {"machine": machine(), "load_before": " ".join(open("/proc/loadavg").read().split()[:3]), "repeats": args.repeats}
    ns = LoopbackNamespace()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            studies = make_ct_studies(work / "ct", studies=2, series_per_study=2, instances_per_series=INSTANCES // 4)
            files = sorted(p for paths in studies.values() for p in paths)
            data["durable_writes_per_s"] = durable_writes(work)
            data["reception"] = reception(ns, work, files, args.repeats)
            data["latency"] = latency(ns, work, args.model.resolve(), args.repeats, args.quiet_period)
    finally:
        ns.close()
    data["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    args.out.mkdir(exist_ok=True)
    (args.out / "listener.json").write_text(json.dumps(data, indent=2))
    section = markdown(data)
    write_section(section, BEGIN, END)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
