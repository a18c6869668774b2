"""``python -m app.inference_server`` for the tests: started on a free loopback port, waited for, stopped
with SIGTERM; and the reading of an SR's content tree that the Triton tests compare."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom

from operators.inference.triton_repository import CACHE_METRICS

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 300  # the Python model loads the ONNX graph on a shared 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path
    metrics_port: int | None = None

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tritonserver_pid(self) -> int:
        """The tritonserver child of ``python -m app.inference_server``."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        (pid,) = (int(c) for c in children if Path(f"/proc/{c}/exe").resolve().name == "tritonserver")
        return pid

    def embedding_cache(self) -> dict[str, tuple[int, int]]:
        """Model -> (images answered from its embedding cache, images it computed), from the server's Prometheus
        metrics (``metrics=True``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        counts: dict[str, list[int]] = {}
        for name, model, value in re.findall(r'^(biomedclip_embedding_cache_(?:hits|misses))\{model="([^"]+)"[^}]*\} (\S+)$', text, re.M):
            counts.setdefault(model, [0, 0])[CACHE_METRICS.index(name)] = int(float(value))
        return {model: (hits, misses) for model, (hits, misses) in counts.items()}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@contextmanager
def inference_server(package: Path, log: Path, metrics: bool = False) -> Iterator[Server]:
    """The server on a free port, ready, with its Prometheus metrics on another where ``metrics``; stopped (SIGTERM) on exit."""
    port, metrics_port = free_port(), free_port() if metrics else None
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "app.inference_server", "-m", str(package), "--http-port", str(port),
                                    *(["--metrics-port", str(metrics_port)] if metrics_port else [])],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    server = Server(process, port, log, metrics_port)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ready: " not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def sr_content(path: Path) -> list[tuple]:
    """The SR's content tree as (depth, value type, concept, value), without what differs between two runs
    by design: the Tracking Unique Identifiers (new per run) and the backend parameter."""
    rows: list[tuple] = []

    def walk(items: pydicom.Sequence, depth: int) -> None:
        for item in items:
            concept = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            value: object = None
            if item.ValueType == "TEXT":
                value = item.TextValue
            elif item.ValueType == "CODE":
                value = item.ConceptCodeSequence[0].CodeValue
            elif item.ValueType == "NUM":
                value = round(float(item.MeasuredValueSequence[0].NumericValue), 4)
            elif item.ValueType == "UIDREF":
                value = item.UID
            if concept != "Tracking Unique Identifier" and not str(value).startswith("backend="):
                rows.append((depth, item.ValueType, concept, value))
            walk(item.get("ContentSequence", []), depth + 1)

    walk(pydicom.dcmread(path).ContentSequence, 0)
    return rows


def algorithm_parameters(path: Path) -> list[str]:
    found: list[str] = []

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            if "ConceptNameCodeSequence" in item and item.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Parameters":
                found.append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(pydicom.dcmread(path).ContentSequence)
    return found
