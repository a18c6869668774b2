"""Image-embedding backends: one interface, so the inference operator never changes.

A backend turns a float32 batch ``N x 3 x 224 x 224`` (already preprocessed) into image features
``N x D`` (float32, not normalised); normalisation and the zero-shot head live in
``operators.zero_shot``.

| backend       | devices   | precisions                      | notes                                             |
|---------------|-----------|---------------------------------|---------------------------------------------------|
| ``tensorrt``  | CUDA      | fp16, int8 (Q/DQ ONNX), fp32    | engine built on the target GPU, cached on disk    |
| ``onnxruntime``| CUDA, CPU| fp32, fp16, int8 (dynamic, Q/DQ)| CUDA provider where ``onnxruntime-gpu`` is present |
| ``pytorch``   | CUDA, CPU | fp32, fp16, bf16, fp8 (Hopper)  | optional ``torch.compile`` and CUDA graphs        |

``auto`` takes the first that loads, in this order: TensorRT fp16 on a CUDA GPU; PyTorch bf16 with
CUDA graphs on a CUDA GPU; ONNX Runtime on the CPU, INT8 (dynamic) where the package has that
artefact (measured 2.2-2.6x faster than fp32 at cosine >= 0.998 on 2 cores, BENCHMARKS.md), else fp32.
The chosen backend's name goes into the log and the SR's algorithm parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from operators.model_package import MissingArtefact, ModelPackage

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")


class ImageEmbeddingBackend(Protocol):
    #: e.g. "onnxruntime-CPUExecutionProvider-int8"; recorded in the SR's algorithm parameters.
    name: str

    def embed(self, pixel_values: np.ndarray) -> np.ndarray: ...


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (runtime not installed, no GPU, artefact missing)."""


@dataclass(frozen=True)
class BackendSpec:
    backend: str = "auto"  # auto | tensorrt | onnxruntime | pytorch
    precision: str = "fp32"
    compile: bool = False  # pytorch: torch.compile
    cuda_graphs: bool = False  # pytorch, onnxruntime CUDA: replay captured CUDA graphs per batch size

    def __post_init__(self) -> None:
        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {['auto', *BACKENDS]}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}")


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
        try:
            self.session = ort.InferenceSession(onnx_path, options, providers=providers)
        except ort.capi.onnxruntime_pybind11_state.Fail as exc:
            if not cuda_graphs:
                raise
            # e.g. the plain exports: their shape arithmetic runs on the CPU, which graph capture refuses
            raise BackendUnavailable(f"{onnx_path}: ONNX Runtime cannot capture it in CUDA graphs ({exc}); "
                                     "use the fp16-ort variant or cuda_graphs false") from exc
        self.onnx_path, self.input_name, self.output_name = onnx_path, input_name, output_name
        # the fp16 variant takes fp16 input (TensorRT strongly typed networks want the graph all fp16)
        self.input_dtype, self.output_dtype = (
            np.float16 if value.type == "tensor(float16)" else np.float32
            for value in (self.session.get_inputs()[0], self.session.get_outputs()[0]))
        provider = self.session.get_providers()[0]
        self.cuda_graphs = cuda_graphs and provider == "CUDAExecutionProvider"
        self._bound: dict[tuple[int, ...], tuple[Any, Any, Any, Any]] = {}
        self.name = f"onnxruntime-{provider}-{precision}" + ("-cudagraph" if self.cuda_graphs else "")

    @classmethod
    def from_package(cls, package: ModelPackage, spec: BackendSpec) -> "OnnxRuntimeBackend":
        """ONNX Runtime's own fused graph (the ``fp16-ort`` variant) where the package has it for this
        precision: 1.6x the plain fp16 graph on the CUDA provider, and the only one it can capture in CUDA
        graphs (the plain exports compute shapes on the CPU)."""
        encoder = package.manifest["image_encoder"]
        onnx_path = package.artefact(spec.precision, ("ort", "dynamic", "qdq"), flavour_first=True)
        return cls(str(onnx_path), encoder["input"], encoder["output"], spec.precision, cuda_graphs=spec.cuda_graphs)

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


FP8_MAX = 448.0  # largest finite float8_e4m3fn


def _fp8_linear(linear: Any) -> Any:
    """nn.Linear -> FP8 (e4m3) matmul with per-tensor scales: static for weights; for activations
    static once calibrated (``calibrate_fp8``), dynamic (an amax pass per call) until then."""
    import torch

    class Fp8Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            weight = linear.weight.detach().float()
            self.register_buffer("w_scale", weight.abs().max().clamp(min=1e-12) / FP8_MAX)
            # _scaled_mm wants the second operand column-major: a transposed row-major weight is.
            self.register_buffer("w_fp8", (weight / self.w_scale).to(torch.float8_e4m3fn).t())
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))
            self.register_buffer("x_scale", torch.ones((), device=weight.device))
            self.static = False  # a Python flag, not a tensor test: torch.compile specialises on it
            # Fast accumulation (Hopper): +4 % throughput at the same fidelity as promoted accumulation (measured).
            self.fast_accum = True
            self.observed_amax: torch.Tensor | None = None  # set while calibrating

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1])
            if self.observed_amax is not None:
                self.observed_amax = torch.maximum(self.observed_amax, flat.abs().amax().float())
            if self.static:
                x_scale = self.x_scale
            else:
                x_scale = flat.abs().amax().float().clamp(min=1e-12) / FP8_MAX
            # Saturate: a cast of an out-of-range value to e4m3 gives NaN, not the largest value.
            x_fp8 = (flat.float() / x_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
            y = torch._scaled_mm(x_fp8, self.w_fp8, scale_a=x_scale, scale_b=self.w_scale, bias=self.bias,
                                 out_dtype=torch.bfloat16, use_fast_accum=self.fast_accum)
            return y.reshape(*x.shape[:-1], y.shape[-1])

    return Fp8Linear()


def replace_linears(module: Any, factory: Callable[[Any], Any], select: Callable[[str, Any], bool] = lambda name, linear: True) -> Any:
    """Replace (in place) every nn.Linear under ``module`` that ``select(name, linear)`` accepts by ``factory(linear)``."""
    import torch

    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear) and select(name, child):
            setattr(module, name, factory(child))
        else:
            replace_linears(child, factory, select)
    return module


def to_fp8(module: Any) -> Any:
    """Swap the transformer blocks' linear layers for FP8 ones (needs compute capability >= 8.9)."""
    return replace_linears(module, _fp8_linear, lambda name, linear: linear.in_features % 16 == 0 and linear.out_features % 16 == 0)


def calibrate_fp8(module: Any, batches: list[Any]) -> None:
    """Static activation scales (per-tensor amax over calibration batches / 448), as TensorRT's FP8 Q/DQ."""
    import torch

    layers = [m for m in module.modules() if hasattr(m, "observed_amax")]
    for layer in layers:
        layer.static = False
        layer.observed_amax = torch.zeros((), device=layer.x_scale.device)
    with torch.inference_mode():
        for batch in batches:
            module(batch)
    for layer in layers:
        layer.x_scale.copy_(layer.observed_amax.clamp(min=1e-12) / FP8_MAX)
        layer.observed_amax = None
        layer.static = True


class TorchBackend:
    """The image tower in PyTorch: eager or ``torch.compile``, optional CUDA graphs, fp32/fp16/bf16/fp8.

    On CUDA in reduced precision the tower's patch embedding and MLP GELU are rewritten into fewer
    kernels (``operators.vit_kernels``); ``fused_kernels=False`` keeps timm's modules as they are.

    ``streams > 1`` (with CUDA graphs; ``embed_tensors``) keeps that many batches in flight, each replaying
    its own graph on its own CUDA stream. Measured on a lent H200 (BENCHMARKS.md): it adds images/s only
    while one batch leaves the GPU idle (batch 1: x1.4-1.8, batch 8: +9 %), never past what one larger
    batch gives, and nothing at batch >= 64; so the app runs one lane and only the benchmark uses more."""

    def __init__(self, tower: Any, device: str = "cpu", precision: str = "fp32", compile: bool = False,
                 cuda_graphs: bool = False, calibration: np.ndarray | None = None, compile_mode: str = "default",
                 fused_kernels: bool = True, streams: int = 1) -> None:
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
            from operators.vit_kernels import fuse_kernels

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
        self.streams = streams if self.cuda_graphs else 1
        self._lanes = [torch.cuda.Stream(self.device) for _ in range(self.streams)] if self.streams > 1 else []
        self._graphs: dict[tuple[tuple[int, ...], int], tuple[Any, Any, Any]] = {}
        precision_name = precision + ("-static" if precision == "fp8" and calibration is not None else "")
        parts = (["pytorch", self.device.type, precision_name] + (["fused"] if fused else []) + (["compile"] if compile else [])
                 + (["cudagraph"] if self.cuda_graphs else []) + ([f"{self.streams}streams"] if self.streams > 1 else []))
        self.name = "-".join(parts)

    @classmethod
    def from_package(cls, package: ModelPackage, spec: BackendSpec, device: str | None = None) -> "TorchBackend":
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(package.image_tower(), device, spec.precision, spec.compile, spec.cuda_graphs)

    def _graph_for(self, shape: tuple[int, ...], lane: int = 0) -> tuple[Any, Any, Any]:
        """The CUDA graph of one batch shape for one lane; each capture has its own memory pool."""
        torch = self.torch
        if (shape, lane) not in self._graphs:
            static_in = torch.zeros(shape, device=self.device, dtype=self.dtype)
            # Lanes warm up and capture on their own streams: cuBLAS keeps one workspace per stream, so graphs
            # captured on one stream share it and their concurrent replays would overwrite each other's.
            lane_stream = self._lanes[lane] if self._lanes else None
            stream = lane_stream or torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(2):  # warm-up (and autotuning) outside the capture
                    self.forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=lane_stream), torch.inference_mode():
                static_out = self.forward(static_in)
            self._graphs[(shape, lane)] = (graph, static_in, static_out)
        return self._graphs[(shape, lane)]

    def embed_tensor(self, batch: Any) -> Any:
        """Device tensor in, device tensor out (used by benchmarks to leave out host copies)."""
        if self.cuda_graphs:
            graph, static_in, static_out = self._graph_for(tuple(batch.shape))
            static_in.copy_(batch)
            graph.replay()
            return static_out
        with self.torch.inference_mode():
            return self.forward(batch.to(self.dtype))

    def embed_tensors(self, batches: Sequence[Any]) -> list[Any]:
        """Up to ``streams`` device batches at once, each on its own lane (stream + graph); the outputs
        are the lanes' graph buffers, valid until the next call."""
        if len(batches) > max(self.streams, 1):
            raise ValueError(f"{len(batches)} batches for {self.streams} streams")
        if self.streams == 1:
            return [self.embed_tensor(batch) for batch in batches]
        torch = self.torch
        main = torch.cuda.current_stream(self.device)
        outputs = []
        for lane, batch in enumerate(batches):
            graph, static_in, static_out = self._graph_for(tuple(batch.shape), lane)
            stream = self._lanes[lane]
            stream.wait_stream(main)  # the input is ready, the lane's last output has been read
            with torch.cuda.stream(stream):
                static_in.copy_(batch)
                graph.replay()
            outputs.append(static_out)
        for stream in self._lanes[: len(batches)]:
            main.wait_stream(stream)
        return outputs

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        batch = self.torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device, self.dtype)
        return self.embed_tensor(batch).float().cpu().numpy()


def _tensorrt(package: ModelPackage, spec: BackendSpec) -> ImageEmbeddingBackend:
    from operators.tensorrt_backend import TensorRTBackend

    return TensorRTBackend.from_package(package, spec)


BACKENDS: dict[str, Callable[[ModelPackage, BackendSpec], ImageEmbeddingBackend]] = {
    "tensorrt": _tensorrt,
    "onnxruntime": OnnxRuntimeBackend.from_package,
    "pytorch": TorchBackend.from_package,
}


def auto_candidates(package: ModelPackage) -> list[tuple[str, BackendSpec]]:
    """The documented ``auto`` order, best first."""
    cpu_onnx = BackendSpec("onnxruntime", "int8" if package.has_artefact("int8") else "fp32")
    return [
        ("tensorrt", BackendSpec("tensorrt", "fp16")),
        ("pytorch", BackendSpec("pytorch", "bf16", cuda_graphs=True)),
        ("onnxruntime", cpu_onnx),
        ("pytorch", BackendSpec("pytorch", "fp32")),
    ]


def _needs_gpu(name: str, spec: BackendSpec) -> bool:
    return name == "tensorrt" or (name == "pytorch" and spec.precision != "fp32")


def create_backend(spec: BackendSpec, package: ModelPackage) -> ImageEmbeddingBackend:
    if spec.backend != "auto":
        return BACKENDS[spec.backend](package, spec)
    reasons = []
    for name, candidate in auto_candidates(package):
        if _needs_gpu(name, candidate) and not _cuda_available():
            reasons.append(f"{name}-{candidate.precision}: no CUDA device")
            continue
        try:
            backend = BACKENDS[name](package, candidate)
        except (BackendUnavailable, MissingArtefact, ImportError) as exc:
            reasons.append(f"{name}-{candidate.precision}: {exc}")
            continue
        logger.info("Backend auto-selected: %s (skipped: %s)", backend.name, "; ".join(reasons) or "none")
        return backend
    raise BackendUnavailable("no inference backend could be loaded: " + "; ".join(reasons))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def embed_in_batches(backend: ImageEmbeddingBackend, pixel_values: np.ndarray, batch_size: int) -> np.ndarray:
    if len(pixel_values) == 0:
        raise ValueError("no images to embed")
    return np.concatenate(
        [backend.embed(pixel_values[i : i + batch_size]) for i in range(0, len(pixel_values), batch_size)]
    )
