"""Closed-loop load on a Triton model over HTTP/REST: N clients, each sending batches of B images and waiting
for the answer before sending the next (as N app instances would). Standard library and numpy only, so that
it runs where tritonclient is not installed (the lent GPU machine). Tensors travel as Triton's binary
extension, or, with ``--shm``, through POSIX shared memory registered with the server (client and server on
one host: no tensor bytes on the socket)."""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import threading
import time
import uuid
from multiprocessing import shared_memory
from typing import Any

import numpy as np

IMAGE = (3, 224, 224)
WIRE_TYPES = {"FP32": np.float32, "FP16": np.float16}


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
    return data


def _client(url: str, model: str, inputs: str, outputs: str, batch: int, seconds: float, use_shm: bool,
            start_at: float, latencies: list[float]) -> None:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.connect()
    conn.sock.setsockopt(6, 1, 1)  # TCP_NODELAY: Nagle would add ~40 ms per request on loopback
    # the input's type as the model declares it (the PyTorch GPU model takes FP16: triton_repository.INPUT_TYPE)
    datatype = next(i["datatype"] for i in json.loads(_request(conn, "GET", f"/v2/models/{model}"))["inputs"] if i["name"] == inputs)
    pixels = np.random.default_rng(batch).standard_normal((batch, *IMAGE)).astype(WIRE_TYPES[datatype])
    region = None
    parameters: dict[str, Any] = {"binary_data_size": pixels.nbytes}
    if use_shm:
        region = shared_memory.SharedMemory(create=True, size=pixels.nbytes, name=f"tl{uuid.uuid4().hex[:12]}")
        np.ndarray(pixels.shape, pixels.dtype, buffer=region.buf)[:] = pixels
        name = region.name
        _request(conn, "POST", f"/v2/systemsharedmemory/region/{name}/register",
                 json.dumps({"key": f"/{name}", "offset": 0, "byte_size": pixels.nbytes}).encode())
        parameters = {"shared_memory_region": name, "shared_memory_byte_size": pixels.nbytes}
    header = json.dumps({"inputs": [{"name": inputs, "shape": list(pixels.shape), "datatype": datatype, "parameters": parameters}],
                         "outputs": [{"name": outputs, "parameters": {"binary_data": True}}]}).encode()
    body = header if use_shm else header + pixels.tobytes()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    path = f"/v2/models/{model}/infer"
    while time.perf_counter() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    try:
        while True:
            began = time.perf_counter()
            if began >= end:
                break
            _request(conn, "POST", path, body, headers)
            latencies.append(time.perf_counter() - began)
    finally:
        if region is not None:
            _request(conn, "POST", f"/v2/systemsharedmemory/region/{region.name}/unregister")
            region.close()
            region.unlink()
        conn.close()


def _process(args: tuple[Any, ...]) -> list[float]:
    url, model, inputs, outputs, batch, seconds, use_shm, start_at, clients = args
    latencies: list[float] = []
    threads = [threading.Thread(target=_client, args=(url, model, inputs, outputs, batch, seconds, use_shm, start_at, latencies))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def _stats(url: str, model: str) -> tuple[int, int]:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    stats = json.loads(_request(conn, "GET", f"/v2/models/{model}/stats"))["model_stats"][0]
    conn.close()
    return int(stats["inference_count"]), int(stats["execution_count"])


def run(url: str, model: str, inputs: str, outputs: str, concurrency: int, batch: int, seconds: float, use_shm: bool,
        processes: int) -> dict[str, Any]:
    """One closed-loop measurement: images/s, request latency percentiles, the server's mean batch size."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    before = _stats(url, model)
    start_at = time.perf_counter() + 2.0  # every client connected (and its region registered) before the clock starts
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.map(_process, [(url, model, inputs, outputs, batch, seconds, use_shm, start_at, n) for n in shares])
    after = _stats(url, model)
    latencies = sorted(x for part in parts for x in part)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    return {
        "concurrency": concurrency, "batch": batch, "transport": "system shared memory" if use_shm else "HTTP binary",
        "seconds": seconds, "requests": len(latencies), "images_per_s": len(latencies) * batch / seconds,
        "latency_ms_p50": 1000 * statistics.median(latencies),
        "latency_ms_p95": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "server_mean_batch": inferences / executions if executions else None,
    }


def main() -> None:
    """Stand-alone use against any server: ``python -m benchmarks.triton_load --model NAME --out rows.json``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="127.0.0.1:8000")
    p.add_argument("--model", required=True)
    p.add_argument("--input", default="pixel_values")
    p.add_argument("--output", default="image_features")
    p.add_argument("--concurrency", default="16,32,64")
    p.add_argument("--batch", default="1,4,8")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--shm", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = []
    for concurrency in map(int, args.concurrency.split(",")):
        for batch in map(int, args.batch.split(",")):
            row = run(args.url, args.model, args.input, args.output, concurrency, batch, args.seconds, args.shm, args.processes)
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(args.out, "w") as fp:
        json.dump(rows, fp, indent=1)


if __name__ == "__main__":
    main()
