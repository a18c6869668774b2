"""Closed-loop load on a Triton model over HTTP/REST: N clients, each sending batches of B images and waiting
for the answer before sending the next (as N app instances would). Standard library and numpy only, so that
it runs where tritonclient is not installed (the lent GPU machine; CUDA shared memory needs torch). Tensors
travel as Triton's binary extension (``http``), or, client and server on one host, with no tensor bytes on the
socket: through POSIX shared memory registered with the server (``shm``), or through CUDA shared memory
(``cuda``: the input already on the GPU, as a client that decoded or preprocessed it there would hold it)."""

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
TRANSPORTS = {"http": "HTTP binary", "shm": "system shared memory", "cuda": "CUDA shared memory"}
#: Triton's phases of one execution (its batch statistics): the inputs copied to the backend, the backend's execute
#: (for the Python backend: the stub's whole turn), the outputs back.
PHASES = ("compute_input", "compute_infer", "compute_output")
IPC_HANDLE_SIZE = 64  # sizeof(cudaIpcMemHandle_t)


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
    return data


def _connect(url: str, timeout: float) -> http.client.HTTPConnection:
    host, port = url.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def input_datatype(url: str, model: str, inputs: str) -> str:
    """The input's type as the model declares it (the PyTorch GPU model takes FP16: triton_repository.INPUT_TYPE)."""
    conn = _connect(url, 30)
    try:
        return str(next(i["datatype"] for i in json.loads(_request(conn, "GET", f"/v2/models/{model}"))["inputs"] if i["name"] == inputs))
    finally:
        conn.close()


class CudaRegion:
    """Arrays copied one after another into one GPU buffer (device 0), registered with the server as one CUDA shared
    memory region; ``offsets[i]`` is where array i begins in it (the region starts where its allocation does)."""

    def __init__(self, url: str, arrays: list[np.ndarray]) -> None:
        import base64

        import torch

        self.url, self.name = url, f"tc{uuid.uuid4().hex[:12]}"
        data = np.concatenate([a.reshape(-1).view(np.uint8) for a in arrays])
        self.buffer = torch.from_numpy(data).to("cuda:0")
        torch.cuda.synchronize()
        _device, handle, _size, base, *_ = self.buffer.untyped_storage()._share_cuda_()
        if len(handle) != IPC_HANDLE_SIZE:  # torch's: a version byte, b"c" (a cudaMalloc block), the CUDA handle
            if handle[1:2] != b"c":
                raise RuntimeError("the GPU buffer is not a cudaMalloc block (PYTORCH_CUDA_ALLOC_CONF expandable_segments?)")
            handle = handle[2:2 + IPC_HANDLE_SIZE]
        self.offsets = list(base + np.cumsum([0, *(a.nbytes for a in arrays[:-1])]))
        conn = _connect(url, 60)
        _request(conn, "POST", f"/v2/cudasharedmemory/region/{self.name}/register", json.dumps(
            {"raw_handle": {"b64": base64.b64encode(handle).decode()}, "device_id": 0, "byte_size": base + data.nbytes}).encode())
        conn.close()

    def close(self) -> None:
        conn = _connect(self.url, 60)
        _request(conn, "POST", f"/v2/cudasharedmemory/region/{self.name}/unregister")
        conn.close()
        del self.buffer


def _client(url: str, model: str, inputs: str, outputs: str, batch: int, datatype: str, seconds: float, transport: str,
            cuda_region: tuple[str, int] | None, start_at: float, latencies: list[float]) -> None:
    conn = _connect(url, 120)
    conn.connect()
    conn.sock.setsockopt(6, 1, 1)  # TCP_NODELAY: Nagle would add ~40 ms per request on loopback
    pixels = client_pixels(batch, datatype)
    region = None
    parameters = _parameters(pixels, cuda_region)
    if transport == "shm":
        region = shared_memory.SharedMemory(create=True, size=pixels.nbytes, name=f"tl{uuid.uuid4().hex[:12]}")
        np.ndarray(pixels.shape, pixels.dtype, buffer=region.buf)[:] = pixels
        _request(conn, "POST", f"/v2/systemsharedmemory/region/{region.name}/register",
                 json.dumps({"key": f"/{region.name}", "offset": 0, "byte_size": pixels.nbytes}).encode())
        parameters = {"shared_memory_region": region.name, "shared_memory_byte_size": pixels.nbytes}
    body, headers = request(inputs, outputs, pixels, datatype, parameters, transport == "http")
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


def request(inputs: str, outputs: str, pixels: np.ndarray, datatype: str, parameters: dict[str, Any],
            with_data: bool) -> tuple[bytes, dict[str, str]]:
    """An infer request's body and headers (Triton's binary extension: the output comes back as raw bytes)."""
    header = json.dumps({"inputs": [{"name": inputs, "shape": list(pixels.shape), "datatype": datatype, "parameters": parameters}],
                         "outputs": [{"name": outputs, "parameters": {"binary_data": True}}]}).encode()
    return (header + pixels.tobytes() if with_data else header,
            {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})


def infer(url: str, model: str, inputs: str, outputs: str, pixels: np.ndarray, datatype: str,
          cuda_region: tuple[str, int] | None = None) -> np.ndarray:
    """One request's answer: the pixels sent in the body, or read by the server from a CUDA region."""
    body, headers = request(inputs, outputs, pixels, datatype, _parameters(pixels, cuda_region), cuda_region is None)
    conn = _connect(url, 120)
    conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{model}: HTTP {response.status}: {answer[:300]!r}")
    length = int(response.getheader("Inference-Header-Content-Length") or len(answer))
    output = json.loads(answer[:length])["outputs"][0]
    if length == len(answer):  # no binary part: what the empty answers of a numpy 2 server looked like
        raise RuntimeError(f"{model}: an answer without its output's bytes: {output}")
    return np.frombuffer(answer[length:], dtype=np.float32).reshape(output["shape"])


def _parameters(pixels: np.ndarray, cuda_region: tuple[str, int] | None) -> dict[str, Any]:
    if cuda_region:
        return {"shared_memory_region": cuda_region[0], "shared_memory_offset": cuda_region[1], "shared_memory_byte_size": pixels.nbytes}
    return {"binary_data_size": pixels.nbytes}


def client_pixels(batch: int, datatype: str) -> np.ndarray:
    """What a client of ``batch`` images sends (seeded: the CUDA regions hold the same)."""
    return np.random.default_rng(batch).standard_normal((batch, *IMAGE)).astype(WIRE_TYPES[datatype])


def _process(args: tuple[Any, ...]) -> tuple[list[float], float]:
    """One client process's threads; returns their latencies and the process's CPU seconds."""
    url, model, inputs, outputs, batch, datatype, seconds, transport, start_at, regions = args
    latencies: list[float] = []
    cpu = time.process_time()
    threads = [threading.Thread(target=_client, args=(url, model, inputs, outputs, batch, datatype, seconds, transport, region, start_at,
                                                      latencies))
               for region in regions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.process_time() - cpu


def _stats(url: str, model: str) -> dict[str, int]:
    """The model's counters: images, executions, and the nanoseconds of its executions' phases (Triton's batch
    statistics: copying the inputs to the backend, the backend's execute, the outputs back)."""
    conn = _connect(url, 30)
    stats = json.loads(_request(conn, "GET", f"/v2/models/{model}/stats"))["model_stats"][0]
    conn.close()
    phases = {phase: sum(int(b[phase]["ns"]) for b in stats.get("batch_stats", [])) for phase in PHASES}
    return {"images": int(stats["inference_count"]), "executions": int(stats["execution_count"]),
            "queue_ns": int(stats["inference_stats"]["queue"]["ns"]), **phases}


def run(url: str, model: str, inputs: str, outputs: str, concurrency: int, batch: int, seconds: float, transport: str,
        processes: int) -> dict[str, Any]:
    """One closed-loop measurement: images/s, request latency percentiles, the server's mean batch size and
    the mean milliseconds of one execution's phases, the client processes' CPU use."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    datatype = input_datatype(url, model, inputs)
    # made here, where the CUDA context is: the client processes are forked from this one and must not touch CUDA
    region = CudaRegion(url, [client_pixels(batch, datatype)] * concurrency) if transport == "cuda" else None
    regions = [(region.name, int(offset)) for offset in region.offsets] if region else [None] * concurrency
    before = _stats(url, model)
    start_at = time.perf_counter() + 2.0  # every client connected (and its region registered) before the clock starts
    bounds = np.cumsum([0, *shares])
    try:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.map(_process, [(url, model, inputs, outputs, batch, datatype, seconds, transport, start_at, regions[a:b])
                                        for a, b in zip(bounds[:-1], bounds[1:])])
    finally:
        if region:
            region.close()
    after = _stats(url, model)
    latencies = sorted(x for part, _ in parts for x in part)
    delta = {key: after[key] - before[key] for key in after}
    executions = delta["executions"]
    return {
        "concurrency": concurrency, "batch": batch, "transport": TRANSPORTS[transport],
        "seconds": seconds, "processes": processes, "requests": len(latencies), "images_per_s": len(latencies) * batch / seconds,
        "latency_ms_p50": 1000 * statistics.median(latencies),
        "latency_ms_p95": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "server_mean_batch": delta["images"] / executions if executions else None,
        "server_ms_per_execution": {phase: delta[phase] / executions / 1e6 for phase in PHASES} if executions else None,
        "server_queue_ms_per_request": delta["queue_ns"] / delta["images"] * batch / 1e6 if delta["images"] else None,
        "client_cpu_cores": sum(cpu for _, cpu in parts) / seconds,
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
    p.add_argument("--transport", choices=TRANSPORTS, default="http")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = []
    for concurrency in map(int, args.concurrency.split(",")):
        for batch in map(int, args.batch.split(",")):
            row = run(args.url, args.model, args.input, args.output, concurrency, batch, args.seconds, args.transport, args.processes)
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(args.out, "w") as fp:
        json.dump(rows, fp, indent=1)


if __name__ == "__main__":
    main()
