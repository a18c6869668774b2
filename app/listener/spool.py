"""The spool: received instances on disk, one folder per arrival (one study, until its quiet period passed).

Each instance is written atomically and fsync'd (``operators.atomic``) before the C-STORE is
acknowledged, as ``SPOOL/arrivals/<arrival id>/<SOP Instance UID>.dcm``; a retransmitted instance
replaces its earlier copy. Which study an arrival belongs to is kept in memory only (and re-read from
its files after a restart), so the journal holds no DICOM identifiers.

Once an arrival's SR is written its instances are kept in ``SPOOL/reported/<arrival id>/`` (until
``retention_days``), so that a later arrival of the same study can be run on the whole study and its
SR supersede the earlier one (``supersede``; the partial-study policy, ``docs/listener.md``).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread

from app.listener.instance_uids import Buffer
from app.listener.journal import Arrival, Journal, new_arrival_id
from app.listener.retention import folder_bytes, purge_older_than
from operators.atomic import fsync_folder, write_atomically

logger = logging.getLogger(__name__)

INSTANCE_SUFFIX = ".dcm"
#: statvfs at most this often, not for every C-STORE; the byte limit is tracked exactly.
FREE_SPACE_CHECK_INTERVAL_S = 0.5


@dataclass
class _Receiving:
    arrival: Arrival
    folder: Path
    last_instance: float  # time.monotonic() of the last stored instance
    quiet_period_s: float  # that of the calling AE title of the last stored instance
    writes_in_flight: int = 0
    #: SOP Instance UID -> bytes on disk, so a store needs no stat (a lookup that waits for the
    #: folder's lock while other writers create files) and completion no listing.
    instance_bytes: dict[str, int] = field(default_factory=dict)


class Spool:
    def __init__(self, root: Path, journal: Journal, quiet_period_s: float, max_bytes: int, min_free_bytes: int) -> None:
        self.root = Path(root)
        self.arrivals_dir = self.root / "arrivals"
        self.failed_dir = self.root / "failed"
        self.reported_dir = self.root / "reported"
        self.arrivals_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # the spooled instances hold PHI: only the listener's user may enter
        self.journal = journal
        self.quiet_period_s = quiet_period_s
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        #: Study Instance UID -> the arrival receiving it (memory only: UIDs are identifiers).
        self._receiving: dict[str, _Receiving] = {}
        #: Arrival id -> its Study Instance UID, until its instances are kept or removed (memory only).
        self._study_of: dict[str, str] = {}
        #: Study Instance UID -> the latest arrival of it whose SR was written and instances kept.
        self._reported: dict[str, Arrival] = {}
        self._used_bytes = folder_bytes(self.root)
        self._free_bytes, self._free_checked = 0, float("-inf")
        #: Called with each instance durably stored, its arrival's urgency and quiet period (the listener's prefetch).
        self.on_stored: Callable[[Path, bool, float], None] | None = None

    def folder(self, arrival_id: str) -> Path:
        return self.arrivals_dir / arrival_id

    def instances(self, arrival_id: str) -> list[Path]:
        return sorted(self.folder(arrival_id).glob("*" + INSTANCE_SUFFIX))

    def refusal(self, incoming_bytes: int = 0) -> str | None:
        """Why nothing more can be spooled now (disk limits), or None. The instances kept for later
        arrivals of reported studies give way first: the oldest are removed while a limit is in the way."""
        while True:
            why = self._limit_reached(incoming_bytes)
            if why is None or not self._remove_oldest_reported():
                return why

    def _limit_reached(self, incoming_bytes: int) -> str | None:
        if self._used_bytes + incoming_bytes > self.max_bytes:
            return f"spool limit reached ({self._used_bytes} of {self.max_bytes} bytes used)"
        if time.monotonic() - self._free_checked > FREE_SPACE_CHECK_INTERVAL_S:
            self._free_bytes, self._free_checked = shutil.disk_usage(self.root).free, time.monotonic()
        free = self._free_bytes
        if free - incoming_bytes < self.min_free_bytes:
            return f"disk nearly full ({free} bytes free, {self.min_free_bytes} required)"
        return None

    def store(self, study_uid: str, sop_instance_uid: str, encoded: Buffer | Sequence[Buffer], quiet_period_s: float | None = None,
              urgent: Callable[[], bool] | None = None) -> str:
        """Write one instance (DICOM File Format bytes, or its parts in order: written one after the other,
        never joined in memory) durably under its study's open arrival; returns the arrival id. The caller
        has checked that both UIDs are valid (they name files). ``quiet_period_s``: the sender's, if not
        the spool's; ``urgent``: asked only if this instance opens an arrival (the study's first instance
        decides whether it is urgent)."""
        parts = (encoded,) if isinstance(encoded, Buffer) else tuple(encoded)
        with self._lock:
            receiving = self._receiving.get(study_uid) or self._open(study_uid, urgent is not None and urgent())
            receiving.writes_in_flight += 1
            receiving.quiet_period_s = self.quiet_period_s if quiet_period_s is None else quiet_period_s
        stored = 0
        path = receiving.folder / (sop_instance_uid + INSTANCE_SUFFIX)
        try:
            write_atomically(path, lambda f: f.writelines(parts))
            stored = sum(memoryview(part).nbytes for part in parts)
        finally:
            with self._lock:
                receiving.writes_in_flight -= 1
                receiving.last_instance = time.monotonic()
                if stored:  # a retransmitted instance replaces its earlier copy
                    self._used_bytes += stored - receiving.instance_bytes.get(sop_instance_uid, 0)
                    receiving.instance_bytes[sop_instance_uid] = stored
        if self.on_stored is not None:
            self.on_stored(path, receiving.arrival.urgent, receiving.quiet_period_s)
        return receiving.arrival.id

    def _open(self, study_uid: str, urgent: bool) -> _Receiving:
        arrival = Arrival(new_arrival_id())
        self.journal.append(arrival, "opened", **({"urgent": True} if urgent else {}))
        receiving = _Receiving(arrival, self.folder(arrival.id), time.monotonic(), self.quiet_period_s)
        receiving.folder.mkdir()
        self._receiving[study_uid] = receiving
        self._study_of[arrival.id] = study_uid
        logger.info("Arrival %s opened%s", arrival.id, " (urgent)" if urgent else "")
        return receiving

    def resume(self, arrival: Arrival) -> bool:
        """After a restart: take back an arrival that was still receiving; its quiet period starts
        again now, so a sender that retries joins it. False if nothing readable of it reached the disk.
        A file that cannot be read is moved to ``SPOOL/failed/<id>/``: whatever the spool holds, the
        listener starts."""
        folder = self.folder(arrival.id)
        for leftover in folder.glob(".*"):  # temporary files of writes a crash interrupted (never acknowledged)
            leftover.unlink()
        study_uid = None
        for path in self.instances(arrival.id):
            try:
                study_uid = str(dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
                break
            except Exception as exc:  # pydicom raises many kinds for a corrupt file; one must not stop the start
                kept = self._quarantine_file(arrival.id, path)
                logger.warning("Arrival %s: a spooled instance cannot be read (%s); moved to %s",
                               arrival.id, type(exc).__name__, kept.parent)
        files = self.instances(arrival.id)
        if study_uid is None or not files:
            return False
        sizes = {p.name.removesuffix(INSTANCE_SUFFIX): p.stat().st_size for p in files}
        with self._lock:
            self._receiving[study_uid] = _Receiving(arrival, folder, time.monotonic(), self.quiet_period_s, instance_bytes=sizes)
            self._study_of[arrival.id] = study_uid
        return True

    def complete_quiet_arrivals(self) -> list[Arrival]:
        """Arrivals whose quiet period has passed with no write in flight: journalled ``completed``
        and closed, so a later instance of the same study opens a new arrival."""
        now = time.monotonic()
        with self._lock:
            quiet = [(uid, r) for uid, r in self._receiving.items()
                     if r.writes_in_flight == 0 and now - r.last_instance >= r.quiet_period_s]
            for uid, receiving in quiet:
                del self._receiving[uid]
                count = len(receiving.instance_bytes)
                self.journal.append(receiving.arrival, "completed", instances=count)
                logger.info("Arrival %s complete: %d instance(s), quiet for %.1f s", receiving.arrival.id, count, receiving.quiet_period_s)
        return [r.arrival for _, r in quiet]

    def remove(self, arrival_id: str) -> None:
        """Delete an arrival's instances. Idempotent."""
        folder = self.folder(arrival_id)
        self._study_of.pop(arrival_id, None)
        if folder.exists():
            size = folder_bytes(folder)
            shutil.rmtree(folder)
            with self._lock:
                self._used_bytes -= size

    def keep(self, arrival: Arrival) -> bool:
        """After the job of ``arrival`` wrote its SR: keep its instances in ``SPOOL/reported/<id>`` as the
        study's latest reported arrival, for ``supersede``. Idempotent (recovery calls it again); False
        if nothing of it is kept (a later arrival took its instances, or retention removed them)."""
        folder, kept = self.folder(arrival.id), self.reported_dir / arrival.id
        if folder.exists():
            self.reported_dir.mkdir(exist_ok=True)
            folder.rename(kept)
            fsync_folder(self.reported_dir)
        study_uid = self._study_of.pop(arrival.id, None)
        if not kept.exists() or not arrival.srs:
            return False
        study_uid = study_uid or _study_uid_in(kept)
        if study_uid is None:
            return False
        with self._lock:
            self._reported[study_uid] = arrival
        return True

    def supersede(self, arrival: Arrival) -> tuple[str, str] | None:
        """Before the job of ``arrival``: if an earlier arrival of its study was reported and its instances
        are kept, journal ``superseding`` and move those instances into this arrival (an instance received
        again stays as received now). Returns (earlier arrival id, its SR's file name), or None. A re-run
        job finishes a move a crash interrupted."""
        folder = self.folder(arrival.id)
        with self._lock:
            supersedes = arrival.supersedes
            if supersedes is None:
                study_uid = self._study_of.get(arrival.id) or _study_uid_in(folder)
                earlier = self._reported.get(study_uid) if study_uid else None
                if earlier is None or earlier.id == arrival.id:
                    return None
                supersedes = (earlier.id, earlier.srs[0])
                self.journal.append(arrival, "superseding", earlier=earlier.id, sr=earlier.srs[0])
            earlier_id = supersedes[0]
            kept = self.reported_dir / earlier_id
            if kept.exists():
                for path in kept.iterdir():
                    if (folder / path.name).exists():  # received again: this arrival's copy replaces it
                        self._used_bytes -= path.stat().st_size
                        path.unlink()
                    else:
                        path.rename(folder / path.name)
                fsync_folder(folder)
                kept.rmdir()
                fsync_folder(self.reported_dir)
            self._reported = {uid: a for uid, a in self._reported.items() if a.id != earlier_id}
            return supersedes

    def _remove_oldest_reported(self) -> bool:
        """Remove the kept instances of the earliest reported arrival (arrival ids sort by time); False if
        there are none."""
        with self._lock:
            kept = sorted(self.reported_dir.iterdir()) if self.reported_dir.is_dir() else []
            if not kept:
                return False
            freed = folder_bytes(kept[0])
            shutil.rmtree(kept[0])
            self._used_bytes -= freed
            self._free_checked = float("-inf")  # the disk has that much more free now
            self._reported = {uid: a for uid, a in self._reported.items() if a.id != kept[0].name}
        logger.info("Spool limits: removed the instances kept of arrival %s; a later arrival of its study gets an SR of its own",
                    kept[0].name)
        return True

    def reported_ids(self) -> set[str]:
        """The arrivals whose instances are kept for a later arrival of their study (their SRs are its predecessors)."""
        with self._lock:
            return {arrival.id for arrival in self._reported.values()}

    def purge_reported(self, max_age_s: float) -> None:
        """Remove kept instances older than ``max_age_s`` (``retention_days``): a later arrival of such a
        study gets an SR of its own."""
        with self._lock:
            _, freed = purge_older_than(self.reported_dir, max_age_s)
            self._used_bytes -= freed
            self._reported = {uid: a for uid, a in self._reported.items() if (self.reported_dir / a.id).exists()}

    def _quarantine_file(self, arrival_id: str, path: Path) -> Path:
        """Move one spooled file out of its arrival to ``SPOOL/failed/<id>/`` (kept for inspection)."""
        target = self.failed_dir / arrival_id / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        return target

    def purge_quarantined(self, max_age_s: float) -> None:
        """Remove quarantined arrivals older than ``max_age_s`` (``app/listener/retention.py``)."""
        _, freed = purge_older_than(self.failed_dir, max_age_s)
        with self._lock:
            self._used_bytes -= freed

    def quarantine(self, arrival_id: str) -> Path:
        """Move the instances of an arrival whose job failed for good to ``SPOOL/failed/<id>`` for
        inspection (they still count against the spool limit). Idempotent."""
        self._study_of.pop(arrival_id, None)
        target = self.failed_dir / arrival_id
        folder = self.folder(arrival_id)
        if not folder.exists():
            return target
        if target.exists():  # holds files recovery could not read: join them
            for path in folder.iterdir():
                self._quarantine_file(arrival_id, path)
            folder.rmdir()
        else:
            self.failed_dir.mkdir(exist_ok=True)
            folder.rename(target)
        return target


def _study_uid_in(folder: Path) -> str | None:
    """The Study Instance UID of the first readable instance in ``folder`` (all are of one study)."""
    for path in sorted(folder.glob("*" + INSTANCE_SUFFIX)):
        try:
            return str(dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
        except Exception:  # pydicom raises many kinds for a corrupt file: try the next one
            continue
    return None
