"""One ``tritonserver`` process on loopback serving a model package's repository: started, waited for
until ``/v2/health/ready`` answers 200, and stopped with SIGTERM (Triton then finishes the requests in
flight, up to ``--exit-timeout-secs``).

Only the models the server can load are loaded (``--model-control-mode=explicit``): the pytriton wheel
has the Python backend only, and a TensorRT plan exists only once built on the target GPU. HTTP, gRPC and
Prometheus metrics (off unless given a port) listen on 127.0.0.1 only.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from app.inference_server.distribution import Distribution
from operators.inference.triton_repository import REPOSITORY, loadable_models

LOOPBACK = "127.0.0.1"
EXIT_TIMEOUT_S = 30


class ServerError(RuntimeError):
    """The server could not be started or did not become ready; one line, naming the package or port."""


@dataclass(frozen=True)
class ServerOptions:
    package: Path  # the model package folder (holding ``triton/``)
    http_port: int
    grpc_port: int | None = None
    metrics_port: int | None = None

    def repository(self) -> Path:
        return self.package / REPOSITORY


def command(dist: Distribution, options: ServerOptions, models: list[str]) -> list[str]:
    grpc = [f"--grpc-address={LOOPBACK}", f"--grpc-port={options.grpc_port}"] if options.grpc_port else ["--allow-grpc=false"]
    metrics = ([f"--metrics-address={LOOPBACK}", f"--metrics-port={options.metrics_port}"] if options.metrics_port
               else ["--allow-metrics=false"])
    return [
        str(dist.binary), f"--model-repository={options.repository()}", f"--backend-directory={dist.backends}",
        "--model-control-mode=explicit", *(f"--load-model={name}" for name in models),
        f"--http-address={LOOPBACK}", f"--http-port={options.http_port}", *grpc, *metrics,
        "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
    ]


def ready(http_port: int, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{http_port}/v2/health/ready", timeout=timeout_s) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class TritonServer:
    def __init__(self, dist: Distribution, options: ServerOptions, env: dict[str, str]) -> None:
        repository = options.repository()
        if not repository.is_dir():
            raise ServerError(f"{options.package}: no Triton model repository ({REPOSITORY}/); "
                              "rebuild the package with scripts/build_model.py")
        self.models = loadable_models(repository, dist.backend_names(), dist.cuda)
        if not self.models:
            raise ServerError(f"{repository}: no model this server can load (its backends: {', '.join(sorted(dist.backend_names()))})")
        self.options = options
        self.process = subprocess.Popen(command(dist, options, self.models), env={**env, **dist.env})

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready(self.options.http_port):
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with status {self.process.returncode} before it was ready (its log is above)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"tritonserver not ready on {LOOPBACK}:{self.options.http_port} after {timeout_s:.0f} s")
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM, then wait; SIGKILL only if it outlives its own exit timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(EXIT_TIMEOUT_S + 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
