"""The listener on loopback for the Triton tests and ``benchmarks/triton_listener.py``: ``python -m app.listener``
bound to 127.0.0.1 (a free port) where a Triton server on loopback can serve its jobs, a pynetdicom Storage SCP
on 127.0.0.1 playing the PACS, and a pynetdicom sender. Every peer binds 127.0.0.1 only, so none needs the
network namespace of ``listener_peers`` (whose dcmtk and Orthanc peers listen on every interface)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import Comprehensive3DSRStorage
from pynetdicom import AE, evt

from operators.run_report import REPORT_NAME
from tests.support.listener_peers import wait_for

ROOT = Path(__file__).resolve().parents[2]
LISTENER_AE, SENDER_AE, PACS_AE = "BIOMEDCLIP", "STORESCU", "PACS"


class LoopbackPacs:
    """A pynetdicom Storage SCP on loopback noting when each SR arrives, by Study Instance UID."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.order: list[str] = []
        self.received: dict[str, pydicom.Dataset] = {}
        self._lock = threading.Lock()
        ae = AE(PACS_AE)
        ae.add_supported_context(Comprehensive3DSRStorage)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = int(self.server.server_address[1])

    def _store(self, event: evt.Event) -> int:
        study = str(event.dataset.StudyInstanceUID)
        with self._lock:
            self.arrived[study] = time.perf_counter()
            self.received[study] = event.dataset
            self.order.append(study)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@dataclass
class LoopbackListener:
    """``python -m app.listener`` with its own spool and output, on a free loopback port."""

    folder: Path
    settings: dict
    env: dict[str, str]
    process: subprocess.Popen | None = field(default=None, init=False)
    port: int = field(default=0, init=False)

    def start(self) -> LoopbackListener:
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
