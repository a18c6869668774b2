"""Image-embedding backends: one interface, so the inference operator never changes.

A backend turns a float32 batch ``N x 3 x 224 x 224`` (already preprocessed) into raw image
features ``N x D``; normalisation and the zero-shot head live in ``operators.zero_shot``.

Available now: ONNX Runtime (CPU; the CUDA provider where ``onnxruntime-gpu`` is installed) and
PyTorch (eager, fp32). TensorRT plugs in here as another ``ImageEmbeddingBackend``.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

import numpy as np

from operators.model_package import ModelPackage

logger = logging.getLogger(__name__)


class ImageEmbeddingBackend(Protocol):
    #: e.g. "onnxruntime-CPUExecutionProvider-fp32"; recorded in the SR's algorithm parameters.
    name: str

    def embed(self, pixel_values: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeBackend:
    def __init__(self, package: ModelPackage, providers: list[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(package.onnx_path), options, providers=providers)
        self.input_name = package.manifest["image_encoder"]["input"]
        self.output_name = package.manifest["image_encoder"]["output"]
        self.name = f"onnxruntime-{self.session.get_providers()[0]}-fp32"

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        (features,) = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(pixel_values)})
        return features


class TorchBackend:
    """The image tower rebuilt with open_clip from the package's config and safetensors weights."""

    def __init__(self, package: ModelPackage, device: str = "cpu") -> None:
        import torch
        from open_clip.model import CLIPVisionCfg, _build_vision_tower
        from safetensors.torch import load_file

        config = json.loads((package.root / "open_clip_config.json").read_text())["model_cfg"]
        tower = _build_vision_tower(config["embed_dim"], CLIPVisionCfg(**config["vision_cfg"]))
        tower.load_state_dict(load_file(str(package.root / package.manifest["image_encoder"]["safetensors"])))
        self.torch = torch
        self.device = torch.device(device)
        self.tower = tower.eval().to(self.device)
        self.name = f"pytorch-{self.device.type}-fp32"

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            features = self.tower(self.torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device))
        return features.float().cpu().numpy()


BACKENDS = {"onnxruntime": OnnxRuntimeBackend, "pytorch": TorchBackend}
#: ``auto`` tries these in order and takes the first that loads.
AUTO_ORDER = ("onnxruntime", "pytorch")


def create_backend(name: str, package: ModelPackage) -> ImageEmbeddingBackend:
    if name != "auto":
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; choose one of {['auto', *BACKENDS]}")
        return BACKENDS[name](package)
    errors = []
    for candidate in AUTO_ORDER:
        try:
            backend = BACKENDS[candidate](package)
        except ImportError as exc:  # a backend whose runtime is not installed
            errors.append(f"{candidate}: {exc}")
            continue
        logger.info("Backend auto-selected: %s", backend.name)
        return backend
    raise RuntimeError("no inference backend could be loaded: " + "; ".join(errors))


def embed_in_batches(backend: ImageEmbeddingBackend, pixel_values: np.ndarray, batch_size: int) -> np.ndarray:
    if len(pixel_values) == 0:
        raise ValueError("no images to embed")
    return np.concatenate(
        [backend.embed(pixel_values[i : i + batch_size]) for i in range(0, len(pixel_values), batch_size)]
    )


__all__ = ["ImageEmbeddingBackend", "OnnxRuntimeBackend", "TorchBackend", "create_backend", "embed_in_batches"]
