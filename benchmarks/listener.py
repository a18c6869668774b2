#!/usr/bin/env python3
"""Listener benchmark, on loopback inside a private network namespace (tests/support/listener_peers.py).

1. Reception: instances/s from dcmtk ``storescu`` into the listener (every instance fsync'd into the
   spool before it is acknowledged; TCP_NODELAY on), for 1 and 4 concurrent associations, 800
   copies of pydicom's 39 KB ``CT_small`` CT, and the CPU time the receiving process spent per
   instance. References, interleaved with it: dcmtk ``storescp`` (writes without fsync), and a bare
   pynetdicom Storage SCP that discards what it receives, once with the listener's connection
   settings (the ceiling pynetdicom sets for it) and once with pynetdicom's defaults (TCP_NODELAY
   only). The order of the receivers rotates between repeats, and each run starts after the previous
   run's files are deleted and the file system synced (deleting fsync'd files left the next run's
   fsyncs ~30 % slower, measured). Medians over ``--repeats``. The quiet period is long, so no job
   runs while receiving. Each repeat starts with the rate of durable (fsync'd, atomic) 39 KB file
   writes alone, 1 and 4 writers: the disk's speed at the time.
2. Result latency: from the end of the transfer of the sample study (2 CT series, 7 instances) to
   the SR stored at the PACS (dcmtk storescp), minus the quiet period; split into the MAP job
   (from the journal) and the rest (completion tick, job start, delivery).

With ``--baseline-tree DIR`` (a checkout of another commit, e.g. ``git worktree add --detach DIR
COMMIT``), the listener of that tree is measured too, in the same run: one more receiver in the
rotation, and its own listener taking turns with this tree's for the latency; the section gives the
ratio of the medians.

    .venv/bin/python -m benchmarks.listener [--baseline-tree DIR]   # writes benchmarks/listener.json and the BENCHMARKS.md section
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

from app.listener.config import ListenerConfig
from app.listener.tcp import DUL_POLL_INTERVAL_S
from benchmarks.common import machine, write_section
from operators.atomic import write_atomically
from scripts.make_sample_study import make_sample_study
from tests.support.listener_peers import (
    PACS_AE,
    PACS_PORT,
    DcmtkPacs,
    ListenerProcess,
    LoopbackNamespace,
    listener_config,
    make_ct_studies,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- listener:begin -->", "<!-- listener:end -->"
INSTANCES = 800
TARGET_PER_S = 300  # issue 6, for 38 KB CT instances on loopback with Nagle off
MAX_LOSS = 0.10  # issue 13: against the tree before the hardening, in the same run
BARE_SCP_PORT = 11114
#: A pynetdicom Storage SCP doing nothing but answer Success: with the listener's connection settings
#: (``listener``) or with pynetdicom's defaults plus TCP_NODELAY (``defaults``).
BARE_SCP = f"""
import socket, sys
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification
from app.listener.config import ListenerConfig
from app.listener.tcp import LOW_LATENCY_HANDLER
ae = AE("BARE")
ae.add_supported_context(CTImageStorage)
ae.add_supported_context(Verification)
if sys.argv[1] == "listener":
    ae.maximum_pdu_size = ListenerConfig.max_pdu_bytes
    on_connection = LOW_LATENCY_HANDLER
else:
    on_connection = (evt.EVT_CONN_OPEN, lambda event: event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))
ae.start_server(("127.0.0.1", {BARE_SCP_PORT}), evt_handlers=[on_connection, (evt.EVT_C_STORE, lambda event: 0)])
"""
LISTENER, BASELINE = "listener", "listener, baseline tree"
RECEIVERS = {  # name -> (called AE title, port)
    LISTENER: ("BIOMEDCLIP", 11112),
    BASELINE: ("BIOMEDCLIP", 11112),
    "dcmtk storescp": (PACS_AE, PACS_PORT),
    "bare pynetdicom SCP, listener's settings": ("BARE", BARE_SCP_PORT),
    "bare pynetdicom SCP, pynetdicom defaults": ("BARE", BARE_SCP_PORT),
}


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
    def __init__(self, ns: LoopbackNamespace, settings: str) -> None:
        self.process = ns.popen([sys.executable, "-c", BARE_SCP, settings], cwd=ROOT)
        try:
            wait_for(lambda: ns.run(["echoscu", "-aec", "BARE", "127.0.0.1", BARE_SCP_PORT]).returncode == 0, 60, "the bare pynetdicom SCP", 0.2)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (proc(5): utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_receiver(ns: LoopbackNamespace, receiver: str, run: Path, baseline: Path | None):
    """The receiver, listening; returns it and the pid of the process that receives."""
    if receiver in (LISTENER, BASELINE):
        tree = baseline if receiver == BASELINE and baseline else ROOT
        listener = ListenerProcess(ns, listener_config(run, run / "unused-model", quiet_period_s=3600), run / "listener.log", tree).start()
        return listener, listener.pid
    if receiver == "dcmtk storescp":
        pacs = DcmtkPacs(ns, run / "pacs")
        return pacs, pacs.process.pid
    bare = BareScp(ns, "listener" if "listener's" in receiver else "defaults")
    return bare, bare.process.pid


def stored(receiver: str, run: Path, files: list[Path]) -> int:
    if receiver in (LISTENER, BASELINE):
        return len(list((run / "spool" / "arrivals").glob("*/*.dcm")))
    if receiver == "dcmtk storescp":
        return len(list((run / "pacs").iterdir()))
    return len(files)  # the bare SCP keeps nothing; storescu failed if any C-STORE did


DURABLE_WRITES = "durable 39 KB file writes alone (writers)"


def durable_writes(work: Path, writers: int, size: int = 39_266, count: int = 400) -> dict:
    """Files/s and CPU time per file of ``write_atomically`` (temporary file, fsync, rename, fsync of
    the folder) alone, from ``writers`` threads."""
    data = os.urandom(size)
    folder = work / "writes"
    folder.mkdir()

    def write(k: int) -> None:
        for i in range(k, count, writers):
            write_atomically(folder / f"{i}.dcm", lambda f: f.write(data))

    started, cpu_before = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    shutil.rmtree(folder)
    os.sync()
    return {"per_s": count / seconds, "cpu_ms_per_instance": 1000 * cpu / count}


def receive(ns: LoopbackNamespace, work: Path, files: list[Path], receiver: str, associations: int, baseline: Path | None) -> dict:
    """Instances/s and the receiving process's CPU time per instance for one run."""
    run = work / "receiving"
    run.mkdir()
    peer, pid = start_receiver(ns, receiver, run, baseline)
    cpu_before = cpu_seconds(pid)
    seconds = send(ns, files, associations, *RECEIVERS[receiver])
    cpu = cpu_seconds(pid) - cpu_before
    peer.stop()
    if stored(receiver, run, files) != len(files):
        raise RuntimeError(f"{receiver}: {stored(receiver, run, files)} of {len(files)} instances stored")
    shutil.rmtree(run)
    os.sync()  # the next run must not pay for writing back this one's deletions
    return {"per_s": len(files) / seconds, "cpu_ms_per_instance": 1000 * cpu / len(files)}


def reception(ns: LoopbackNamespace, work: Path, files: list[Path], repeats: int, baseline: Path | None) -> dict:
    """Each repeat: the durable-write rate (the disk's speed at the time), then every receiver."""
    names = [name for name in RECEIVERS if baseline or name != BASELINE]
    runs: dict[str, dict[int, list[dict]]] = {name: {1: [], 4: []} for name in [DURABLE_WRITES, *names]}
    for repeat in range(repeats):
        for writers in (1, 4):
            runs[DURABLE_WRITES][writers].append(durable_writes(work, writers))
        for receiver in names[repeat % len(names):] + names[:repeat % len(names)]:
            for associations in (1, 4):
                runs[receiver][associations].append(receive(ns, work, files, receiver, associations, baseline))
        for name, by_count in runs.items():
            for count, results in by_count.items():
                print(f"{name}, {count}: {results[-1]['per_s']:.0f}/s, {results[-1]['cpu_ms_per_instance']:.2f} ms CPU each", flush=True)
    return {name: {str(n): {"runs": r, "median_per_s": statistics.median(x["per_s"] for x in r),
                            "median_cpu_ms_per_instance": statistics.median(x["cpu_ms_per_instance"] for x in r)}
                   for n, r in by_count.items()}
            for name, by_count in runs.items()}


def latency(ns: LoopbackNamespace, work: Path, model: Path, repeats: int, quiet_period_s: float, baseline: Path | None) -> dict:
    """Each repeat sends the sample study to each tree's listener in turn (the order alternates); both
    listen all along, on their own ports, and deliver to one PACS."""
    study = work / "sample"
    make_sample_study(study)
    files = sorted(p for p in study.rglob("*") if p.is_file())
    trees = {LISTENER: (ROOT, 11112), **({BASELINE: (baseline, 11115)} if baseline else {})}
    pacs = DcmtkPacs(ns, work / "pacs")
    listeners = []
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    try:
        for tree, port in trees.values():
            folder = work / "lat" / str(port)
            folder.mkdir(parents=True)
            config = listener_config(folder, model, quiet_period_s=quiet_period_s, port=port)
            listeners.append(ListenerProcess(ns, config, folder / "listener.log", tree).start())
        for repeat in range(repeats):
            for name in list(trees)[repeat % 2:] + list(trees)[:repeat % 2]:
                tree, port = trees[name]
                before = len(pacs.received())
                send(ns, files, 1, "BIOMEDCLIP", port)
                last_instance = time.perf_counter()
                wait_for(lambda before=before: len(pacs.received()) > before, 900, "the SR at the PACS", 0.01)
                total = time.perf_counter() - last_instance
                job = [json.loads(line) for line in (work / "lat" / str(port) / "spool" / "journal.jsonl").read_text().splitlines()]
                job_s = [r["seconds"] for r in job if r["event"] == "job_finished"][-1]
                runs[name].append({"after_quiet_period_s": total - quiet_period_s, "job_s": job_s, "other_s": total - quiet_period_s - job_s})
                print(f"latency run {repeat + 1}, {name}: {runs[name][-1]}", flush=True)
    finally:
        for listener in listeners:
            listener.stop()
        pacs.stop()
    return {"quiet_period_s": quiet_period_s,
            **{name: {"runs": r, "median": {k: statistics.median(x[k] for x in r) for k in r[0]}} for name, r in runs.items()}}


def markdown(data: dict) -> str:
    rec, lat = data["reception"], data["latency"]
    lines = [
        BEGIN,
        "## DICOM listener (`benchmarks/listener.py`)",
        "",
        f"Machine: {data['machine']}, shared with other work: load average {data['load_before']} before the run,",
        f"{data['load_after']} after. Loopback inside a private network namespace. Medians of {data['repeats']} interleaved runs.",
        "",
        f"Reception of {INSTANCES} CT instances (pydicom's `CT_small`, 39 KB each) from dcmtk `storescu` (`TCP_NODELAY=1`);",
        "the listener fsyncs every instance into the spool (file, then folder) before acknowledging it. References:",
        "dcmtk `storescp` (stores without fsync) and a bare pynetdicom SCP that discards the data sets, with the listener's",
        f"connection settings (TCP_NODELAY, {DUL_POLL_INTERVAL_S * 1000:g} ms DUL poll interval, {ListenerConfig.max_pdu_bytes / 2**20:g} MiB maximum PDU) and with pynetdicom's defaults",
        "(TCP_NODELAY only). CPU: time the receiving process spent per instance (user + system). First in each repeat:",
        "durable 39 KB file writes alone (`operators/atomic.py`: temporary file, fsync, rename, fsync of the folder), the",
        "disk's speed at the time.",
        "",
        "| receiver | associations | instances/s (median) | runs, in order | CPU ms per instance (median) |",
        "|---|---:|---:|---|---:|",
    ]
    for receiver, by_associations in rec.items():
        for associations, value in by_associations.items():
            runs = ", ".join(f"{r['per_s']:.0f}" for r in value["runs"])
            lines.append(f"| {receiver} | {associations} | {value['median_per_s']:.0f} | {runs} | {value['median_cpu_ms_per_instance']:.2f} |")
    listener, ceiling = rec[LISTENER], rec["bare pynetdicom SCP, listener's settings"]
    lines.append("")
    for associations in ("1", "4"):
        rate = listener[associations]["median_per_s"]
        lines.append(f"Target ≥ {TARGET_PER_S} instances/s with {associations} association(s): {'met' if rate >= TARGET_PER_S else 'not met'} here "
                     f"(median {rate:.0f}/s, {rate / ceiling[associations]['median_per_s']:.0%} of the bare pynetdicom SCP's).")
    if BASELINE in rec:
        lines += ["", f"Against the baseline tree ({data['baseline']}), same run: this tree's median / the baseline's "
                  f"(issue 13: no loss of more than {MAX_LOSS:.0%})."]
        for associations in ("1", "4"):
            now, then = listener[associations], rec[BASELINE][associations]
            ratio = now["median_per_s"] / then["median_per_s"]
            lines.append(f"- {associations} association(s): {now['median_per_s']:.0f} vs {then['median_per_s']:.0f} instances/s = "
                         f"{ratio:.2f} ({'within' if ratio >= 1 - MAX_LOSS else 'more than'} {MAX_LOSS:.0%} loss); CPU per instance "
                         f"{now['median_cpu_ms_per_instance']:.2f} vs {then['median_cpu_ms_per_instance']:.2f} ms = "
                         f"{now['median_cpu_ms_per_instance'] / then['median_cpu_ms_per_instance']:.2f}")
    lines += [
        "",
        "One association waits for each acknowledgement, so its rate is bounded by one durable write per instance;",
        "the listener's associations share one Python process, hence one core (the GIL). Disk speed on this VM drifts,",
        "even within one run of this script (docs/listener.md, Performance): compare rows of the same repeat. Under other",
        "work's load the absolute rates fall with the durable-write rate; only ratios within one run compare two trees.",
    ]
    lines += [
        "",
        f"Result latency, sample study (2 CT series, 7 instances), quiet period {lat['quiet_period_s']:g} s: from the end of",
        "the transfer to the SR stored at the PACS (dcmtk `storescp`), minus the quiet period.",
        "",
        "| listener | latency after the quiet period (s) | of which the MAP job (s) | completion + delivery (s) | runs (s), in order |",
        "|---|---:|---:|---:|---|",
    ]
    for name in (LISTENER, BASELINE):
        if name in lat:
            m, runs = lat[name]["median"], ", ".join(f"{r['after_quiet_period_s']:.2f}" for r in lat[name]["runs"])
            lines.append(f"| {name} | {m['after_quiet_period_s']:.2f} | {m['job_s']:.2f} | {m['other_s']:.2f} | {runs} |")
    if BASELINE in lat:
        now, then = lat[LISTENER]["median"]["other_s"], lat[BASELINE]["median"]["other_s"]
        total = lat[LISTENER]["median"]["after_quiet_period_s"] / lat[BASELINE]["median"]["after_quiet_period_s"]
        lines += ["", f"Latency, this tree's median / the baseline's: {total:.2f}. The listener's own share (completion + delivery): "
                  f"{now:.2f} s vs the baseline's {then:.2f} s; the rest is the MAP job (the application, nearly unchanged between the trees)."]
    lines += [
        "",
        "The MAP job is forked from the listener's warm process (imports done once, `app/warm_start.py`); it loads the model and runs inference on CPU, per study.",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "biomedclip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quiet-period", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of another commit whose listener is measured in the same run")
    args = parser.parse_args()
    baseline = args.baseline_tree.resolve() if args.baseline_tree else None
    if not LoopbackNamespace.available():
        print("error: needs `unshare --net` (root) to confine the peers to loopback", file=sys.stderr)
        return 2
    data = {"machine": machine(), "load_before": " ".join(open("/proc/loadavg").read().split()[:3]), "repeats": args.repeats}
    if baseline:
        commit = subprocess.run(["git", "-C", str(baseline), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True)
        data["baseline"] = commit.stdout.strip()
    ns = LoopbackNamespace()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            studies = make_ct_studies(work / "ct", studies=2, series_per_study=2, instances_per_series=INSTANCES // 4)
            files = sorted(p for paths in studies.values() for p in paths)
            data["reception"] = reception(ns, work, files, args.repeats, baseline)
            data["latency"] = latency(ns, work, args.model.resolve(), args.repeats, args.quiet_period, baseline)
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
