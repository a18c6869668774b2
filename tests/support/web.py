"""The web server for tests: a config with one bearer token, an in-process client that waits until
the server is ready, and a live uvicorn on a loopback port (a real socket, for real HTTP clients)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.web.config import Token, WebConfig

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def web_config(state: Path, model_dir: Path, **overrides: object) -> WebConfig:
    values: dict[str, object] = {"model_dir": model_dir, "state_dir": state, "tokens": (Token("tester", TOKEN.encode()),),
                                 "demo": False, "stow_quiet_period_s": 0.5, **overrides}
    return WebConfig(**values)  # type: ignore[arg-type]


def wait_ready(get, timeout_s: float = 120) -> None:  # noqa: ANN001 - TestClient.get or httpx.get
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the server was not ready within {timeout_s:.0f} s: {get('/readyz').text}")


@contextmanager
def ready_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get)
        yield client


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """``app`` on uvicorn at ``http://127.0.0.1:PORT`` (a thread of this process), until the block ends."""
    import httpx

    port = free_loopback_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.05)
        wait_ready(lambda path: httpx.get(base + path, timeout=10))
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
