"""The image-embedding backends by name, and the choice of one: adding a backend is a module beside
this one and a line in ``BACKENDS`` (and its name in ``base.BACKEND_NAMES``).

A backend turns a float32 batch ``N x 3 x 224 x 224`` (already preprocessed) into image features
``N x D`` (float32, not normalised); normalisation and the zero-shot head live in
``operators.inference.zero_shot``.

| backend       | devices   | precisions                      | notes                                             |
|---------------|-----------|---------------------------------|---------------------------------------------------|
| ``tensorrt``  | CUDA      | fp16, int8 (Q/DQ ONNX), fp32    | engine built on the target GPU, cached on disk    |
| ``onnxruntime``| CUDA, CPU| fp32, fp16, int8 (dynamic, Q/DQ)| CUDA provider where ``onnxruntime-gpu`` is present |
| ``pytorch``   | CUDA, CPU | fp32, fp16, bf16, fp8 (Hopper)  | optional ``torch.compile`` and CUDA graphs        |
| ``triton``    | a server  | the server's model              | the app's ``-t``; no weights loaded here          |

``auto`` takes the first that loads, in this order: TensorRT fp16 on a CUDA GPU; PyTorch bf16 with
CUDA graphs on a CUDA GPU; ONNX Runtime fp32 on the CPU. INT8 is 2.2-2.6x faster on the CPU but is
not the default: on pydicom's test images INT8 dynamic reaches only cosine 0.9905 min vs fp32 and
changes the top-1 label of 6.5 % of them (docs/backends.md, recomputed by tests/integration/test_backends.py);
a site chooses it (``precision: int8``) after ``scripts/validate_model.py`` on its own images.
The chosen backend's name goes into the log and the SR's algorithm parameters.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from operators.inference.backends.base import (
    BACKEND_NAMES,
    BackendFactory,
    BackendSpec,
    BackendUnavailable,
    ImageEmbeddingBackend,
)
from operators.inference.backends.onnxruntime import OnnxRuntimeBackend
from operators.inference.backends.pytorch import TorchBackend
from operators.inference.backends.tensorrt import TensorRTBackend
from operators.inference.backends.triton import TritonBackend
from operators.inference.model_package import MissingArtefact, ModelPackage

logger = logging.getLogger(__name__)

BACKENDS: dict[str, BackendFactory] = {
    "tensorrt": TensorRTBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "pytorch": TorchBackend,
    "triton": TritonBackend,
}
if tuple(BACKENDS) != BACKEND_NAMES:
    raise ImportError(f"backends.base.BACKEND_NAMES {BACKEND_NAMES} does not list the registry's {tuple(BACKENDS)}")


def auto_candidates(package: ModelPackage) -> list[BackendSpec]:
    """The documented ``auto`` order, best first. On the CPU the exact fp32 graph: INT8's loss is
    measurable (module docstring), so a site opts in after validating it on its own images."""
    return [
        BackendSpec("tensorrt", "fp16"),
        BackendSpec("pytorch", "bf16", cuda_graphs=True),
        BackendSpec("onnxruntime", "fp32"),
        BackendSpec("pytorch", "fp32"),
    ]


def create_backend(spec: BackendSpec, package: ModelPackage) -> ImageEmbeddingBackend:
    if spec.triton_server:
        return _triton_or_fallback(spec, package)
    if spec.backend != "auto":
        return BACKENDS[spec.backend].from_package(package, spec)
    reasons = []
    for candidate in auto_candidates(package):
        factory = BACKENDS[candidate.backend]
        if factory.needs_gpu(candidate) and not _cuda_available():
            reasons.append(f"{candidate.backend}-{candidate.precision}: no CUDA device")
            continue
        try:
            backend = factory.from_package(package, candidate)
        except (BackendUnavailable, MissingArtefact, ImportError) as exc:
            reasons.append(f"{candidate.backend}-{candidate.precision}: {exc}")
            continue
        logger.info("Backend auto-selected: %s (skipped: %s)", backend.name, "; ".join(reasons) or "none")
        return backend
    raise BackendUnavailable("no inference backend could be loaded: " + "; ".join(reasons))


class LocalFallback:
    """A local backend used because the Triton server could not be (``inference.triton_fallback``): its
    name says so, and why, in the log, run_report.json and the SR's algorithm parameters."""

    def __init__(self, local: ImageEmbeddingBackend, reason: str) -> None:
        self.local = local
        self.name = f"{local.name} (local fallback: {reason})"

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.local.embed(pixel_values)


def _triton_or_fallback(spec: BackendSpec, package: ModelPackage) -> ImageEmbeddingBackend:
    try:
        return BACKENDS["triton"].from_package(package, spec)
    except BackendUnavailable as exc:
        if not spec.triton_fallback:
            raise
        reason = str(exc)
    local = create_backend(replace(spec, backend="auto" if spec.backend == "triton" else spec.backend, triton_server=None), package)
    logger.warning("%s: inference.triton_fallback is on, running locally on %s", reason, local.name)
    return LocalFallback(local, reason)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
