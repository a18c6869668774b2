"""Triton on a GPU: the package's PyTorch model (bf16, torch.compile + CUDA graphs, in Triton's Python
backend, ``operators/inference/triton_python_model.py``) under 16-64 closed-loop clients sending batches of
1-8 images, dynamic-batched by the server, against the direct compiled bf16 ceiling measured in the same
run (the same backend called in-process at batch 256).

Run where the GPU is (the set-up that worked on the lent H200 is in BENCHMARKS.md), then make the report here:

    python -m benchmarks.triton_gpu run --package PKG --out benchmarks/triton_gpu.json
    python -m benchmarks.triton_gpu report benchmarks/triton_gpu.json     # BENCHMARKS.md section + PNG
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, write_section
from benchmarks.triton_load import run as load

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- triton-gpu:begin -->", "<!-- triton-gpu:end -->"
CEILING_BATCH = 256


def ceiling(package_dir: Path) -> dict[str, Any]:
    """Images/s of the backend the server wraps, called directly: on device-resident input (the GPU alone)
    and from host memory (with the copies a server's model also makes)."""
    import torch

    from benchmarks.gpu import time_gpu
    from operators.inference.backends.base import BackendSpec
    from operators.inference.backends.pytorch import TorchBackend
    from operators.inference.model_package import ModelPackage

    backend = TorchBackend.from_package(ModelPackage.load(package_dir), BackendSpec("pytorch", "bf16", True, True), "cuda")
    host = np.random.default_rng(0).standard_normal((CEILING_BATCH, 3, 224, 224)).astype(np.float32)
    device = torch.from_numpy(host).to("cuda", torch.bfloat16)
    on_device = statistics.median(time_gpu(backend.embed_tensor, device, 50))
    backend.embed(host)
    from_host = []
    for _ in range(20):
        began = time.perf_counter()
        backend.embed(host)
        from_host.append(time.perf_counter() - began)
    result = {"backend": backend.name, "batch": CEILING_BATCH,
              "images_per_s_on_device": CEILING_BATCH / (on_device / 1000),
              "images_per_s_from_host": CEILING_BATCH / statistics.median(from_host)}
    del backend, device
    torch.cuda.empty_cache()
    return result


def fidelity(package_dir: Path, port: int, model: str) -> dict[str, Any]:
    """Cosine of the server's embeddings (the input sent as the model's config declares it) and of the direct
    compiled bf16 backend's against PyTorch fp32 on the GPU, on the same 64 seeded images: least and median."""
    import http.client

    import torch

    from benchmarks.triton_load import WIRE_TYPES, _request
    from operators.inference.backends.base import BackendSpec
    from operators.inference.backends.pytorch import TorchBackend
    from operators.inference.model_package import ModelPackage

    package = ModelPackage.load(package_dir)
    images = np.random.default_rng(1).standard_normal((64, 3, 224, 224)).astype(np.float32)
    reference = TorchBackend.from_package(package, BackendSpec("pytorch", "fp32", False, False), "cuda").embed(images)
    direct = TorchBackend.from_package(package, BackendSpec("pytorch", "bf16", False, False), "cuda").embed(images)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    datatype = json.loads(_request(conn, "GET", f"/v2/models/{model}"))["inputs"][0]["datatype"]
    sent = images.astype(WIRE_TYPES[datatype])
    header = json.dumps({"inputs": [{"name": "pixel_values", "shape": list(sent.shape), "datatype": datatype,
                                     "parameters": {"binary_data_size": sent.nbytes}}],
                         "outputs": [{"name": "image_features", "parameters": {"binary_data": True}}]}).encode()
    conn.request("POST", f"/v2/models/{model}/infer", body=header + sent.tobytes(),
                 headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    length = int(response.getheader("Inference-Header-Content-Length") or len(body))
    output = json.loads(body[:length])["outputs"][0]
    if length == len(body) and "data" not in output:
        return {"error": f"HTTP {response.status} {response.getheaders()} {body[:400]!r}"}
    served = (np.frombuffer(body[length:], dtype=np.float32) if length < len(body) else np.asarray(output["data"], np.float32))
    served = served.reshape(output["shape"])
    torch.cuda.empty_cache()

    def cosines(embeddings: np.ndarray) -> dict[str, float]:
        a = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        values = (a * b).sum(axis=1)
        return {"min": float(values.min()), "median": float(np.median(values))}

    return {"input_datatype": datatype, "images": len(images), "triton_vs_fp32": cosines(served), "direct_bf16_vs_fp32": cosines(direct)}


def serve(package_dir: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, "-m", "app.inference_server", "-m", str(package_dir), "--http-port", str(port),
                               "--ready-timeout", "900"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert server.stdout is not None
    for line in server.stdout:
        print(line, end="", flush=True)
        if line.startswith("ready:"):
            # the server's log keeps coming to this pipe: drained, or the server blocks on a full pipe
            threading.Thread(target=lambda: [print(rest, end="", flush=True) for rest in server.stdout], daemon=True).start()  # type: ignore[union-attr]
            return server, line.strip()
    raise RuntimeError(f"the inference server exited with status {server.wait()} before it was ready")


def run(args: argparse.Namespace) -> None:
    import torch

    props = torch.cuda.get_device_properties(0)
    result: dict[str, Any] = {"device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "host": machine(),
                              "ceiling": ceiling(args.package)}
    print(json.dumps(result["ceiling"]), flush=True)
    began = time.perf_counter()
    server, ready = serve(args.package, args.port)
    result["server_ready_s"], result["server"] = time.perf_counter() - began, ready
    print(ready, f"after {result['server_ready_s']:.0f} s", flush=True)
    result["fidelity"] = fidelity(args.package, args.port, args.model)
    print(json.dumps(result["fidelity"]), flush=True)
    rows = []
    try:
        for transport in args.transports.split(","):
            for concurrency in map(int, args.concurrency.split(",")):
                for batch in map(int, args.batch.split(",")):
                    row = load(f"127.0.0.1:{args.port}", args.model, "pixel_values", "image_features", concurrency, batch,
                               args.seconds, transport == "shm", args.processes)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    finally:
        server.terminate()
        server.wait(60)
    result["rows"] = rows
    args.out.write_text(json.dumps(result, indent=1) + "\n")


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(args.json.read_text())
    best = result["ceiling"]["images_per_s_on_device"]
    rows = result["rows"]
    lines = [BEGIN, "## Triton on a GPU (`benchmarks/triton_gpu.py`)", "",
             f"{result['device']}, torch {result['torch']} (CUDA {result['cuda']}), host {result['host']}; tritonserver 2.51 "
             "(nvidia-pytriton wheel) with the package's PyTorch model: float16 input, bf16, torch.compile + CUDA graphs, batches "
             "padded to a power of two, dynamic batching up to 256 with at most 1 ms of queueing, one instance. Closed-loop clients "
             "(`benchmarks/triton_load.py`: each sends a batch and waits for its answer), 8 client processes on the same host; "
             f"each point {rows[0]['seconds']:.0f} s. Server ready {result['server_ready_s']:.0f} s after start (compiling and "
             "capturing one CUDA graph per padded batch size). Random seeded weights: speed only.", "",
             f"Ceiling, the same backend called in-process at batch {result['ceiling']['batch']}: "
             f"**{best:,.0f} img/s** on device-resident input, {result['ceiling']['images_per_s_from_host']:,.0f} img/s from host "
             "memory (host-to-device copy and back included).", "",
             "| transport | clients | batch | img/s | of ceiling | p50 ms | p95 ms | server mean batch |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mean = f"{r['server_mean_batch']:.1f}" if r["server_mean_batch"] else "-"
        lines.append(f"| {r['transport']} | {r['concurrency']} | {r['batch']} | {r['images_per_s']:,.0f} | "
                     f"{100 * r['images_per_s'] / best:.0f} % | {r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} | {mean} |")
    top = max(rows, key=lambda r: r["images_per_s"])
    share = top["images_per_s"] / best
    fidelity = result.get("fidelity", {})
    answers = (f"Answers: the served embeddings' least cosine against PyTorch fp32 on {fidelity['images']} images is "
               f"{fidelity['triton_vs_fp32']['min']:.5f} (the direct bf16 backend's: {fidelity['direct_bf16_vs_fp32']['min']:.5f})."
               if "triton_vs_fp32" in fidelity else
               "**Answers: none.** On the lent machine the server's Python environment is its own (Python 3.12, numpy 2 "
               "with its torch): every model, the GPU one and the CPU ONNX Runtime one alike, answered 200 with empty "
               "outputs (`binary_data_size: 0`) while the models computed correct arrays (logged in a diagnostic run). The "
               "same happens on the 2-core machine with numpy 2 in the server's environment, and not with numpy 1.26 "
               "(requirements-triton.txt): `python -m app.inference_server` now refuses a numpy 2 environment in one line, "
               "and the app refuses an answer without one embedding per image. The rows above measure the server's "
               "execution, not answers a client could use; a GPU run with numpy<2 in the server's environment (not "
               "possible on the lent machine: no network, and its transformers needs numpy 2) is still to be made.")
    lines += ["", f"Goal (issue 14): at least 70 % of the ceiling. Best here: {100 * share:.0f} % ({top['transport']}, "
              f"{top['concurrency']} clients, batch {top['batch']}): **{'met' if share >= 0.7 else 'not met'}**.", "", answers, "",
              "What was tried, 64 clients x 8 images by shared memory: the input in float16 instead of float32 (half the bytes "
              "of every copy; the model computes bf16) changed nothing on its own (2,345 img/s, against 2,406 in float32 in "
              "the previous session's run); two "
              "model instances on the one GPU lost throughput (1,949: two processes time-slice the GPU); declaring the model's "
              "instance KIND_CPU (it puts itself on cuda:0 and stages its own transfers) raised it to the figure above. A "
              "batch of 256 is 77 MB in float16; Triton's core copies each request into the Python backend stub's shared "
              "memory, the model gathers them into one page-locked buffer and sends it to the GPU, where the model takes "
              "~19 ms: the Python backend's copies, not the GPU, set the pace. What would close the gap, not done here: "
              "NVIDIA's container's C++ backends (the repository's TensorRT plan or ONNX Runtime CUDA model), which take "
              "the request's tensor without a stub copy; CUDA shared memory from clients on the same host.",
              "", f"Raw: `benchmarks/{args.json.name}`; chart: `benchmarks/{args.json.with_suffix('.png').name}`.", END]
    write_section("\n".join(lines), BEGIN, END)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for transport in dict.fromkeys(r["transport"] for r in rows):
        for batch in sorted({r["batch"] for r in rows}):
            points = [(r["concurrency"], r["images_per_s"]) for r in rows if r["transport"] == transport and r["batch"] == batch]
            ax.plot(*zip(*points), marker="o", label=f"{transport}, batch {batch}")
    ax.axhline(best, color="black", linestyle="--", label="ceiling (in-process, batch 256)")
    ax.axhline(0.7 * best, color="grey", linestyle=":", label="70 % of the ceiling")
    ax.set(xlabel="concurrent clients", ylabel="images/s", title=f"Triton, PyTorch bf16 model, {result['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.json.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--package", type=Path, required=True)
    r.add_argument("--model", default="biomedclip_image_encoder_pytorch")
    r.add_argument("--port", type=int, default=8000)
    r.add_argument("--concurrency", default="16,32,64")
    r.add_argument("--batch", default="1,4,8")
    r.add_argument("--transports", default="shm,http")
    r.add_argument("--seconds", type=float, default=8.0)
    r.add_argument("--processes", type=int, default=8)
    r.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("report")
    p.add_argument("json", type=Path)
    args = parser.parse_args()
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
