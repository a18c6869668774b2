"""What every image-embedding backend shares: the interface, the spec that chooses one, its error.

A backend turns a float32 batch ``N x 3 x 224 x 224`` (already preprocessed) into image features
``N x D`` (float32, not normalised); normalisation and the zero-shot head live in
``operators.inference.zero_shot``. The backends themselves are one module each beside this one;
``registry`` names them and picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from operators.inference.model_package import ModelPackage

#: The backends of ``registry.BACKENDS``, by name; a plain tuple, so that the spec needs no import of the backends.
BACKEND_NAMES = ("tensorrt", "onnxruntime", "pytorch", "triton")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")


class ImageEmbeddingBackend(Protocol):
    #: e.g. "onnxruntime-CPUExecutionProvider-int8"; recorded in the SR's algorithm parameters.
    name: str

    def embed(self, pixel_values: np.ndarray) -> np.ndarray: ...


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (runtime not installed, no GPU, artefact missing)."""


@dataclass(frozen=True)
class BackendSpec:
    backend: str = "auto"  # auto | one of BACKEND_NAMES
    precision: str = "fp32"
    compile: bool = False  # pytorch: torch.compile
    cuda_graphs: bool = False  # pytorch, onnxruntime CUDA: replay captured CUDA graphs per batch size
    #: HOST:PORT of a Triton server (the app's -t): the image encoder runs there, ``backend`` is the local one
    #: used instead only where ``triton_fallback`` allows it
    triton_server: str | None = None
    triton_fallback: bool = False
    #: an urgent study (``python app --priority urgent``): its requests go at Triton's higher priority level
    urgent: bool = False

    def __post_init__(self) -> None:
        if self.backend not in ("auto", *BACKEND_NAMES):
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {['auto', *BACKEND_NAMES]}")
        if self.backend == "triton" and not self.triton_server:
            raise ValueError("backend 'triton' needs a server: -t HOST:PORT or TRITON_SERVER_NETLOC")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}")


class BackendFactory(Protocol):
    """What a backend class offers the registry."""

    @staticmethod
    def needs_gpu(spec: BackendSpec) -> bool: ...

    @classmethod
    def from_package(cls, package: ModelPackage, spec: BackendSpec) -> ImageEmbeddingBackend: ...


def embed_in_batches(backend: ImageEmbeddingBackend, pixel_values: np.ndarray, batch_size: int) -> np.ndarray:
    if len(pixel_values) == 0:
        raise ValueError("no images to embed")
    return np.concatenate(
        [backend.embed(pixel_values[i : i + batch_size]) for i in range(0, len(pixel_values), batch_size)]
    )
