"""Triton backend: the image encoder runs in a Triton Inference Server (``python -m app.inference_server``,
or NVIDIA's Triton container with the package's ``triton/`` repository); this process loads no weights and
imports neither open_clip nor ONNX Runtime nor torch.

At start the server must answer, be ready, and serve one of the repository's models
(``triton_repository.MODEL_PREFERENCE``, best first; for an ``inference.precision`` that has a model of its own,
``PRECISION_MODELS``, that one) whose ``image_encoder_sha256`` parameter is the
package's: a server holding another model version is refused (``BackendUnavailable``, one line). Batches
go by HTTP/REST (``tritonclient.http``, as the SDK's ``TritonRemoteModel``); Triton's dynamic batcher
merges them with other clients' requests, an urgent study's (``BackendSpec.urgent``) at its higher priority
level, served first. The HTTP client runs on gevent, whose loop belongs to one
thread (the check runs in the main thread, inference in a Holoscan worker: one client shared by both
crashed the process), so each thread gets its own client. A server lost during a study raises ``ServerLost``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from operators.inference.backends.base import BackendSpec, BackendUnavailable
from operators.inference.model_package import ModelPackage
from operators.inference.triton_repository import (
    CACHE_PARAMETER,
    MODEL_PREFERENCE,
    PRECISION_MODELS,
    PREFETCH_PARAMETER,
    ROUTINE_PRIORITY,
    URGENT_PRIORITY,
    VERSION_PARAMETER,
)

CONNECT_TIMEOUT_S = 5.0
#: A batch of 16 on a CPU server shared by several app instances takes tens of seconds; a dead server
#: fails at once (connection reset), so this only bounds a server that hangs.
INFER_TIMEOUT_S = 300.0


#: The input types a model may declare (``triton_repository.INPUT_TYPE``): the batch is sent as the model takes it.
WIRE_TYPES = {"FP32": np.float32, "FP16": np.float16}


class ServerLost(BackendUnavailable):
    """The server stopped answering during a study: nothing was written; running the study again can succeed."""


class TritonBackend:
    def __init__(self, server: str, model: str, version: str, input_name: str, output_name: str,
                 priority: int = ROUTINE_PRIORITY, datatype: str = "FP32", keeps_embeddings: bool = False) -> None:
        self.server, self.model, self.datatype = server, model, datatype
        #: the model answers images it has seen from its embedding cache (``embedding_cache``; the listener's prefetch)
        self.keeps_embeddings = keeps_embeddings
        self._local = threading.local()
        self.input_name, self.output_name, self.priority = input_name, output_name, priority
        #: names the server, the model, its version and the priority level its requests are sent at (the
        #: SR's algorithm parameters, run_report.json)
        self.name = f"triton-{server}-{model}-sha256:{version[:16]}-priority{priority}"

    @staticmethod
    def needs_gpu(spec: BackendSpec) -> bool:
        return False

    @classmethod
    def from_package(cls, package: ModelPackage, spec: BackendSpec) -> TritonBackend:
        from tritonclient.utils import InferenceServerException

        server = spec.triton_server
        if not server:
            raise BackendUnavailable("the triton backend needs a server: -t HOST:PORT or TRITON_SERVER_NETLOC")
        encoder = package.manifest.image_encoder
        wanted = package.manifest.files[encoder.onnx]
        client = _client(server)  # connects on its first request
        try:
            if not client.is_server_ready():
                raise BackendUnavailable(f"Triton server {server} is not ready")
            ready = {entry["name"] for entry in client.get_model_repository_index() if entry.get("state") == "READY"}
            usable = (PRECISION_MODELS[spec.precision],) if spec.precision in PRECISION_MODELS else MODEL_PREFERENCE
            served = [name for name in usable if name in ready]
            if not served:
                raise BackendUnavailable(f"Triton server {server} serves none of {', '.join(usable)}"
                                         + (f" (inference.precision {spec.precision})" if spec.precision in PRECISION_MODELS else ""))
            config = client.get_model_config(served[0])
        except (InferenceServerException, OSError) as exc:
            raise BackendUnavailable(f"Triton server {server} unreachable ({_one_line(exc)})") from None
        finally:
            client.close()
        version = config.get("parameters", {}).get(VERSION_PARAMETER, {}).get("string_value", "")
        if version != wanted:
            raise BackendUnavailable(f"Triton server {server} holds another model version ({served[0]} "
                                     f"sha256:{version[:16] or 'none'}; this package's is sha256:{wanted[:16]})")
        datatype = config["input"][0]["data_type"].removeprefix("TYPE_")
        if datatype not in WIRE_TYPES:
            raise BackendUnavailable(f"Triton server {server}: {served[0]} takes {datatype}, not one of {', '.join(WIRE_TYPES)}")
        return cls(server, served[0], version, encoder.input, encoder.output, URGENT_PRIORITY if spec.urgent else ROUTINE_PRIORITY,
                   datatype, CACHE_PARAMETER in config.get("parameters", {}))

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._infer(pixel_values)

    def prefetch(self, pixel_values: np.ndarray) -> None:
        """Have the server compute and keep these images' embeddings (where ``keeps_embeddings``) for a job soon."""
        self._infer(pixel_values, {PREFETCH_PARAMETER: True})

    def _infer(self, pixel_values: np.ndarray, parameters: dict[str, bool] | None = None) -> np.ndarray:
        from http.client import HTTPException  # geventhttpclient's "connection closed" is one, not an OSError

        import tritonclient.http as http
        from tritonclient.utils import InferenceServerException

        batch = np.ascontiguousarray(pixel_values, dtype=WIRE_TYPES[self.datatype])
        request = http.InferInput(self.input_name, list(batch.shape), self.datatype)
        request.set_data_from_numpy(batch, binary_data=True)
        wanted = http.InferRequestedOutput(self.output_name, binary_data=True)
        try:
            if not hasattr(self._local, "client"):
                self._local.client = _client(self.server)
            result = self._local.client.infer(self.model, [request], outputs=[wanted], priority=self.priority,
                                                 parameters=parameters)
        except (InferenceServerException, OSError, HTTPException) as exc:
            raise ServerLost(f"Triton server {self.server} lost during inference ({_one_line(exc)}); "
                             "no SR written, the input is untouched: run the study again") from None
        try:
            features = result.as_numpy(self.output_name)
        except ValueError:  # tritonclient reshaping an output whose data is missing
            features = None
        if features is None or features.ndim != 2 or len(features) != len(batch) or not features.shape[1]:
            # a server whose model breaks its outputs answers 200 (tritonserver 2.51's Python backend, given numpy arrays under numpy 2)
            raise ServerLost(f"Triton server {self.server} answered {len(batch)} image(s) with an output of shape "
                             f"{None if features is None else features.shape}; no SR written, the input is untouched")
        return np.asarray(features, dtype=np.float32)


def _client(server: str) -> Any:
    import tritonclient.http as http

    return http.InferenceServerClient(server, connection_timeout=CONNECT_TIMEOUT_S, network_timeout=INFER_TIMEOUT_S)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
