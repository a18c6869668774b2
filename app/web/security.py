"""The guard in front of every request: bearer tokens, body-size limits and the audit log.

- Bearer tokens (RFC 6750) are compared with ``hmac.compare_digest`` against every configured token
  (no early exit), so neither which token nor how much of it matched shows in the timing. Required on
  everything but the health probes (``OPEN_PATHS``), the demo and the metrics included.
- Body limits: a declared ``Content-Length`` over the route's limit is answered 413 before anything is
  read; a body sent without one (chunked) is counted while it is read and cut off at the limit.
- Audit log (logger ``app.web.audit``): who (the token's name), what (method and route template, never
  the path itself: DICOMweb paths hold Study/Series/SOP Instance UIDs), when (the record's time),
  outcome (status) and duration.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.web.config import WebConfig
from app.web.problems import problem_response

audit = logging.getLogger("app.web.audit")

#: Kubernetes probes: answered without a token (they say nothing about patients or the model's output).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Mounted sub-applications, named by their prefix in the audit log.
MOUNTS = ("/demo",)


class BodyTooLarge(Exception):
    pass


def route_template(scope: Scope) -> str:
    """The matched route's template (``/dicomweb/studies/{study}/…``): loggable, unlike the path."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "(route)"))
    path = str(scope.get("path", ""))
    if path in OPEN_PATHS or path == "/metrics":
        return path
    return next((m for m in MOUNTS if path == m or path.startswith(m + "/")), "(no route)")


class Guard:
    def __init__(self, app: ASGIApp, config: WebConfig, body_limit: Callable[[str], int],
                 observe: Callable[[str, str, int, float], None]) -> None:
        self.app, self.config, self.body_limit, self.observe = app, config, body_limit, observe

    def authenticate(self, scope: Scope) -> str | None:
        """The name of the token the request bears, or None."""
        header = dict(scope.get("headers", ())).get(b"authorization", b"")
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not presented:
            return None
        name = None
        for token in self.config.tokens:  # all compared, whatever matched earlier
            if hmac.compare_digest(presented.strip(), token.secret):
                name = token.name
        return name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, outcome = time.perf_counter(), {"status": 500, "sent": False, "answered": False}

        async def send_observed(message: Message) -> None:
            if outcome["answered"]:
                return  # the guard has answered (413 mid-body): what the endpoint sends after that is dropped
            if message["type"] == "http.response.start":
                outcome["status"], outcome["sent"] = message["status"], True
            await send(message)

        async def answer(status: int, detail: str, headers: dict[str, str] | None = None) -> None:
            if not outcome["sent"]:
                await problem_response(status, detail, headers)(scope, receive, send_observed)
            outcome["answered"] = True

        who = "-"
        try:
            if self.config.require_auth and scope["path"] not in OPEN_PATHS:
                who = self.authenticate(scope) or "-"
                if who == "-":
                    await answer(401, "a valid bearer token is required (Authorization: Bearer <token>)",
                                 {"WWW-Authenticate": 'Bearer realm="biomedclip"'})
                    return
            limit = self.body_limit(scope["path"])
            too_large = f"request body over the limit of {limit} bytes for this endpoint"
            declared = dict(scope.get("headers", ())).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                await answer(413, too_large)
                return

            async def over_limit() -> None:
                await answer(413, too_large)
                raise BodyTooLarge()

            await self.app(scope, _counting(receive, limit, over_limit), send_observed)
        except Exception:
            if not outcome["answered"]:  # else it is the endpoint failing on the body the guard cut off
                raise
        finally:
            took = time.perf_counter() - started
            route = route_template(scope)
            audit.info("who=%s what=%r outcome=%d seconds=%.3f", who, f"{scope['method']} {route}", outcome["status"], took)
            self.observe(scope["method"], route, int(outcome["status"]), took)


def _counting(receive: Receive, limit: int, over_limit: Callable[[], Awaitable[None]]) -> Receive:
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                await over_limit()
        return message

    return counted
