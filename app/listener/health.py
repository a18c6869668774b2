"""A health check that costs no DICOM slot: ``GET /healthz`` over plain HTTP on its own port.

A Kubernetes ``tcpSocket`` probe or a C-ECHO takes a connection (and C-ECHO an association) of the
Storage SCP, which senders need; this endpoint is served by the listener process on a separate port
(``health_host``/``health_port``; loopback by default) and answers from the listener's own state:

- ``scp_accepting``: the Storage SCP's listening socket is open and its accept thread alive;
- ``spool_writable``: a file can be created (and is removed at once) in the spool folder;
- ``spool_within_limits``: the spool is under ``max_spool_bytes`` and its disk above ``min_free_bytes``
  (the same test that turns associations away, ``Spool.refusal``).

200 with ``{"status": "ok", …}`` when all hold, else 503 with ``"status": "unavailable"`` and the
failing checks; any other path is 404. The body names checks and limits, never a DICOM identifier.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.listener.scp import StorageSCP
from app.listener.spool import Spool

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
#: A client that connects and sends nothing is dropped after this long.
REQUEST_TIMEOUT_S = 5.0


def health(scp: StorageSCP, spool: Spool) -> dict[str, Any]:
    """The checks (see the module) and the overall status."""
    accepting = scp.accepting()
    try:
        with tempfile.TemporaryFile(dir=spool.root, prefix=".health-"):
            writable = True
    except OSError:
        writable = False
    refusal = spool.refusal()
    checks = {"scp_accepting": accepting, "spool_writable": writable, "spool_within_limits": refusal is None}
    result: dict[str, Any] = {"status": "ok" if all(checks.values()) else "unavailable", "checks": checks}
    if refusal:
        result["spool_limit"] = refusal
    return result


class HealthEndpoint:
    """``GET /healthz`` on ``host:port`` (0: a free port), in threads of the listener process."""

    def __init__(self, scp: StorageSCP, spool: Spool, host: str, port: int) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != HEALTH_PATH:
                    self._answer(404, {"status": "not found", "path": HEALTH_PATH})
                    return
                result = health(endpoint.scp, endpoint.spool)
                self._answer(200 if result["status"] == "ok" else 503, result)

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                encoded = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(encoded)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(encoded)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                """Probes come every few seconds: nothing logged per request."""

        self.scp, self.spool = scp, spool
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> int:
        threading.Thread(target=self.server.serve_forever, name="listener-health", daemon=True).start()
        return self.port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
