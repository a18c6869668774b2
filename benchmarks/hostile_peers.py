#!/usr/bin/env python3
"""Hostile peers against Orthanc and against this listener, with the same clients
(``tests/support/hostile_peers.py``), on loopback inside a private network namespace.

Each server runs in turn with its defaults (Orthanc: the Debian package's defaults but for ports,
folders, no HTTP authentication, loopback-only REST; the listener: ``listener.example.json``'s
defaults, a quiet period of an hour so that no job runs). Each case is one client process inside
the namespace; where it says so, a well-behaved sender (one association, 20 CT instances from
127.0.0.1) runs at the same time, the hostile peer using 127.0.0.2 / 127.0.0.3. Around each case the
server's peak RSS is reset (``/proc/PID/clear_refs``) and read (``VmHWM``), its stored instances and
its log compared. Every wait is bounded (``BOUND_S``).

    .venv/bin/python -m benchmarks.hostile_peers   # writes benchmarks/hostile_peers.json and the table in docs/listener.md
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from benchmarks.common import machine, write_section
from tests.support.hostile_peers import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RQ,
    P_DATA_TF,
    TIMEOUT_S,
    Scp,
    WellBehavedSender,
    associate_rq,
    connect,
    pdu_header,
    read_pdu,
    send_as_encoded,
    write_deflate_bomb,
)
from tests.support.listener_peers import (
    LISTENER_AE,
    LISTENER_PORT,
    PACS_AE,
    PACS_PORT,
    PEER_ENV,
    ListenerProcess,
    LoopbackNamespace,
    OrthancPacs,
    listener_config,
    make_ct_studies,
    make_non_image_instances,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "listener.md"
BEGIN, END = "<!-- hostile:begin -->", "<!-- hostile:end -->"
BOUND_S = {"silent sockets": 45.0, "stalled inside a PDU": 90.0, "oversized A-ASSOCIATE-RQ": 30.0}
SILENT_SOCKETS, PROBES = 16, 200
ANNOUNCED_PDU, BOMB_INFLATED = 256 * 2**20, 512 * 2**20
LEADING_ZERO_UID, FORGED_LINE = "1.2.826.0.1.3680043.8.498.0123", "FORGED LOG LINE"


def _close_times(socks: list[socket.socket], since: float, bound_s: float) -> list[float | None]:
    """Seconds from ``since`` until the server closed each socket; None for those still open at the bound."""
    closed: dict[int, float] = {}
    open_ = {s.fileno(): s for s in socks}
    while open_ and (left := since + bound_s - time.monotonic()) > 0:
        readable, _, _ = select.select(list(open_.values()), [], [], left)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                closed[sock.fileno()] = time.monotonic() - since
                del open_[sock.fileno()]
    return [round(closed[s.fileno()], 1) if s.fileno() in closed else None for s in socks]


def _watch(socks: list[socket.socket], since: float, bound_s: float) -> Callable[[], list[float | None]]:
    """Starts timing when the server closes each socket (``_close_times``) in a thread, so that the
    well-behaved sender runs meanwhile; the returned function waits for the result."""
    result: list[list[float | None]] = []
    watcher = threading.Thread(target=lambda: result.append(_close_times(socks, since, bound_s)))
    watcher.start()

    def close_times() -> list[float | None]:
        watcher.join()
        return result[0]

    return close_times


def _sender_result(good: WellBehavedSender) -> dict:
    return {"established": good.established, "acknowledged": good.acknowledged, "sent": len(good.files),
            "seconds": None if good.seconds is None else round(good.seconds, 2)}


def silent_sockets(scp: Scp, good_files: list[Path], work: Path) -> dict:
    since = time.monotonic()
    socks = [connect(scp, "127.0.0.2") for _ in range(SILENT_SOCKETS)]
    close_times = _watch(socks, since, BOUND_S["silent sockets"])
    good = WellBehavedSender(scp, good_files).start().finish()
    closed = close_times()
    return {"well_behaved": _sender_result(good), "sockets": SILENT_SOCKETS, "close_times_s": closed, "bound_s": BOUND_S["silent sockets"]}


def connect_and_close(scp: Scp, good_files: list[Path], work: Path) -> dict:
    good = WellBehavedSender(scp, good_files)

    def probe() -> None:
        for _ in range(PROBES):
            try:
                connect(scp, "127.0.0.3").close()
            except OSError:
                pass

    prober = threading.Thread(target=probe)
    prober.start()
    good.start().finish()
    prober.join()
    return {"well_behaved": _sender_result(good), "probes": PROBES}


def stalled_inside_a_pdu(scp: Scp, good_files: list[Path], work: Path) -> dict:
    """One peer stops inside its A-ASSOCIATE-RQ, one inside a P-DATA-TF of an accepted association."""
    since = time.monotonic()
    in_data = connect(scp, "127.0.0.3")
    in_data.settimeout(TIMEOUT_S)
    in_data.sendall(associate_rq(scp, "STORESCU", CTImageStorage, ExplicitVRLittleEndian))
    accepted = read_pdu(in_data)[0] == A_ASSOCIATE_AC
    in_data.sendall(pdu_header(P_DATA_TF, 1000) + bytes(10))
    in_request = connect(scp, "127.0.0.2")
    in_request.sendall(pdu_header(A_ASSOCIATE_RQ, 1000) + b"\x00\x01" + bytes(8))
    close_times = _watch([in_request, in_data], since, BOUND_S["stalled inside a PDU"])
    good = WellBehavedSender(scp, good_files).start().finish()
    closed = close_times()
    return {"well_behaved": _sender_result(good), "association_accepted": accepted,
            "closed_after_s": {"in A-ASSOCIATE-RQ": closed[0], "in P-DATA-TF": closed[1]}, "bound_s": BOUND_S["stalled inside a PDU"]}


def oversized_associate_rq(scp: Scp, good_files: list[Path], work: Path) -> dict:
    """Announces a 256 MiB A-ASSOCIATE-RQ and sends it, 1 MiB at a time, as long as the server reads."""
    sock = connect(scp, "127.0.0.2")
    good = WellBehavedSender(scp, good_files).start()
    started, sent = time.monotonic(), 0
    sock.settimeout(10)
    try:
        sock.sendall(pdu_header(A_ASSOCIATE_RQ, ANNOUNCED_PDU) + b"\x00\x01" + bytes(68))
        chunk = bytes(2**20)
        while sent < ANNOUNCED_PDU:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    sending_s = time.monotonic() - started
    closed = _close_times([sock], started, BOUND_S["oversized A-ASSOCIATE-RQ"])[0]
    good.finish()
    return {"well_behaved": _sender_result(good), "announced_bytes": ANNOUNCED_PDU, "mib_accepted": sent // 2**20,
            "sending_s": round(sending_s, 2), "closed_after_s": closed}


def deflate_bomb(scp: Scp, good_files: list[Path], work: Path) -> dict:
    bomb = write_deflate_bomb(work / "bomb.dcm", good_files[0], BOMB_INFLATED)
    good = WellBehavedSender(scp, good_files).start()
    started = time.monotonic()
    (status,) = send_as_encoded(scp, [bomb])
    seconds = time.monotonic() - started
    good.finish()
    return {"well_behaved": _sender_result(good), "wire_kb": bomb.stat().st_size // 1000, "inflated_mib": BOMB_INFLATED // 2**20,
            "status": _hex(status), "seconds": round(seconds, 2), "hostile_uids": _uids([bomb])}


def _forged(like: Path, path: Path, **attributes: str) -> Path:
    """A copy of ``like`` with a fresh SOP Instance UID in its File Meta (the C-STORE request's) and
    its data set, the data set then given ``attributes``."""
    ds = pydicom.dcmread(like)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def forged_uids(scp: Scp, good_files: list[Path], work: Path) -> dict:
    files = [_forged(good_files[0], work / "other.dcm", SOPInstanceUID=generate_uid()),
             _forged(good_files[0], work / "path.dcm", SOPInstanceUID="../../x")]
    statuses = send_as_encoded(scp, files)
    return {"status": {"another instance": _hex(statuses[0]), "../../x": _hex(statuses[1])}, "hostile_uids": _uids(files)}


def non_image_push(scp: Scp, good_files: list[Path], work: Path) -> dict:
    """``storescu +sd +r`` of a study folder: 4 CT images, a Basic Text SR, a KOS, a presentation state, a PDF."""
    folder = work / "study"
    folder.mkdir()
    for path in good_files[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    others = make_non_image_instances(folder / "others", like=good_files[0])
    result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", scp.ae_title, scp.host, str(scp.port), "+sd", "+r", str(folder)],
                            capture_output=True, text=True, env=PEER_ENV, timeout=60)
    return {"storescu_exit_code": result.returncode, "no_presentation_context": "No presentation context" in result.stderr,
            "instances": 8, "hostile_uids": _uids([*good_files[:4], *others])}


def uid_in_log(scp: Scp, good_files: list[Path], work: Path) -> dict:
    leading_zero = _forged(good_files[0], work / "leading-zero.dcm", StudyInstanceUID=LEADING_ZERO_UID)
    newline = _forged(good_files[1], work / "newline.dcm", SeriesInstanceUID=f"1.2.3\n{FORGED_LINE}")
    statuses = send_as_encoded(scp, [leading_zero, newline])
    return {"status": {"leading zero": _hex(statuses[0]), "newline": _hex(statuses[1])}, "hostile_uids": _uids([leading_zero, newline])}


def _uids(files: list[Path]) -> list[str]:
    """The SOP Instance UIDs of the request (File Meta) and of the data set of each of ``files``."""
    return [str(uid) for p in files for uid in (pydicom.filereader.read_file_meta_info(p).MediaStorageSOPInstanceUID,
                                                pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)]


def _hex(status: int | None) -> str | None:
    return None if status is None else f"{status:04X}"


CASES = {
    "silent sockets": silent_sockets,
    "connect-and-close probes": connect_and_close,
    "stalled inside a PDU": stalled_inside_a_pdu,
    "oversized A-ASSOCIATE-RQ": oversized_associate_rq,
    "deflate bomb": deflate_bomb,
    "data set UIDs unlike the request's": forged_uids,
    "non-image SOP classes in a study push": non_image_push,
    "UID with a leading zero or a newline": uid_in_log,
}


def run_client(case: str, scp: Scp, work: Path) -> dict:
    """Inside the namespace: one case against ``scp``."""
    (good_files,) = make_ct_studies(work / "good", studies=1, series_per_study=1, instances_per_series=20).values()
    return CASES[case](scp, good_files, work)


class Server:
    """Orthanc or the listener in the namespace: its address, pid, log and stored instances."""

    def __init__(self, name: str, ns: LoopbackNamespace, work: Path) -> None:
        self.name = name
        if name == "Orthanc":
            self.orthanc = OrthancPacs(ns, work / "orthanc")
            self.scp, self.pid, self.log = Scp("127.0.0.1", PACS_PORT, PACS_AE), self.orthanc.process.pid, work / "orthanc" / "orthanc.log"
        else:
            work.mkdir()
            config = listener_config(work, work / "unused-model", quiet_period_s=3600)
            self.listener = ListenerProcess(ns, config, work / "listener.log").start()
            self.scp, self.pid, self.log = Scp("127.0.0.1", LISTENER_PORT, LISTENER_AE), self.listener.pid, work / "listener.log"
        self.spool = work / "spool" / "arrivals"

    def stored(self) -> list[str]:
        """SOP Instance UIDs of what it stored (Orthanc's index; the listener's spool files)."""
        if self.name == "Orthanc":
            return [i["MainDicomTags"].get("SOPInstanceUID", "") for i in self.orthanc.get("/instances?expand")]
        return [p.name.removesuffix(".dcm") for p in self.spool.glob("*/*.dcm")]

    def memory_kib(self, field: str) -> int:
        line = next(x for x in Path(f"/proc/{self.pid}/status").read_text().splitlines() if x.startswith(field + ":"))
        return int(line.split()[1])

    def stop(self) -> None:
        (self.orthanc if self.name == "Orthanc" else self.listener).stop()


def measure(ns: LoopbackNamespace, server: Server, case: str, work: Path) -> dict:
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    rss_before, stored_before, log_before = server.memory_kib("VmRSS"), set(server.stored()), server.log.stat().st_size
    argv = [sys.executable, "-m", "benchmarks.hostile_peers", "--client", case, "--host", server.scp.host,
            "--port", server.scp.port, "--ae", server.scp.ae_title, "--work", work]
    done = ns.run(argv, cwd=ROOT, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{case} against {server.name}: {done.stderr[-3000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    time.sleep(3)  # what the server does after the client left
    stored = [uid for uid in server.stored() if uid not in stored_before and uid in result.get("hostile_uids", ())]
    log = server.log.read_bytes()[log_before:].decode(errors="replace")
    result["server"] = {
        "rss_before_mib": round(rss_before / 1024), "peak_rss_mib": round(server.memory_kib("VmHWM") / 1024),
        "hostile_stored": len(set(stored)), "stored_path_uid": "../../x" in stored, "alive": Path(f"/proc/{server.pid}").exists(),
        "leading_zero_uid_in_log": LEADING_ZERO_UID in log,
        "forged_log_line": any(line.startswith(FORGED_LINE) for line in log.splitlines()),
        "log_lines": len(log.splitlines()),
    }
    print(f"{server.name}, {case}: {json.dumps(result)}", flush=True)
    return result


def _closed(seconds: float | None, bound: float) -> str:
    return f"closed after {seconds:g} s" if seconds is not None else f"still open after {bound:g} s"


def _sender(r: dict) -> str:
    w = r["well_behaved"]
    if not w["established"]:
        return "well-behaved sender **not associated**"
    return f"well-behaved sender: {w['acknowledged']}/{w['sent']} stored in {w['seconds']} s"


def describe(case: str, r: dict) -> str:
    """One table cell: what the server did in ``case``."""
    s = r["server"]
    if case == "silent sockets":
        closed = [t for t in r["close_times_s"] if t is not None]
        when = ", ".join(f"{t:g}" for t in sorted(set(closed)))
        return (f"{_sender(r)}; of {r['sockets']} silent sockets {len(closed)} closed (after {when or '-'} s), "
                f"{r['sockets'] - len(closed)} still open after {r['bound_s']:g} s")
    if case == "connect-and-close probes":
        return f"{_sender(r)} during {r['probes']} probes"
    if case == "stalled inside a PDU":
        c = r["closed_after_s"]
        return (f"in A-ASSOCIATE-RQ: {_closed(c['in A-ASSOCIATE-RQ'], r['bound_s'])}; in P-DATA-TF: {_closed(c['in P-DATA-TF'], r['bound_s'])}; "
                f"{_sender(r)}")
    if case == "oversized A-ASSOCIATE-RQ":
        return (f"{_closed(r['closed_after_s'], BOUND_S[case])} ({r['mib_accepted']} of the 256 MiB sent by then, socket buffers included); peak RSS {s['rss_before_mib']} → "
                f"{s['peak_rss_mib']} MiB; {_sender(r)}")
    if case == "deflate bomb":
        status = r["status"] or f"none ({r['seconds']:g} s)"
        return (f"{r['wire_kb']} KB → {r['inflated_mib']} MiB: status {status}, stored {s['hostile_stored']}, peak RSS "
                f"{s['rss_before_mib']} → {s['peak_rss_mib']} MiB{'' if s['alive'] else ', **server died**'}; {_sender(r)}")
    if case == "data set UIDs unlike the request's":
        st = r["status"]
        return (f"another instance's UID: {st['another instance'] or 'no response'}, `../../x`: {st['../../x'] or 'no response'}; stored {s['hostile_stored']} of 2"
                f"{', `../../x` among them' if s['stored_path_uid'] else ''}")
    if case == "non-image SOP classes in a study push":
        return (f"storescu exit code {r['storescu_exit_code']}{' (No presentation context)' if r['no_presentation_context'] else ''}; "
                f"stored {s['hostile_stored']} of {r['instances']}")
    st = r["status"]
    return (f"statuses {st['leading zero'] or 'none'} / {st['newline'] or 'none'}; leading-zero UID in the log: "
            f"{'yes' if s['leading_zero_uid_in_log'] else 'no'}; forged log line: {'yes' if s['forged_log_line'] else 'no'}")


def markdown(data: dict) -> str:
    lines = [
        BEGIN,
        f"Measured by `benchmarks/hostile_peers.py` ({data['machine']}; load average {data['load_before']} before, "
        f"{data['load_after']} after; {data['orthanc_version']}, defaults but for ports and folders; the listener with its defaults "
        "and a one-hour quiet period). Results: `benchmarks/hostile_peers.json`. Reproduce:",
        "",
        "```",
        ".venv/bin/python -m benchmarks.hostile_peers",
        "```",
        "",
        "| hostile case | what Orthanc 1.10 does | what this listener does |",
        "|---|---|---|",
    ]
    for case in CASES:
        lines.append(f"| {case} | {describe(case, data['Orthanc'][case])} | {describe(case, data['listener'][case])} |")
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "hostile_peers.json")
    parser.add_argument("--client", choices=list(CASES), help=argparse.SUPPRESS)  # one case, inside the namespace
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ae", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(run_client(args.client, Scp(args.host, args.port, args.ae), args.work)))
        return 0
    if not LoopbackNamespace.available():
        print("error: needs `unshare --net` (root) to confine Orthanc and the peers to loopback", file=sys.stderr)
        return 2
    version = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    data: dict = {"machine": machine(), "orthanc_version": version, "load_before": " ".join(open("/proc/loadavg").read().split()[:3])}
    ns = LoopbackNamespace()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("Orthanc", "listener"):
                server = Server(name, ns, Path(tmp) / name)
                try:
                    data[name] = {}
                    for k, case in enumerate(CASES):
                        work = Path(tmp) / name / f"case{k}"
                        work.mkdir()
                        data[name][case] = measure(ns, server, case, work)
                finally:
                    server.stop()
    finally:
        ns.close()
    data["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    args.out.write_text(json.dumps(data, indent=2))
    section = markdown(data)
    write_section(section, BEGIN, END, DOC)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
