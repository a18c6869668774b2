"""TCP_NODELAY for every association: pynetdicom leaves Nagle's algorithm on, which stalls each
C-STORE request/response exchange by ~40 ms (delayed ACK) even on loopback."""

from __future__ import annotations

import socket

from pynetdicom import evt
from pynetdicom.events import Event


def disable_nagle(event: Event) -> None:
    """EVT_CONN_OPEN handler, for acceptor and requestor sockets alike."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLER = (evt.EVT_CONN_OPEN, disable_nagle)
