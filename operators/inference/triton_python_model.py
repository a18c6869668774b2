"""The Triton Python-backend models of the package's ``triton/`` repository (``triton_repository``): copied
there at build time as ``biomedclip_image_encoder_python/1/model.py``,
``biomedclip_image_encoder_pytorch/1/model.py`` (and ``biomedclip_image_encoder_python_int8/1/model.py``), and
run by the server's Python backend stub, not by the app.

Each wraps one of this project's backends, named by its config's ``image_encoder_backend`` parameter:
ONNX Runtime fp32 on the package's graph (the CPU model, so the server's results are the local backend's),
ONNX Runtime on the package's int8 graph (the one the local int8 backend picks), or PyTorch bf16 compiled with CUDA graphs on the instance's
GPU. It imports this checkout's ``operators`` package, which ``python -m app.inference_server`` puts on the
stub's ``PYTHONPATH`` (with the server environment's site-packages); the package itself is found relative to
the model folder, so a package moved as one folder keeps working. Triton's dynamic batcher hands ``execute``
several requests at once: they run as one batch, on a GPU padded to a power of two so that every batch replays
one of a few CUDA graphs captured at load time.

A CPU model whose config sets ``embedding_cache_images`` keeps the images of the listener's prefetch requests
in its ``EmbeddingCache``, answers any request's images it holds from there, and counts both in two Prometheus
counters (``CACHE_METRICS``: the server's ``/metrics`` where metrics are on, ``python -m app.inference_server
--metrics-port``).
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from operators.inference.backends.base import BackendSpec
from operators.inference.backends.onnxruntime import OnnxRuntimeBackend
from operators.inference.embedding_cache import EmbeddingCache
from operators.inference.model_package import ModelPackage
from operators.inference.triton_repository import (
    BACKEND_PARAMETER,
    CACHE_METRICS,
    CACHE_PARAMETER,
    PREFETCH_PARAMETER,
    VERSION_PARAMETER,
    parse_backend,
)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        package = ModelPackage.load(Path(args["model_repository"]).resolve().parents[1])  # .../PACKAGE/triton/MODEL
        encoder = package.manifest.image_encoder
        served = package.manifest.files[encoder.onnx]
        declared = config["parameters"][VERSION_PARAMETER]["string_value"]
        if declared != served:  # a config copied from another package would misname the model version
            raise pb_utils.TritonModelException(
                f"{args['model_repository']}: config.pbtxt names model version {declared[:16]}, the package holds {served[:16]}")
        backend, precision, compile, cuda_graphs = parse_backend(config["parameters"][BACKEND_PARAMETER]["string_value"])
        spec = BackendSpec(backend, precision, compile, cuda_graphs)
        self.input, self.output = encoder.input, encoder.output
        self.gpu: GpuBatches | None = None
        if backend == "pytorch":
            from operators.inference.backends.pytorch import TorchBackend

            torch_backend = TorchBackend.from_package(package, spec, f"cuda:{args['model_instance_device_id']}")
            self.gpu = GpuBatches(torch_backend, config["max_batch_size"], config["input"][0])
        else:
            self.backend = OnnxRuntimeBackend.from_package(package, spec)
        images = int(config["parameters"].get(CACHE_PARAMETER, {}).get("string_value") or 0)
        self.cache = EmbeddingCache(images) if images and not self.gpu else None
        if self.cache is not None:
            labels = {"model": args["model_name"], "version": args["model_version"]}
            # a metric works only while its family lives: both kept
            self.families = [pb_utils.MetricFamily(name=name, description=f"images {what}", kind=pb_utils.MetricFamily.COUNTER)
                             for name, what in zip(CACHE_METRICS, ("answered from the embedding cache", "computed by the model"))]
            self.hits, self.misses = (family.Metric(labels=labels) for family in self.families)

    def execute(self, requests: list[Any]) -> list[Any]:
        # tensors in and out by DLPack, not as numpy arrays: given numpy arrays, tritonserver 2.51's stub answers empty
        # outputs where the server's Python has numpy 2 (measured on the H200); DLPack works under numpy 1 and 2 alike
        tensors = [pb_utils.get_input_tensor_by_name(request, self.input) for request in requests]
        if self.gpu:
            outputs = [pb_utils.Tensor.from_dlpack(self.output, features) for features in self.gpu.embed(tensors)]
        else:
            batches = [np.from_dlpack(tensor) for tensor in tensors]
            batch = np.concatenate(batches)
            if self.cache is not None:
                keep = [bool(json.loads(request.parameters() or "{}").get(PREFETCH_PARAMETER)) for request in requests]
                features, hits = self.cache.embed(batch, self.backend.embed, [k for k, b in zip(keep, batches) for _ in range(len(b))])
                self.hits.increment(hits)
                self.misses.increment(len(batch) - hits)
            else:
                features = self.backend.embed(batch)
            outputs = [_numpy_tensor(self.output, part) for part in np.split(features, np.cumsum([len(b) for b in batches])[:-1])]
        return [pb_utils.InferenceResponse(output_tensors=[output]) for output in outputs]


#: DLPack's name for a consumed capsule; a module constant because PyCapsule_SetName keeps the pointer, not a copy.
_USED_DLTENSOR = b"used_dltensor"


def _numpy_tensor(name: str, array: np.ndarray) -> Any:
    """``pb_utils.Tensor`` of a numpy array by DLPack. The stub renames the capsule it takes "used_dlpack", not DLPack's
    "used_dltensor": numpy's capsule destructor would then log an error for every output (torch's lets it be)."""
    capsule = array.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    ctypes.pythonapi.PyCapsule_SetName(ctypes.py_object(capsule), _USED_DLTENSOR)
    return tensor


class GpuBatches:
    """The PyTorch backend fed as a server should: the requests' inputs (in the input's wire type, float16:
    ``triton_repository.INPUT_TYPE``) gathered into one batch on the GPU and converted to the model's precision
    there, padded to a power of two so that every batch replays one of a few CUDA graphs, all captured at load
    time. Host inputs go through one page-locked buffer in one transfer (pageable copies and a CPU conversion to
    bf16 cost more than the model itself at batch 256); inputs a client left in CUDA shared memory arrive on the
    GPU (``FORCE_CPU_ONLY_INPUT_TENSORS`` off) and are copied there."""

    def __init__(self, backend: Any, largest: int, input_config: dict[str, Any]) -> None:
        torch = backend.torch
        self.backend = backend
        self.buckets = [1 << i for i in range(largest.bit_length()) if 1 << i < largest] + [largest]
        dtype = {"TYPE_FP32": torch.float32, "TYPE_FP16": torch.float16}[input_config["data_type"]]
        shape = (largest, *map(int, input_config["dims"]))
        self.host = torch.zeros(shape, dtype=dtype).pin_memory()
        self.staged = torch.zeros(shape, dtype=dtype, device=backend.device)
        for bucket in self.buckets:  # compile and capture now, not under the first requests' load
            self.backend.embed_tensor(self.staged[:bucket])

    def embed(self, tensors: list[Any]) -> list[Any]:
        """The requests' inputs (``pb_utils.Tensor``, in host memory or on the GPU) → their embeddings, one host
        tensor per request."""
        torch = self.backend.torch
        batches = [torch.utils.dlpack.from_dlpack(tensor.to_dlpack()) for tensor in tensors]
        on_gpu, count = [], 0
        for batch in batches:
            if batch.is_cuda:
                on_gpu.append((count, batch))
            else:
                self.host[count:count + len(batch)].copy_(batch)
            count += len(batch)
        bucket = next(b for b in self.buckets if b >= count)  # the padding rows' answers are dropped
        staged = self.staged[:bucket]
        if len(on_gpu) < len(batches):
            staged.copy_(self.host[:bucket], non_blocking=True)
        for start, batch in on_gpu:  # after the transfer, in stream order: its rows there are stale
            staged[start:start + len(batch)].copy_(batch)
        return list(torch.split(self.backend.embed_tensor(staged)[:count].float().cpu(), [len(b) for b in batches]))
