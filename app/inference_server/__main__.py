"""``python -m app.inference_server -m MODEL_DIR --http-port N [--grpc-port M] [--metrics-port P]``: Triton Inference Server
on 127.0.0.1 with the model package's repository; prints one ``ready:`` line once ``/v2/health/ready``
answers, runs until SIGTERM or SIGINT, then stops the server cleanly. Exit 2 with one ``error:`` line when
it cannot start (no server, no repository, a port in use, a model that fails to load).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from app.exit_codes import ExitCode
from app.inference_server import distribution
from app.inference_server.server import LOOPBACK, ServerError, ServerOptions, TritonServer
from operators.inference.model_package import ModelPackageError, find_package_dir


def _port(value: str) -> int:
    port = int(value) if value.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return port


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.inference_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", required=True, type=Path, metavar="MODEL_DIR", help="the model package (scripts/build_model.py)")
    p.add_argument("--http-port", required=True, type=_port, help="HTTP/REST port (the app's -t 127.0.0.1:PORT)")
    p.add_argument("--grpc-port", type=_port, help="gRPC port (default: gRPC off)")
    p.add_argument("--metrics-port", type=_port, help="Prometheus metrics port, /metrics (default: metrics off)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for the server to be ready (default 120)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with tempfile.TemporaryDirectory(prefix="tritonserver-") as workdir:
        try:
            package = find_package_dir(args.model)
            options = ServerOptions(package, args.http_port, args.grpc_port, args.metrics_port)
            server = TritonServer(distribution.find(Path(workdir)), options, dict(os.environ))
            server.wait_ready(args.ready_timeout)
        except (ModelPackageError, ServerError, distribution.ServerNotFound) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return ExitCode.ALL_FAILED
        print(f"ready: http://{LOOPBACK}:{args.http_port} models {', '.join(server.models)}", flush=True)
        while not stopping and server.process.poll() is None:
            time.sleep(0.2)
        if not stopping:
            print(f"error: tritonserver exited with status {server.process.returncode}", file=sys.stderr)
            return ExitCode.ALL_FAILED
        status = server.stop()
        print(f"stopped: tritonserver exit status {status}", flush=True)
        return 0 if status == 0 else ExitCode.ALL_FAILED


if __name__ == "__main__":
    sys.exit(main())
