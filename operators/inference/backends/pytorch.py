"""PyTorch backend: the image tower rebuilt from the package's safetensors, eager or compiled, with
optional CUDA graphs; fp32, fp16, bf16, and FP8 on Hopper-class GPUs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from operators.inference.backends.base import BackendSpec, BackendUnavailable
from operators.inference.backends.fp8 import calibrate_fp8, to_fp8
from operators.inference.model_package import ModelPackage


class TorchBackend:
    """The image tower in PyTorch: eager or ``torch.compile``, optional CUDA graphs, fp32/fp16/bf16/fp8.

    On CUDA in reduced precision the tower's patch embedding and MLP GELU are rewritten into fewer
    kernels (``operators.inference.backends.vit_kernels``); ``fused_kernels=False`` keeps timm's modules as they are."""

    def __init__(self, tower: Any, device: str = "cpu", precision: str = "fp32", compile: bool = False,
                 cuda_graphs: bool = False, calibration: np.ndarray | None = None, compile_mode: str = "default",
                 fused_kernels: bool = True) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device")
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.bfloat16}.get(precision)
        if dtype is None:
            raise BackendUnavailable(f"PyTorch backend has no {precision} path")
        tower = tower.eval().to(self.device, dtype)
        fused = fused_kernels and self.device.type == "cuda" and precision != "fp32"  # fp32 stays the reference
        if fused:
            from operators.inference.backends.vit_kernels import fuse_kernels

            fuse_kernels(tower, gelu_epilogue=precision != "fp8")
        if precision == "fp8":
            if self.device.type != "cuda" or torch.cuda.get_device_capability(self.device) < (8, 9):
                raise BackendUnavailable("FP8 needs a CUDA GPU of compute capability >= 8.9")
            tower = to_fp8(tower)
            if calibration is not None:
                calibrate_fp8(tower, [torch.from_numpy(calibration[i : i + 64]).to(self.device, dtype)
                                      for i in range(0, len(calibration), 64)])
        self.dtype = dtype
        # Inductor's default mode unless asked: max-autotune costs minutes per batch shape.
        self.forward: Callable[[Any], Any] = torch.compile(tower, mode=compile_mode) if compile else tower
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[tuple[int, ...], Any], tuple[Any, Any, Any]] = {}
        precision_name = precision + ("-static" if precision == "fp8" and calibration is not None else "")
        parts = (["pytorch", self.device.type, precision_name] + (["fused"] if fused else []) + (["compile"] if compile else [])
                 + (["cudagraph"] if self.cuda_graphs else []))
        self.name = "-".join(parts)

    @staticmethod
    def needs_gpu(spec: BackendSpec) -> bool:
        return spec.precision != "fp32"  # reduced precision on the CPU is slower than fp32, not faster

    @classmethod
    def from_package(cls, package: ModelPackage, spec: BackendSpec, device: str | None = None) -> TorchBackend:
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(package.image_tower(), device, spec.precision, spec.compile, spec.cuda_graphs)

    def graph_for(self, shape: tuple[int, ...], lane_stream: Any = None) -> tuple[Any, Any, Any]:
        """The CUDA graph ``(graph, input, output)`` of one batch shape, captured on ``lane_stream`` where
        given (the benchmark's concurrent lanes); each capture has its own memory pool."""
        torch = self.torch
        if (shape, lane_stream) not in self._graphs:
            static_in = torch.zeros(shape, device=self.device, dtype=self.dtype)
            # Lanes warm up and capture on their own streams: cuBLAS keeps one workspace per stream, so graphs
            # captured on one stream share it and their concurrent replays would overwrite each other's.
            stream = lane_stream or torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(2):  # warm-up (and autotuning) outside the capture
                    self.forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=lane_stream), torch.inference_mode():
                static_out = self.forward(static_in)
            self._graphs[(shape, lane_stream)] = (graph, static_in, static_out)
        return self._graphs[(shape, lane_stream)]

    def embed_tensor(self, batch: Any) -> Any:
        """Device tensor in, device tensor out (used by benchmarks to leave out host copies)."""
        if self.cuda_graphs:
            graph, static_in, static_out = self.graph_for(tuple(batch.shape))
            static_in.copy_(batch)
            graph.replay()
            return static_out
        with self.torch.inference_mode():
            return self.forward(batch.to(self.dtype))

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        batch = self.torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device, self.dtype)
        return self.embed_tensor(batch).float().cpu().numpy()
