"""ONNX Runtime backend: the package's ONNX image encoder on the CUDA provider where ``onnxruntime-gpu``
has it, else the CPU; fp32, fp16 (ONNX Runtime's own fused graph where the package has it), INT8
(dynamic, or explicit Q/DQ)."""

from __future__ import annotations

from typing import Any

import numpy as np

from operators.inference.backends.base import BackendSpec, BackendUnavailable
from operators.inference.model_package import ModelPackage


class OnnxRuntimeBackend:
    """An ONNX image encoder in ONNX Runtime: the CUDA provider where ``onnxruntime-gpu`` has it, else the CPU.

    ``cuda_graphs`` (CUDA provider only) captures one graph per batch shape on its first run of
    ``embed_tensor`` and replays it after; the input and output then live in fixed device buffers."""

    def __init__(self, onnx_path: str, input_name: str, output_name: str, precision: str = "fp32",
                 providers: list[Any] | None = None, threads: int = 0, cuda_graphs: bool = False) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
        self.ort = ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if providers is None:
            providers = ["CPUExecutionProvider"]
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"enable_cuda_graph": "1" if cuda_graphs else "0"}))
        errors = ort.capi.onnxruntime_pybind11_state
        try:
            self.session = ort.InferenceSession(onnx_path, options, providers=providers)
        except errors.Fail as exc:
            if not cuda_graphs:
                raise BackendUnavailable(f"{onnx_path}: ONNX Runtime cannot load it ({_first_line(exc)})") from exc
            # e.g. the plain exports: their shape arithmetic runs on the CPU, which graph capture refuses
            raise BackendUnavailable(f"{onnx_path}: ONNX Runtime cannot capture it in CUDA graphs ({exc}); "
                                     "use the fp16-ort variant or cuda_graphs false") from exc
        except (errors.InvalidProtobuf, errors.InvalidGraph, errors.InvalidArgument) as exc:
            # a file that passed the manifest's checksum but is not a model ONNX Runtime can run
            raise BackendUnavailable(f"{onnx_path}: ONNX Runtime cannot load it ({_first_line(exc)})") from exc
        self.onnx_path, self.input_name, self.output_name = onnx_path, input_name, output_name
        # the fp16 variant takes fp16 input (TensorRT strongly typed networks want the graph all fp16)
        self.input_dtype, self.output_dtype = (
            np.float16 if value.type == "tensor(float16)" else np.float32
            for value in (self.session.get_inputs()[0], self.session.get_outputs()[0]))
        provider = self.session.get_providers()[0]
        self.cuda_graphs = cuda_graphs and provider == "CUDAExecutionProvider"
        self._bound: dict[tuple[int, ...], tuple[Any, Any, Any, Any]] = {}
        self.name = f"onnxruntime-{provider}-{precision}" + ("-cudagraph" if self.cuda_graphs else "")

    @staticmethod
    def needs_gpu(spec: BackendSpec) -> bool:
        return False

    @classmethod
    def from_package(cls, package: ModelPackage, spec: BackendSpec) -> OnnxRuntimeBackend:
        """ONNX Runtime's own fused graph (the ``fp16-ort`` variant) where the package has it for this
        precision: 1.6x the plain fp16 graph on the CUDA provider, and the only one it can capture in CUDA
        graphs (the plain exports compute shapes on the CPU)."""
        encoder = package.manifest.image_encoder
        onnx_path = package.artefact(spec.precision, ("ort", "dynamic", "qdq"), flavour_first=True)
        return cls(str(onnx_path), encoder.input, encoder.output, spec.precision, cuda_graphs=spec.cuda_graphs)

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        if self.cuda_graphs:  # the graphs replay from fixed device buffers: go through them
            import torch

            return self.embed_tensor(torch.from_numpy(np.ascontiguousarray(pixel_values)).cuda()).float().cpu().numpy()
        batch = np.ascontiguousarray(pixel_values, dtype=self.input_dtype)
        (features,) = self.session.run([self.output_name], {self.input_name: batch})
        return features.astype(np.float32, copy=False)

    def embed_tensor(self, batch: Any) -> Any:
        """A torch tensor in, a torch tensor out, on the batch's device, through I/O binding (no host
        copies: the benchmarks, and ``embed`` with CUDA graphs). Each batch shape gets fixed input/output
        buffers, as CUDA graphs need; the output buffer is reused by the next call of that shape."""
        import torch

        shape = tuple(batch.shape)
        if shape not in self._bound:
            x = torch.empty(shape, dtype=getattr(torch, np.dtype(self.input_dtype).name), device=batch.device)
            y = torch.empty((shape[0], self.session.get_outputs()[0].shape[1]),
                            dtype=getattr(torch, np.dtype(self.output_dtype).name), device=batch.device)
            binding = self.session.io_binding()
            kind, index = batch.device.type, batch.device.index or 0
            binding.bind_input(self.input_name, kind, index, self.input_dtype, list(x.shape), x.data_ptr())
            binding.bind_output(self.output_name, kind, index, self.output_dtype, list(y.shape), y.data_ptr())
            run_options = self.ort.RunOptions()
            if self.cuda_graphs:  # one captured graph per shape, told apart by this id
                run_options.add_run_config_entry("gpu_graph_id", str(len(self._bound)))
            self._bound[shape] = (x, y, binding, run_options)
        x, y, binding, run_options = self._bound[shape]
        x.copy_(batch)
        if x.is_cuda:  # ONNX Runtime runs on its own stream: the copy must have landed
            torch.cuda.current_stream(x.device).synchronize()
        self.session.run_with_iobinding(binding, run_options)
        return y


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
