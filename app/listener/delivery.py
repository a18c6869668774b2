"""Result delivery: the SR is sent by C-STORE (PS3.4 Annex B) to the destination AE; a failed send is
retried with exponential back-off, for ever: a result is never dropped."""

from __future__ import annotations

import heapq
import itertools
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, evt

from app.listener.config import Destination, DestinationTlsSettings
from app.listener.journal import Arrival
from app.listener.tcp import LOW_LATENCY_HANDLER

#: PS3.4 Annex B.2.3: Success, and the Warning statuses under which the SCP has stored the instance.
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}


class DeliveryError(Exception):
    """The destination did not store the SR; the message says why (no patient data)."""


def client_tls_context(tls: DestinationTlsSettings) -> ssl.SSLContext:
    """Trusts only ``ca_certificates`` and checks that the destination's certificate names its host."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_certificates))
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # BCP 195, as PS3.15 Annex B's TLS profiles require
    if tls.certificate and tls.private_key:
        context.load_cert_chain(tls.certificate, tls.private_key)
    return context


def store_sr(path: Path, destination: Destination, calling_ae_title: str, timeout_s: float, tls: ssl.SSLContext | None = None) -> None:
    """One association (over TLS with ``tls``), one C-STORE of the SR file as it is on disk (its own
    transfer syntax)."""
    meta = dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    connected: list[bool] = []  # pynetdicom reports a refused TCP connection as an aborted association
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                         evt_handlers=[LOW_LATENCY_HANDLER, (evt.EVT_CONN_OPEN, lambda _: connected.append(True))],
                         tls_args=(tls, destination.host) if tls else None)
    if not assoc.is_established:
        if not connected:
            raise DeliveryError(f"no connection to {destination} (down or unreachable)")
        what = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        raise DeliveryError(f"association with {destination} {what}")
    try:
        if not assoc.accepted_contexts:
            raise DeliveryError(f"{destination} accepts no presentation context for the SR's SOP class")
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    if "Status" not in status:
        raise DeliveryError(f"no C-STORE response from {destination}")
    if status.Status not in STORED_STATUSES:
        raise DeliveryError(f"{destination} answered C-STORE status 0x{status.Status:04X}")


@dataclass(frozen=True)
class Backoff:
    initial_s: float
    max_s: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures: initial, doubled each time, capped."""
        return min(self.initial_s * 2 ** (failures - 1), self.max_s)


@dataclass(order=True)
class PendingDelivery:
    due: float
    order: int
    arrival: Arrival = field(compare=False)
    sr: Path = field(compare=False)
    failures: int = field(default=0, compare=False)


class DeliveryQueue:
    """SRs waiting to be sent, earliest due first, and those being sent (taken, not yet ``settled``)."""

    def __init__(self) -> None:
        self._heap: list[PendingDelivery] = []
        self._in_flight: dict[int, PendingDelivery] = {}
        self._ready = threading.Condition()
        self._order = itertools.count()

    def put(self, arrival: Arrival, sr: Path, delay_s: float = 0.0, failures: int = 0) -> None:
        with self._ready:
            heapq.heappush(self._heap, PendingDelivery(time.monotonic() + delay_s, next(self._order), arrival, sr, failures))
            self._ready.notify()

    def arrival_ids(self) -> set[str]:
        """The arrivals with an SR waiting or being sent (their output folders are in use)."""
        with self._ready:
            return {pending.arrival.id for pending in (*self._heap, *self._in_flight.values())}

    def settle(self, pending: PendingDelivery) -> None:
        """``pending`` was delivered, or put back for a retry: it is no longer in flight."""
        with self._ready:
            self._in_flight.pop(pending.order, None)

    def take_due(self, stop: threading.Event, poll_s: float = 0.5) -> PendingDelivery | None:
        """The next delivery whose time has come; None once ``stop`` is set."""
        with self._ready:
            while not stop.is_set():
                wait = self._heap[0].due - time.monotonic() if self._heap else poll_s
                if wait <= 0:
                    pending = heapq.heappop(self._heap)
                    self._in_flight[pending.order] = pending
                    return pending
                self._ready.wait(min(wait, poll_s))
        return None
