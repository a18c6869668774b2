"""TensorRT backend (TensorRT 10.x and 11.x): engine built from the package's ONNX on the target GPU.

- Precision: fp16 from the ``fp16`` ONNX variant as a *strongly typed* network (the precision is in
  the graph: TensorRT 11 removed the FP16/INT8 builder flags; on 10.x the same strongly typed path is
  used, so both versions build the same engine). INT8 from the ``int8-qdq`` variant (explicit Q/DQ;
  implicit INT8 calibration is deprecated in 10 and gone in 11); FP8 (compute capability >= 8.9)
  from the ``fp8-qdq`` variant (fp16 graph, FP8 Q/DQ on the linear layers). fp32 from the plain ONNX.
- One optimisation profile, dynamic batch ``1 .. max_batch`` (optimum ``opt_batch``).
- Engine and timing cache on disk under ``cache_dir`` (``$BIOMEDCLIP_ENGINE_CACHE``, else
  ``$HOLOSCAN_WORKDIR/engine-cache``, else ``~/.cache/biomedclip-map``), the file name being a key of
  GPU name + compute capability, TensorRT version, ONNX sha256 and build options: any change
  rebuilds. Files are written atomically under an exclusive lock, so two app instances never read a
  half-written engine and never build the same engine twice.
- Inference: ``execute_async_v3`` on a dedicated CUDA stream with device-resident input/output
  buffers (PyTorch CUDA tensors), one host copy in and one out per batch.

Nothing here runs on a machine without ``tensorrt`` and a CUDA GPU; the key, cache and locking logic
is plain Python and is tested everywhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from operators.atomic import write_atomically
from operators.imaging.preprocessing import IMAGE_SIZE
from operators.inference.backends.base import BackendSpec, BackendUnavailable
from operators.inference.model_package import ModelPackage, sha256_file

logger = logging.getLogger(__name__)

#: Which ONNX variant each TensorRT precision is built from.
ONNX_VARIANT = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-qdq", "fp8": "fp8-qdq"}


@dataclass(frozen=True)
class EngineOptions:
    precision: str
    max_batch: int = 256
    opt_batch: int = 64
    workspace_mib: int = 4096


@dataclass(frozen=True)
class EngineKey:
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    onnx_sha256: str
    options: EngineOptions

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]

    def engine_file(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / f"biomedclip-{self.options.precision}-{self.digest()}.engine"

    def timing_cache_file(self, cache_dir: Path) -> Path:
        # Timing caches are valid across builds of the same GPU and TensorRT version.
        safe = "".join(c if c.isalnum() else "_" for c in f"{self.gpu_name}-{self.compute_capability}-{self.tensorrt_version}")
        return Path(cache_dir) / f"timing-{safe}.cache"


def default_cache_dir() -> Path:
    if os.environ.get("BIOMEDCLIP_ENGINE_CACHE"):
        return Path(os.environ["BIOMEDCLIP_ENGINE_CACHE"])
    if os.environ.get("HOLOSCAN_WORKDIR"):
        return Path(os.environ["HOLOSCAN_WORKDIR"]) / "engine-cache"
    return Path.home() / ".cache" / "biomedclip-map"


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_engine(key: EngineKey, cache_dir: Path, build: Callable[[], bytes]) -> bytes:
    """The serialised engine for ``key``: read from the cache, or built once (under a lock) and stored."""
    engine_file = key.engine_file(cache_dir)
    if engine_file.is_file():
        return engine_file.read_bytes()
    with exclusive_lock(engine_file.with_suffix(".lock")):
        if engine_file.is_file():  # another instance built it while we waited
            return engine_file.read_bytes()
        logger.info("Building TensorRT engine %s (first run on this GPU; cached afterwards)", engine_file.name)
        serialized = build()
        write_atomically(engine_file, lambda f: f.write(serialized))
        return serialized


def _major(version: str) -> int:
    return int(version.split(".")[0])


def build_serialized_engine(trt: Any, onnx_path: Path, options: EngineOptions, timing_cache: Path) -> bytes:
    """ONNX -> serialised engine with the TensorRT 10/11 builder API (strongly typed network)."""
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if _major(trt.__version__) < 10:
        raise BackendUnavailable(f"TensorRT {trt.__version__} is too old (10 or newer needed)")
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    name = network.get_input(0).name
    profile = builder.create_optimization_profile()
    image = (3, IMAGE_SIZE, IMAGE_SIZE)
    profile.set_shape(name, (1, *image), (options.opt_batch, *image), (options.max_batch, *image))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine from {onnx_path.name}")
    timing = config.get_timing_cache().serialize()
    write_atomically(timing_cache, lambda f: f.write(bytes(timing)))
    return bytes(serialized)


class TensorRTBackend:
    def __init__(self, onnx_path: Path, options: EngineOptions, cache_dir: Path | None = None, device: int = 0) -> None:
        try:
            import tensorrt as trt
            import torch
        except ImportError as exc:
            raise BackendUnavailable(f"tensorrt is not installed ({exc})") from None
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device")
        self.torch = torch
        self.device = torch.device("cuda", device)
        properties = torch.cuda.get_device_properties(self.device)
        key = EngineKey(
            gpu_name=properties.name,
            compute_capability=f"{properties.major}.{properties.minor}",
            tensorrt_version=trt.__version__,
            onnx_sha256=sha256_file(onnx_path),
            options=options,
        )
        cache_dir = Path(cache_dir or default_cache_dir())
        serialized = cached_engine(
            key, cache_dir, lambda: build_serialized_engine(trt, onnx_path, options, key.timing_cache_file(cache_dir))
        )
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise BackendUnavailable("the cached TensorRT engine could not be deserialised")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.input_dtype = _torch_dtype(torch, self.engine.get_tensor_dtype(self.input_name), trt)
        self.output_dtype = _torch_dtype(torch, self.engine.get_tensor_dtype(self.output_name), trt)
        self.max_batch = options.max_batch
        self.stream = torch.cuda.Stream(self.device)
        self.name = f"tensorrt-{trt.__version__}-{options.precision}"

    @staticmethod
    def needs_gpu(spec: BackendSpec) -> bool:
        return True

    @classmethod
    def from_package(cls, package: ModelPackage, spec: BackendSpec) -> TensorRTBackend:
        if spec.precision not in ONNX_VARIANT:
            raise BackendUnavailable(f"TensorRT backend has no {spec.precision} path")
        onnx_path = package.artefact(ONNX_VARIANT[spec.precision], preferred=())
        return cls(onnx_path, EngineOptions(spec.precision))

    def embed_tensor(self, batch: Any) -> Any:
        """Device tensor ``N x 3 x 224 x 224`` in, device tensor ``N x D`` out (on this backend's stream)."""
        torch = self.torch
        if batch.shape[0] > self.max_batch:
            raise ValueError(f"batch {batch.shape[0]} exceeds the engine's max batch {self.max_batch}")
        with torch.cuda.stream(self.stream):
            batch = batch.to(self.device, self.input_dtype).contiguous()
            self.context.set_input_shape(self.input_name, tuple(batch.shape))
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), device=self.device, dtype=self.output_dtype)
            self.context.set_tensor_address(self.input_name, batch.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        return out

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        pinned = self.torch.from_numpy(np.ascontiguousarray(pixel_values)).pin_memory()
        with self.torch.cuda.stream(self.stream):
            out = self.embed_tensor(pinned.to(self.device, non_blocking=True)).float().cpu()
        self.stream.synchronize()
        return out.numpy()


def _torch_dtype(torch: Any, dtype: Any, trt: Any) -> Any:
    return {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16}[dtype]
