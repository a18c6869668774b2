"""The Triton Python-backend model of the package's ``triton/`` repository (``triton_repository``): copied
there at build time as ``biomedclip_image_encoder_python/1/model.py``, and run by the server's Python
backend stub, not by the app.

It wraps this project's ONNX Runtime backend on the package's fp32 graph, so the server's results are
the local backend's. It imports this checkout's ``operators`` package, which ``python -m
app.inference_server`` puts on the stub's ``PYTHONPATH`` (with the server environment's site-packages:
numpy, onnxruntime, pydicom); the package itself is found relative to the model folder, so a package
moved as one folder keeps working. Triton's dynamic batcher hands ``execute`` several requests at once:
they run as one batch.
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
from operators.inference.triton_repository import VERSION_PARAMETER


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
        self.backend = OnnxRuntimeBackend.from_package(package, BackendSpec("onnxruntime", "fp32"))
        self.input, self.output = encoder.input, encoder.output

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        features = self.backend.embed(np.concatenate(batches))
        bounds = np.cumsum([0, *map(len, batches)])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, features[start:end])])
                for start, end in zip(bounds[:-1], bounds[1:])]
