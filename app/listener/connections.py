"""Connection admission, before any DICOM is read (issue 13 items 4-6, 11): pynetdicom's threaded
server, with limits that a peer which never sends an A-ASSOCIATE-RQ cannot exhaust.

- TCP connections, in all and per source address, are limited here (``max_connections``,
  ``max_connections_per_address``); one over a limit is closed at once, with a log line naming it.
  ``max_associations`` counts established associations only (``StorageSCP._admit``).
- Every accepted socket gets ``network_timeout_s`` as its read time-out: pynetdicom leaves accepted
  sockets blocking, so a peer that stops in the middle of a PDU would hold its thread for ever.
- A PDU longer than ``max_pdu_bytes`` (PS3.8 §9.3.1: the PDU length field) is refused before it is
  read: pynetdicom reads each PDU into memory whole.
- A data set growing past ``max_instance_bytes`` aborts the association as its fragments arrive
  (PS3.8 Annex E: the message control header's last-fragment bit): pynetdicom assembles each data set in
  memory before the C-STORE handler sees it.
- Peer addresses are normalised: with an IPv6 bind, IPv4 peers arrive as ``::ffff:a.b.c.d``
  (RFC 4291 §2.5.5.2) and are matched as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
import weakref
from collections import Counter
from typing import Any

from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)


def peer_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The peer's IP address, an IPv4-mapped IPv6 address as the IPv4 address."""
    parsed = ipaddress.ip_address(address.split("%")[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


class GuardedAssociationServer(ThreadedAssociationServer):
    """``ThreadedAssociationServer`` with connection limits and read time-outs (see the module)."""

    max_connections = 32
    max_connections_per_address = 8
    read_timeout_s = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: dict[socket.socket, str] = {}
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Called for each accepted connection before any byte of it is read; False closes it."""
        host = str(peer_address(client_address[0]))
        with self._open_lock:
            self._open = {s: h for s, h in self._open.items() if s.fileno() != -1}  # closed on any path
            per_address = Counter(self._open.values())
            if len(self._open) >= self.max_connections:
                refused = f"max_connections ({self.max_connections}) reached"
            elif per_address[host] >= self.max_connections_per_address:
                refused = f"max_connections_per_address ({self.max_connections_per_address}) reached"
            else:
                refused = ""
                self._open[request] = host
        if refused:
            logger.warning("Connection from %s closed: %s", host, refused)
            return False
        request.settimeout(self.read_timeout_s)
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)


def bound_pdu_length(max_pdu_bytes: int) -> Any:
    """EVT_CONN_OPEN handler: the association's socket refuses to read a PDU longer than
    ``max_pdu_bytes``; pynetdicom then closes the connection (Evt17)."""

    def handler(event: Event) -> None:
        association_socket = event.assoc.dul.socket
        if association_socket is None:
            return
        recv = association_socket.recv
        address = event.assoc.requestor.address

        def bounded_recv(nr_bytes: int) -> bytearray:
            if nr_bytes > max_pdu_bytes:
                logger.warning("Connection from %s closed: a PDU of %d bytes exceeds max_pdu_bytes (%d)",
                               peer_address(address), nr_bytes, max_pdu_bytes)
                raise ConnectionAbortedError("PDU longer than max_pdu_bytes")
            return recv(nr_bytes)

        association_socket.recv = bounded_recv  # type: ignore[method-assign]

    return handler


#: PS3.8 Annex E.2 message control header: bit 0 set for a command fragment, bit 1 for the last one.
COMMAND_FRAGMENT, LAST_FRAGMENT = 0x01, 0x02


def bound_instance_size(max_instance_bytes: int) -> Any:
    """EVT_PDU_RECV handler: an association whose data set grows past ``max_instance_bytes`` is aborted."""
    received: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def handler(event: Event) -> None:
        for item in getattr(event.pdu, "presentation_data_value_items", ()):  # P-DATA-TF only
            value = item.presentation_data_value or b"\x00"
            if value[0] & COMMAND_FRAGMENT:
                continue
            size = received.get(event.assoc, 0) + len(value) - 1
            if value[0] & LAST_FRAGMENT:
                size = 0
            elif size > max_instance_bytes:
                logger.warning("Association from %s aborted: a data set exceeds max_instance_bytes (%d)",
                               peer_address(event.assoc.requestor.address), max_instance_bytes)
                received.pop(event.assoc, None)
                event.assoc.abort()
                return
            received[event.assoc] = size

    return handler


def describe_uid(uid: str) -> str:
    """A SOP class for a log line: its name in PS3.6 Annex A, else the UID (a SOP class UID names a kind
    of object, no patient) with control characters escaped."""
    name = UID(uid).name
    return name if name != uid else repr(uid)


def log_silent_connections(association_request_timeout_s: float) -> list[EventHandlerType]:
    """EVT_CONN_OPEN/CLOSE handlers: one line when a connection is closed because it sent no
    A-ASSOCIATE-RQ within the ARTIM timer (not for one its peer closed at once, such as a TCP probe)."""
    opened: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def on_open(event: Event) -> None:
        opened[event.assoc] = time.monotonic()

    def on_close(event: Event) -> None:
        lasted = time.monotonic() - opened.pop(event.assoc, time.monotonic())
        if event.assoc.requestor.primitive is None and lasted >= association_request_timeout_s:
            logger.warning("Connection from %s closed: no A-ASSOCIATE-RQ within association_request_timeout_s (%g s)",
                           peer_address(event.assoc.requestor.address), association_request_timeout_s)

    return [(evt.EVT_CONN_OPEN, on_open), (evt.EVT_CONN_CLOSE, on_close)]
