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
        self.buckets: list[int] = []
        if backend == "pytorch":
            from operators.inference.backends.pytorch import TorchBackend

            self.backend: Any = TorchBackend.from_package(package, spec, f"cuda:{args['model_instance_device_id']}")
            largest = config["max_batch_size"]
            self.buckets = [1 << i for i in range(largest.bit_length()) if 1 << i < largest] + [largest]
            dims = [int(d) for d in config["input"][0]["dims"]]
            for bucket in self.buckets:  # compile and capture now, not under the first requests' load
                self.backend.embed(np.zeros((bucket, *dims), np.float32))
        else:
            self.backend = OnnxRuntimeBackend.from_package(package, spec)

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        batch = np.concatenate(batches)
        if self.buckets:
            padded = next(b for b in self.buckets if b >= len(batch))
            batch = np.concatenate([batch, np.zeros((padded - len(batch), *batch.shape[1:]), batch.dtype)])
        features = self.backend.embed(batch)
        bounds = np.cumsum([0, *map(len, batches)])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, features[start:end])])
                for start, end in zip(bounds[:-1], bounds[1:])]
