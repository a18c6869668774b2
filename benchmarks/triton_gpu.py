"""Triton on a GPU: the package's PyTorch model (bf16, torch.compile + CUDA graphs, in Triton's Python
backend, ``operators/inference/triton_python_model.py``) under 16-64 closed-loop clients sending batches of
1-8 images, dynamic-batched by the server, against the direct compiled bf16 ceiling measured in the same
run (the same backend called in-process at batch 256).

The clients send by CUDA shared memory, system shared memory or HTTP binary (``benchmarks/triton_load.py``); the
fidelity check sends 64 seeded images through the server and compares its embeddings with PyTorch fp32; each
variant reloads the model with one change to its configuration (``VARIANTS``).

Run where the GPU is (``benchmarks/triton_gpu_device.sh OUT [run options]`` on the lent H200, which carries what
that machine lacks), then make the report here:

    python -m benchmarks.triton_gpu run --package PKG --out benchmarks/triton_gpu.json [--variants "as built,KIND_GPU"]
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, write_section
from benchmarks.triton_load import PHASES, TRANSPORTS, WIRE_TYPES, CudaRegion, infer, input_datatype
from benchmarks.triton_load import run as load
from operators.inference.triton_repository import PYTHON_MODEL

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- triton-gpu:begin -->", "<!-- triton-gpu:end -->"
CEILING_BATCH = 256
INPUT, OUTPUT = "pixel_values", "image_features"
FIDELITY_REQUEST = 8
RERUN_OPTIONS = ("concurrency", "batch", "seconds", "transports", "variants", "processes")
#: Changes to the PyTorch model's configuration measured against it as built (each one change).
VARIANTS: dict[str, dict[str, Any]] = {
    "as built": {},
    "KIND_GPU": {"instance_group": [{"kind": "KIND_GPU", "count": 1}]},
    "2 instances": {"instance_group": [{"kind": "KIND_CPU", "count": 2}]},
    "batches up to 512": {"max_batch_size": 512},
}


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


def references(package_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fidelity set: 64 seeded images, their PyTorch fp32 embeddings on the GPU (the reference) and the direct
    bf16 backend's."""
    import torch

    from operators.inference.backends.base import BackendSpec
    from operators.inference.backends.pytorch import TorchBackend
    from operators.inference.model_package import ModelPackage

    package = ModelPackage.load(package_dir)
    images = np.random.default_rng(1).standard_normal((64, 3, 224, 224)).astype(np.float32)
    reference = TorchBackend.from_package(package, BackendSpec("pytorch", "fp32", False, False), "cuda").embed(images)
    direct = TorchBackend.from_package(package, BackendSpec("pytorch", "bf16", False, False), "cuda").embed(images)
    torch.cuda.empty_cache()
    return images, reference, direct


def cosines(embeddings: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    values = (a * b).sum(axis=1)
    return {"min": float(values.min()), "median": float(np.median(values))}


def fidelity(url: str, model: str, images: np.ndarray, reference: np.ndarray, transport: str) -> dict[str, float]:
    return cosines(served(url, model, images, transport), reference)


def served(url: str, model: str, images: np.ndarray, transport: str) -> np.ndarray:
    """The server's embeddings of ``images`` (sent as the model's config declares the input), by 8 requests of 8
    images at once, so that the server batches them together (the answers must come back in order)."""
    datatype = input_datatype(url, model, INPUT)
    chunks = [images[i:i + FIDELITY_REQUEST].astype(WIRE_TYPES[datatype]) for i in range(0, len(images), FIDELITY_REQUEST)]
    region = CudaRegion(url, chunks) if transport == "cuda" else None
    try:
        with ThreadPoolExecutor(len(chunks)) as pool:
            answers = pool.map(lambda i: infer(url, model, INPUT, OUTPUT, chunks[i], datatype,
                                               (region.name, int(region.offsets[i])) if region else None), range(len(chunks)))
            return np.concatenate(list(answers))
    finally:
        if region:
            region.close()


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


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s values in place (nested objects merged, lists replaced)."""
    return {**base, **{key: merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
                       for key, value in override.items()}}


def model_config(url: str, model: str) -> dict[str, Any]:
    import http.client

    from benchmarks.triton_load import _request

    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    config: dict[str, Any] = json.loads(_request(conn, "GET", f"/v2/models/{model}/config"))
    conn.close()
    return config


def reload(url: str, model: str, config: dict[str, Any]) -> dict[str, float]:
    """The model reloaded with ``config`` (Triton's load API with a config: the package's files stay as built), and
    how long that took."""
    import http.client

    from benchmarks.triton_load import _request

    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=900)
    began = time.perf_counter()
    _request(conn, "POST", f"/v2/repository/models/{model}/load", json.dumps({"parameters": {"config": json.dumps(config)}}).encode())
    conn.close()
    return {"seconds": time.perf_counter() - began}


def run(args: argparse.Namespace) -> None:
    import torch

    props = torch.cuda.get_device_properties(0)
    options = " ".join(f"--{k} '{v}'" for k, v in vars(args).items() if k in RERUN_OPTIONS)
    result: dict[str, Any] = {"device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "host": machine(),
                              "options": options, "ceiling": ceiling(args.package)}
    print(json.dumps(result["ceiling"]), flush=True)
    images, reference, direct = references(args.package)
    result["fidelity"] = {"images": len(images), "request_images": FIDELITY_REQUEST, "direct_bf16_vs_fp32": cosines(direct, reference)}
    began = time.perf_counter()
    server, ready = serve(args.package, args.port)
    result["server_ready_s"], result["server"] = time.perf_counter() - began, ready
    print(ready, f"after {result['server_ready_s']:.0f} s", flush=True)
    url, transports = f"127.0.0.1:{args.port}", args.transports.split(",")
    # the server's Python is this one (TRITON_PYTHON): its numpy, and the CPU model's answers under it
    result["fidelity"] |= {"server_numpy": np.__version__, "onnxruntime_model_http": attempt(
        fidelity, url, PYTHON_MODEL, images[:FIDELITY_REQUEST], reference[:FIDELITY_REQUEST], "http")}
    print(json.dumps(result["fidelity"]), flush=True)
    concurrencies, batches = [int(c) for c in args.concurrency.split(",")], [int(b) for b in args.batch.split(",")]
    rows, variants = [], []
    built = model_config(url, args.model)  # each variant is one change to the model as built, not to the one before
    try:
        for index, name in enumerate(args.variants.split(",")):
            variant: dict[str, Any] = {"name": name, "config": VARIANTS[name]}
            if index or VARIANTS[name]:
                variant["reload"] = attempt(reload, url, args.model, merged(built, VARIANTS[name]))
                if "error" in variant["reload"]:
                    variants.append(variant)
                    continue
            variant["fidelity"] = {transport: attempt(fidelity, url, args.model, images, reference, transport)
                                   for transport in transports if transport != "shm"}  # shm: the same host-memory path as http
            print(json.dumps(variant), flush=True)
            variants.append(variant)
            # the first variant over the whole grid, the others at its heaviest point
            grid = [(c, b) for c in concurrencies for b in batches] if index == 0 else [(max(concurrencies), max(batches))]
            for transport in transports:
                for concurrency, batch in grid:
                    row = {"variant": name, "transport": TRANSPORTS[transport], "concurrency": concurrency, "batch": batch,
                           **attempt(load, url, args.model, INPUT, OUTPUT, concurrency, batch, args.seconds, transport,
                                     args.processes)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    # written as it goes: a run cut short by the device's time limit keeps what it measured
                    args.out.write_text(json.dumps(result | {"variants": variants, "rows": rows}, indent=1) + "\n")
    finally:
        server.terminate()
        server.wait(60)


def attempt(measure: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """One measurement, or the error that stopped it (the other measurements of a device run still count)."""
    try:
        return measure(*args)
    except Exception as exc:  # noqa: BLE001 - recorded in the results, with its type
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def _ms(row: dict[str, Any]) -> str:
    phases = row["server_ms_per_execution"]
    return " / ".join(f"{phases[p]:.1f}" for p in PHASES) if phases else "-"


def reading(result: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """What the rows say, in numbers taken from them: where one execution's time goes, by transport."""
    best = result["ceiling"]["images_per_s_on_device"]
    gpu_ms = 1000 * CEILING_BATCH / best
    heaviest = {r["transport"]: r for r in rows if (r["concurrency"], r["batch"]) == (max(x["concurrency"] for x in rows),
                                                                                         max(x["batch"] for x in rows))}
    cuda, shm = heaviest[TRANSPORTS["cuda"]], heaviest[TRANSPORTS["shm"]]

    def split(row: dict[str, Any]) -> str:
        phases = row["server_ms_per_execution"]
        return (f"{phases['compute_input']:.1f} ms readying the inputs for the stub, {phases['compute_infer']:.1f} ms in its "
                f"execute (the GPU's share at batch {CEILING_BATCH}: {gpu_ms:.1f} ms), {phases['compute_output']:.1f} ms returning "
                f"the answers, for {row['server_mean_batch']:.0f} images")

    def total(row: dict[str, Any]) -> float:  # one execution, in ms, scaled to a batch of CEILING_BATCH
        return float(sum(row["server_ms_per_execution"].values())) * CEILING_BATCH / row["server_mean_batch"]

    clients = max(r["client_cpu_cores"] for r in rows)
    earlier = result.get("earlier_runs_best_point", {}).get("runs", [])
    spread = (f" The same point in {len(earlier)} earlier runs of the same GPU model code: " + ", ".join(
        f"{r['images_per_s']:,.0f} img/s ({100 * r['images_per_s'] / r['ceiling_images_per_s']:.0f} %)" for r in earlier) + "."
              if earlier else "")
    return (f"Reading. One server execution at {cuda['concurrency']} clients x {cuda['batch']} images: by CUDA shared memory "
            f"{split(cuda)}; by system shared memory {split(shm)}. With the input on the GPU the Python backend's own cost "
            f"(requests in, DLPack, gathering, answers out) is {total(cuda) - gpu_ms:.1f} ms per batch and the GPU's share "
            f"{100 * gpu_ms / total(cuda):.0f} % of the server's time. From host memory every "
            f"image ({3 * 224 * 224 * 2 // 1000} kB in float16) is copied twice on the CPU, by the server into the stub's shared "
            "memory and by the model into one page-locked buffer, before one transfer to the GPU; the model's execute "
            "must return the answers, so one instance cannot copy the next batch while the GPU computes this one, and a "
            "second instance (which could) loses more to two processes time-slicing one GPU (the table above). Below "
            "~256 queued images (fewer clients, batches of 1) the server runs small batches, where the GPU is far from "
            "its batch-256 rate and per-request costs weigh more. The load generator is not the limit: at most "
            f"{clients:.1f} of the host's cores. KIND_GPU instead of KIND_CPU changes nothing measurable (within the "
            f"run-to-run spread).{spread}")


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(args.json.read_text())
    best = result["ceiling"]["images_per_s_on_device"]
    first = result["variants"][0]["name"]
    rows = [r for r in result["rows"] if r["variant"] == first and "error" not in r]
    lines = [BEGIN, "## Triton on a GPU (`benchmarks/triton_gpu.py`)", "",
             f"{result['device']}, torch {result['torch']} (CUDA {result['cuda']}), host {result['host']}; tritonserver 2.51 "
             f"(nvidia-pytriton wheel; its Python backend run by the machine's Python, numpy {result['fidelity']['server_numpy']}) "
             "with the package's PyTorch model: float16 input, bf16, torch.compile + CUDA graphs, batches padded to a power "
             "of two, dynamic batching up to 256 with at most 1 ms of queueing, one instance (KIND_CPU: the model puts itself "
             "on cuda:0), `FORCE_CPU_ONLY_INPUT_TENSORS` off, tensors in and out by DLPack. "
             "Closed-loop clients (`benchmarks/triton_load.py`: each sends a batch and waits for its answer), "
             f"{rows[0]['processes']} client processes on the same host; each point {rows[0]['seconds']:.0f} s. Server ready "
             f"{result['server_ready_s']:.0f} s after start (compiling and capturing one CUDA graph per padded batch size). "
             "Random seeded weights.", "",
             f"Ceiling, the same backend called in-process at batch {result['ceiling']['batch']}: "
             f"**{best:,.0f} img/s** on device-resident input, {result['ceiling']['images_per_s_from_host']:,.0f} img/s from host "
             "memory (host-to-device copy and back included).", "",
             "Transports: CUDA shared memory (the client's batch already on the GPU, registered with the server; the model "
             "reads it there by DLPack), system shared memory (host memory the server reads), HTTP binary (the bytes in the "
             "request). Server ms per execution: Triton's batch statistics, the inputs readied for the Python backend's stub "
             "(host inputs copied into its shared memory) / the backend's execute (the stub's whole turn: gathering, the GPU, "
             "the answers) / outputs back.", "",
             "| transport | clients | batch | img/s | of ceiling | p50 ms | p95 ms | server mean batch | server ms per execution | client CPU cores |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        mean = f"{r['server_mean_batch']:.1f}" if r["server_mean_batch"] else "-"
        lines.append(f"| {r['transport']} | {r['concurrency']} | {r['batch']} | {r['images_per_s']:,.0f} | "
                     f"{100 * r['images_per_s'] / best:.0f} % | {r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} | {mean} | "
                     f"{_ms(r)} | {r['client_cpu_cores']:.1f} |")
    top = max(rows, key=lambda r: r["images_per_s"])
    share = top["images_per_s"] / best
    fidelity = result["fidelity"]
    answers = "; ".join(f"{TRANSPORTS[t]}: least {c['min']:.5f}, median {c['median']:.5f}"
                        for t, c in result["variants"][0]["fidelity"].items())
    lines += ["", f"Goal (issue 14): at least 70 % of the ceiling. Best here: {100 * share:.0f} % ({top['transport']}, "
              f"{top['concurrency']} clients, batch {top['batch']}): **{'met' if share >= 0.7 else 'not met'}**.", "",
              f"Answers: the served embeddings' cosine against PyTorch fp32 on the GPU, {fidelity['images']} seeded images sent "
              f"as {fidelity['images'] // fidelity['request_images']} requests of {fidelity['request_images']} at once (batched "
              f"together by the server): {answers} (the direct bf16 backend's: least {fidelity['direct_bf16_vs_fp32']['min']:.5f}). "
              f"The CPU model (ONNX Runtime fp32, same server), {fidelity['request_images']} images by HTTP: least "
              f"{fidelity['onnxruntime_model_http']['min']:.7f}. Both under numpy {fidelity['server_numpy']} in the server's Python, "
              "where numpy arrays handed to the stub came back as empty outputs (`binary_data_size: 0`) before the models "
              "passed their tensors by DLPack.",
              "", "One change at a time to the model's configuration (Triton's load API with a changed config), at the heaviest point:", "",
              "| configuration | transport | clients | batch | img/s | of ceiling | server mean batch | server ms per execution |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    heaviest = (max(r["concurrency"] for r in rows), max(r["batch"] for r in rows))
    for r in result["rows"]:
        if (r["concurrency"], r["batch"]) == heaviest and "error" not in r:
            mean = f"{r['server_mean_batch']:.1f}" if r["server_mean_batch"] else "-"
            lines.append(f"| {r['variant']} | {r['transport']} | {r['concurrency']} | {r['batch']} | {r['images_per_s']:,.0f} | "
                         f"{100 * r['images_per_s'] / best:.0f} % | {mean} | {_ms(r)} |")
    lines += ["", *(f"{v['name']}: {v['note']}." for v in result["variants"] if "note" in v), "", reading(result, rows), "",
              f"Rerun on the GPU machine: `bash benchmarks/triton_gpu_device.sh OUT {result['options']}`, then `python -m "
              f"benchmarks.triton_gpu report {args.json}` here.", "", f"Raw: `benchmarks/{args.json.name}`; chart: `benchmarks/{args.json.with_suffix('.png').name}`.", END]
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
    r.add_argument("--transports", default="cuda,shm,http")
    r.add_argument("--variants", default="as built", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    r.add_argument("--seconds", type=float, default=8.0)
    r.add_argument("--processes", type=int, default=8)
    r.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("report")
    p.add_argument("json", type=Path)
    args = parser.parse_args()
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
