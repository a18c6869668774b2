"""The listener: Storage SCP → spool → quiet-period completion → one MAP job per arrival → SR delivery.

Every state change is journalled (fsync'd) before it is acted on, so after a crash ``recover()``
completes spooled arrivals, re-runs unfinished jobs and re-sends undelivered SRs. Each arrival is
processed once: only the SRs of the job run the journal records as finished are ever sent.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from app.listener.config import ListenerConfig
from app.listener.delivery import Backoff, DeliveryError, DeliveryQueue, PendingDelivery, client_tls_context, store_sr
from app.listener.health import HealthEndpoint
from app.listener.job_queue import JobQueue
from app.listener.jobs import MapJob
from app.listener.journal import COMPLETE, FAILED, PROCESSED, RECEIVING, Arrival, Journal
from app.listener.prefetch import EmbeddingPrefetch
from app.listener.retention import purge_older_than
from app.listener.scp import StorageSCP
from app.listener.spool import Spool
from operators.run_report import REPORT_NAME

logger = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
RETENTION_CHECK_INTERVAL_S = 3600.0


class Listener:
    def __init__(self, config: ListenerConfig) -> None:
        self.config = config
        self.destination = config.destination
        self.destination_tls = client_tls_context(config.destination_tls) if config.destination_tls else None
        self.journal = Journal(config.spool_dir / JOURNAL_NAME)
        self.spool = Spool(config.spool_dir, self.journal, config.quiet_period_s, config.max_spool_bytes, config.min_free_bytes)
        self.scp = StorageSCP(config, self.spool)
        self.job = MapJob(config.model_dir, config.output_dir, config.job_timeout_s, config.triton_server)
        self.prefetch = (EmbeddingPrefetch(config.model_dir, config.triton_server)
                         if config.triton_server and config.prefetch_embeddings else None)
        self.jobs = JobQueue()
        self.deliveries = DeliveryQueue()
        self.backoff = Backoff(config.delivery_initial_backoff_s, config.delivery_max_backoff_s)
        self.health: HealthEndpoint | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def recover(self) -> None:
        """Pick up what the journal says is unfinished, then compact the journal."""
        unfinished = []
        for arrival in self.journal.replay().values():
            kept = False
            if arrival.state == RECEIVING and not self.spool.resume(arrival):
                self.journal.append(arrival, "discarded")
                self.spool.remove(arrival.id)
            elif arrival.state == COMPLETE:
                self.jobs.put(arrival)
            elif arrival.state == FAILED:
                self.spool.quarantine(arrival.id)  # in case the crash came between job_failed and the move
            elif arrival.state == PROCESSED:
                # its instances kept for a later arrival of the study (again, if the crash came before)
                kept = self._keep_instances(arrival)
                for sr in arrival.undelivered:
                    self.deliveries.put(arrival, self.config.output_dir / arrival.id / sr)
            if not arrival.finished:
                logger.info("Recovered arrival %s (%s)", arrival.id, arrival.state)
            if not arrival.finished or kept:
                unfinished.append(arrival)  # the journal keeps what a later arrival of the study supersedes
        self.journal.rewrite(unfinished)
        self._purge(keep={a.id for a in unfinished})

    def _purge(self, keep: set[str]) -> None:
        """Retention (``app/listener/retention.py``): quarantined studies, kept instances of reported
        studies and results older than ``retention_days``, except the arrivals in ``keep`` (work left, an
        SR waiting) and the results whose instances are still kept (their SR is a predecessor)."""
        max_age_s = self.config.retention_days * 86400
        try:
            self.spool.purge_quarantined(max_age_s)
            self.spool.purge_reported(max_age_s)
            purge_older_than(self.config.output_dir, max_age_s, keep | self.spool.reported_ids())
        except OSError as exc:
            logger.error("Retention: cannot remove old folders (%s)", exc.strerror)

    def start(self) -> int:
        """Recover, then listen; returns the bound port."""
        self.start_workers()
        port = self.scp.start()
        logger.info("Listening as %s on %s:%d%s; results go to %s%s", self.config.ae_title, self.config.bind_host, port,
                    " (TLS)" if self.config.tls else "", self.destination, " (TLS)" if self.destination_tls else "")
        if self.config.health_port is not None:
            self.health = HealthEndpoint(self.scp, self.spool, self.config.health_host, self.config.health_port)
            logger.info("Health check: http://%s:%d/healthz", self.config.health_host, self.health.start())
        return port

    def start_workers(self) -> None:
        """Recover, then start the completion, job and delivery workers; what feeds the spool is the
        caller's (the Storage SCP here, STOW-RS in ``app.web.ingest``)."""
        self.config.output_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.config.output_dir, 0o700)  # SRs and run reports hold PHI: only the listener's user may enter
        self.job.start()
        if self.prefetch is not None:
            self.prefetch.start()
            self.spool.on_stored = self.prefetch.offer
        self.recover()
        workers: list[tuple[str, Callable[[], None]]] = [("completion", self._completion_loop), ("delivery", self._delivery_loop)]
        workers += [("job", self._job_loop)] * self.config.concurrent_jobs
        if self.config.triton_server:  # the urgent lane: an urgent study never waits for a routine job to end
            workers.append(("urgent-job", partial(self._job_loop, urgent_only=True)))
        for number, (name, target) in enumerate(workers):
            thread = threading.Thread(target=target, name=f"listener-{name}-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop accepting associations and stop the workers. A running job is killed with the process and
        re-run at the next start (the journal shows it unfinished)."""
        self.scp.stop()
        if self.health is not None:
            self.health.stop()
        self._stop.set()
        if self.prefetch is not None:
            self.prefetch.stop()
        self.journal.close()

    def _completion_loop(self) -> None:
        tick = min(0.25, self.config.quiet_period_s / 4, *(q / 4 for q in self.config.quiet_period_by_calling_ae.values()))
        purged = time.monotonic()
        while not self._stop.wait(tick):
            if time.monotonic() - purged > RETENTION_CHECK_INTERVAL_S:
                purged = time.monotonic()
                self._purge(keep=self.deliveries.arrival_ids())
            try:
                completed = self.spool.complete_quiet_arrivals()
            except OSError as exc:  # e.g. the journal's disk is full: try again at the next tick
                logger.error("Cannot complete arrivals: %s", exc.strerror)
                continue
            for arrival in completed:
                self.jobs.put(arrival)

    def _job_loop(self, urgent_only: bool = False) -> None:
        while not self._stop.is_set():
            try:
                arrival = self.jobs.get(timeout=0.5, urgent_only=urgent_only)
            except queue.Empty:
                continue
            try:
                self._process(arrival)
            except OSError as exc:  # the job could not be set up (disk full, permissions): it stays unfinished
                delay = self.backoff.max_s
                logger.error("Arrival %s: job could not run (%s); retrying in %.0f s", arrival.id, exc.strerror, delay)
                threading.Timer(delay, self.jobs.put, args=(arrival,)).start()

    def _process(self, arrival: Arrival) -> None:
        predecessor = self._predecessor(arrival)
        attempt = arrival.job_attempts + 1
        self.journal.append(arrival, "job_started", attempt=attempt)
        logger.info("Arrival %s: job attempt %d on %d instance(s)%s", arrival.id, attempt, len(self.spool.instances(arrival.id)),
                    " (urgent)" if arrival.urgent else "")
        started = time.monotonic()
        outcome = self.job.run(arrival.id, self.spool.folder(arrival.id), predecessor, arrival.urgent)
        took = time.monotonic() - started
        if outcome.succeeded:
            self.journal.append(arrival, "job_finished", srs=list(outcome.srs), seconds=round(took, 3),
                                exit_code=outcome.exit_code, refused=outcome.refused)
            refused = f"; {outcome.refused} file(s) refused, reasons in {REPORT_NAME}" if outcome.refused else ""
            logger.info("Arrival %s: %d SR(s) written in %.1f s to %s%s", arrival.id, len(outcome.srs), took, outcome.output, refused)
            for sr in outcome.srs:
                self.deliveries.put(arrival, outcome.output / sr)
            self._keep_instances(arrival)
        elif outcome.retryable and attempt < self.config.job_max_attempts:
            delay = self.backoff.delay(attempt)
            logger.warning("Arrival %s: job attempt %d failed (exit code %s); retrying in %.0f s",
                           arrival.id, attempt, outcome.exit_code, delay)
            threading.Timer(delay, self.jobs.put, args=(arrival,)).start()
        else:
            why = " (nothing usable in the study)" if not outcome.retryable else f" after {attempt} attempt(s)"
            reason = f"exit code {outcome.exit_code}{why}"
            self.journal.append(arrival, "job_failed", exit_code=outcome.exit_code, reason=reason)
            kept = self.spool.quarantine(arrival.id)
            logger.error("Arrival %s: no SR, %s; see %s; instances kept in %s", arrival.id, reason, outcome.output, kept)

    def _predecessor(self, arrival: Arrival) -> Path | None:
        """The partial-study policy (``docs/listener.md``): if the study of ``arrival`` was reported before,
        the earlier arrival's instances join it and the earlier SR is the one its SR supersedes."""
        supersedes = self.spool.supersede(arrival)
        if supersedes is None:
            return None
        earlier, sr = supersedes
        path = self.config.output_dir / earlier / sr
        if not path.exists():  # removed by hand: the whole study is still run, its SR stands alone
            logger.warning("Arrival %s: supersedes arrival %s, whose SR is no longer in %s; the new SR will not reference it",
                           arrival.id, earlier, self.config.output_dir)
            return None
        logger.info("Arrival %s: more of the study of arrival %s; the whole study is run again and its SR supersedes that arrival's",
                    arrival.id, earlier)  # not the SR's file name: it is the SR's SOP Instance UID
        return path

    def _keep_instances(self, arrival: Arrival) -> bool:
        """``Spool.keep``; a failure costs only the link to a later arrival of the study, never the SR."""
        try:
            return self.spool.keep(arrival)
        except OSError as exc:
            logger.error("Arrival %s: its instances cannot be kept for a later arrival of the study (%s)", arrival.id, exc.strerror)
            return False

    def _delivery_loop(self) -> None:
        while True:
            pending = self.deliveries.take_due(self._stop)
            if pending is None:
                return
            try:
                self._deliver(pending)
            finally:  # only now may retention remove its output folder (unless it was put back for a retry)
                self.deliveries.settle(pending)

    def _deliver(self, pending: PendingDelivery) -> None:
        arrival = pending.arrival
        try:
            store_sr(pending.sr, self.destination, self.config.ae_title, self.config.network_timeout_s, self.destination_tls)
        except Exception as exc:  # whatever failed, the SR stays queued: it is never dropped
            failures = pending.failures + 1
            delay = self.backoff.delay(failures)
            # Only our own messages are shown: an OSError's or pydicom's text may hold a file name (a UID).
            why = str(exc) if isinstance(exc, DeliveryError) else exc.strerror if isinstance(exc, OSError) else type(exc).__name__
            logger.warning("Arrival %s: SR delivery failed (%s); attempt %d, retrying in %.0f s", arrival.id, why, failures, delay)
            self.deliveries.put(arrival, pending.sr, delay, failures)
            return
        self.journal.append(arrival, "delivered", sr=pending.sr.name, destination=str(self.destination))
        logger.info("Arrival %s: SR delivered to %s", arrival.id, self.destination)
