"""The Triton Python-backend models of the package's ``triton/`` repository (``triton_repository``): copied
there at build time as ``biomedclip_image_encoder_python/1/model.py`` and
``biomedclip_image_encoder_pytorch/1/model.py``, and run by the server's Python backend stub, not by the app.

Each wraps one of this project's backends, named by its config's ``image_encoder_backend`` parameter:
ONNX Runtime fp32 on the package's graph (the CPU model, so the server's results are the local backend's),
or PyTorch bf16 compiled with CUDA graphs on the instance's GPU. It imports this checkout's ``operators``
package, which ``python -m app.inference_server`` puts on the stub's ``PYTHONPATH`` (with the server
environment's site-packages); the package itself is found relative to the model folder, so a package
moved as one folder keeps working. Triton's dynamic batcher hands ``execute`` several requests at once:
they run as one batch, on a GPU padded to a power of two so that every batch replays one of a few CUDA
graphs captured at load time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from operators.inference.backends.base import BackendSpec
from operators.inference.backends.onnxruntime import OnnxRuntimeBackend
from operators.inference.model_package import ModelPackage
from operators.inference.triton_repository import BACKEND_PARAMETER, VERSION_PARAMETER, parse_backend


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

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        features = self.gpu.embed(batches) if self.gpu else self.backend.embed(np.concatenate(batches))
        bounds = np.cumsum([0, *map(len, batches)])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, features[start:end])])
                for start, end in zip(bounds[:-1], bounds[1:])]


class GpuBatches:
    """The PyTorch backend fed as a server should: the requests' arrays (in the input's wire type, float16:
    ``triton_repository.INPUT_TYPE``) gathered into one page-locked host buffer, sent to the GPU in one transfer
    and converted to the model's precision there (pageable copies and a CPU conversion to bf16 cost more than the
    model itself at batch 256), padded to a power of two so that every batch replays one of a few CUDA graphs,
    all captured at load time."""

    def __init__(self, backend: Any, largest: int, input_config: dict[str, Any]) -> None:
        torch = backend.torch
        self.backend = backend
        self.buckets = [1 << i for i in range(largest.bit_length()) if 1 << i < largest] + [largest]
        dtype = {"TYPE_FP32": torch.float32, "TYPE_FP16": torch.float16}[input_config["data_type"]]
        self.host = torch.zeros((largest, *map(int, input_config["dims"])), dtype=dtype).pin_memory()
        for bucket in self.buckets:  # compile and capture now, not under the first requests' load
            self.backend.embed_tensor(self.host[:bucket].to(backend.device))

    def embed(self, arrays: list[np.ndarray]) -> np.ndarray:
        torch, count = self.backend.torch, 0
        for array in arrays:
            self.host[count:count + len(array)].copy_(torch.from_numpy(array))
            count += len(array)
        bucket = next(b for b in self.buckets if b >= count)  # the padding rows' answers are dropped
        batch = self.host[:bucket].to(self.backend.device, non_blocking=True)
        return self.backend.embed_tensor(batch)[:count].float().cpu().numpy()
