"""The listener's journal: an append-only, fsync'd JSON-lines log of each arrival's state changes.

An *arrival* is the set of instances of one study received until its quiet period passed; it is
processed exactly once. Replaying the journal after a crash (kill -9) tells what is left to do:

    opened [urgent] ─▶ completed ─▶ [superseding] ─▶ job_started … ─▶ job_finished ─▶ delivered (per SR)
       └─▶ discarded (nothing was spooled)                     └─▶ job_failed

``opened`` says ``urgent: true`` for a study the listener's ``urgent`` rule matched (``urgency.py``): its job
jumps the queue, after a restart too.
``superseding`` (the partial-study policy, ``docs/listener.md``): more of a study whose SR was already
written arrived; the earlier arrival's instances join this one and its SR names the earlier SR as
its predecessor. A processed arrival stays in the journal while its instances are kept for that
(``SPOOL/reported/<id>``).

The journal holds no patient data: arrivals are named by random ids, never by DICOM UIDs.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operators.atomic import write_atomically

logger = logging.getLogger(__name__)

RECEIVING, COMPLETE, PROCESSED, FAILED, DISCARDED = "receiving", "complete", "processed", "failed", "discarded"


def new_arrival_id() -> str:
    """Sortable by time, unique, and unrelated to any patient or study identifier."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


@dataclass
class Arrival:
    id: str
    state: str = RECEIVING
    instances: int = 0
    job_attempts: int = 0
    srs: tuple[str, ...] = ()
    delivered: set[str] = field(default_factory=set)
    #: The ``urgent`` rule matched its first instance: its job runs before routine ones.
    urgent: bool = False
    #: (earlier arrival id, its SR's file name) when this arrival supersedes an earlier one's SR.
    supersedes: tuple[str, str] | None = None
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def undelivered(self) -> list[str]:
        return [sr for sr in self.srs if sr not in self.delivered]

    @property
    def finished(self) -> bool:
        return self.state in (FAILED, DISCARDED) or (self.state == PROCESSED and not self.undelivered)

    def apply(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if event == "completed":
            self.state, self.instances = COMPLETE, record["instances"]
        elif event == "superseding":
            self.supersedes = (record["earlier"], record["sr"])
        elif event == "job_started":
            self.job_attempts = record["attempt"]
        elif event == "job_finished":
            self.state, self.srs = PROCESSED, tuple(record["srs"])
        elif event == "job_failed":
            self.state = FAILED
        elif event == "delivered":
            self.delivered.add(record["sr"])
        elif event == "discarded":
            self.state = DISCARDED
        elif event == "opened":
            self.urgent = bool(record.get("urgent", False))
        else:
            raise ValueError(f"unknown journal event {event!r}")
        self.records.append(record)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None

    def replay(self) -> dict[str, Arrival]:
        """Every arrival the journal knows, in order. A torn last line (a crash mid-append) was never
        acknowledged to anyone and is ignored."""
        arrivals: dict[str, Arrival] = {}
        if not self.path.exists():
            return arrivals
        lines = self.path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # the torn tail of an interrupted append
                    logger.warning("Journal %s: ignoring an incomplete last record", self.path.name)
                    continue
                raise ValueError(f"{self.path}: line {number} is not a journal record") from None
            arrivals.setdefault(record["arrival"], Arrival(record["arrival"])).apply(record)
        return arrivals

    def rewrite(self, arrivals: Iterable[Arrival]) -> None:
        """Compact: keep only the records of arrivals with work left, replacing the file atomically."""
        self.close()
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for a in arrivals for r in a.records)
        write_atomically(self.path, lambda f: f.write(text.encode()))

    def append(self, arrival: Arrival, event: str, **values: Any) -> None:
        """Durably record ``event`` (fsync'd before returning) and apply it to ``arrival``."""
        record = {"arrival": arrival.id, "event": event, "time": round(time.time(), 3), **values}
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, line)
            os.fsync(self._fd)
            arrival.apply(record)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
