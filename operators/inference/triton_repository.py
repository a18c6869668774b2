"""The Triton Inference Server model repository inside a model package (``triton/``), and its identity.

Layout (written by ``scripts/build_model.py``; ``docs/backends.md`` "Triton"):

    triton/
      biomedclip_image_encoder_python/   backend "python": model.py wraps this project's ONNX Runtime backend
        config.pbtxt                     on the package's fp32 ``image_encoder.onnx`` (the server that the
        1/model.py                       nvidia-pytriton wheel bundles has only the Python backend)
      biomedclip_image_encoder_pytorch/  backend "python" on a GPU: the same model.py wrapping this project's
        config.pbtxt                     PyTorch backend, bf16, torch.compile + CUDA graphs (the fastest path
        1/model.py                       measured on an H200, docs/backends.md); loaded only where the server's
                                         environment has torch and a CUDA device
      biomedclip_image_encoder_onnx/     backend "onnxruntime" (NVIDIA's Triton container): the same graph
        config.pbtxt
        1/model.onnx -> ../../../image_encoder.onnx   (a relative link: the package moves as one folder)
      biomedclip_image_encoder_trt/      platform "tensorrt_plan": ``1/model.plan`` is built on the target
        config.pbtxt                     GPU (docs/deployment.md); until then the server does not load it
      biomedclip_image_encoder_python_int8/   where the package has an int8 variant: the Python model on
        config.pbtxt                     the graph the local int8 backend runs (int8-dynamic first), for clients
        1/model.py                       whose ``inference.precision`` is int8 (1.5-2.6x fp32 on this CPU)

Every model takes ``pixel_values`` (N x 3 x 224 x 224: float32, float16 for the PyTorch model, ``INPUT_TYPE``)
and returns ``image_features`` (N x 512 float32), batched by Triton's dynamic batcher with two priority levels
(1 = urgent, 2 = routine). Each
config carries the sha256 of the package's fp32 ONNX graph (the manifest's entry) as the parameter
``image_encoder_sha256``: the client reads it from the model configuration and refuses a server that
holds another model version. The CPU Python models' configs also set ``embedding_cache_images``: the images
of the listener's prefetch requests (``biomedclip_prefetch``) are kept, by SHA-256, for the job that follows
(``embedding_cache``).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = "triton"
#: The models a client may use, best first: a GPU-built TensorRT plan, PyTorch on a GPU, ONNX Runtime, the
#: Python backend on the CPU.
TENSORRT_MODEL, PYTORCH_MODEL, ONNX_MODEL, PYTHON_MODEL = (
    "biomedclip_image_encoder_trt", "biomedclip_image_encoder_pytorch", "biomedclip_image_encoder_onnx",
    "biomedclip_image_encoder_python")
MODEL_PREFERENCE = (TENSORRT_MODEL, PYTORCH_MODEL, ONNX_MODEL, PYTHON_MODEL)
#: The models of a precision other than the default, by the ``inference.precision`` that asks for them: written
#: where the package has an ONNX variant of that precision. A client asking for it uses that model and no other.
PYTHON_INT8_MODEL = "biomedclip_image_encoder_python_int8"
PRECISION_MODELS = {"int8": PYTHON_INT8_MODEL}
ALL_MODELS = MODEL_PREFERENCE + tuple(PRECISION_MODELS.values())
#: A precision's model is configured, loaded and batched as the Python model; only the graph differs.
CONFIGURED_AS = {PYTHON_INT8_MODEL: PYTHON_MODEL}
#: The parameter of every config.pbtxt naming the model version: the sha256 of the fp32 ONNX graph.
VERSION_PARAMETER = "image_encoder_sha256"
#: The parameter of a Python-backend model naming the project backend it wraps (``parse_backend``).
BACKEND_PARAMETER = "image_encoder_backend"
PYTHON_BACKENDS = {PYTHON_MODEL: "onnxruntime fp32", PYTORCH_MODEL: "pytorch bf16 compile cuda_graphs",
                   PYTHON_INT8_MODEL: "onnxruntime int8"}
#: Triton's priority levels (1 is served first); ``default_priority_level`` is the routine one.
URGENT_PRIORITY, ROUTINE_PRIORITY = 1, 2


@dataclass(frozen=True)
class Batching:
    """A model's dynamic batching: the largest batch, the sizes worth waiting for, and how long to wait."""

    max_batch_size: int
    preferred: tuple[int, ...]
    max_queue_delay_us: int


#: On the CPU a few ms of waiting for a batch of 8-16 costs nothing against ~200 ms per image. On a GPU
#: (PyTorch) a batch of 256 takes ~20 ms: batch what is queued, wait at most 1 ms.
CPU_BATCHING = Batching(16, (8, 16), 5000)
GPU_BATCHING = Batching(256, (), 1000)
BATCHING = {TENSORRT_MODEL: CPU_BATCHING, PYTORCH_MODEL: GPU_BATCHING, ONNX_MODEL: CPU_BATCHING, PYTHON_MODEL: CPU_BATCHING}
#: The input's data type on the wire, where it is not FP32 (the client sends what the model's config declares).
#: The PyTorch model computes in bf16: float16, whose 10-bit mantissa holds more than bf16's 7 (and normalised
#: pixels, |x| < 10, are far inside its range), changes nothing it computes and halves the bytes of every copy
#: of a batch (154 MB in float32 at 256). Measured on an H200 (BENCHMARKS.md "Triton on a GPU"): no throughput
#: change on its own (2,345 vs 2,406 img/s, 64 clients x 8 images), the copies being Python-backend overheads.
INPUT_TYPE = {PYTORCH_MODEL: "FP16"}
#: The parameter of a Python-backend model giving its embedding cache's size in images (``embedding_cache``).
CACHE_PARAMETER = "embedding_cache_images"
#: 4,096 images' embeddings: 8 MiB, the images of a few hundred studies' quiet periods.
CACHE_IMAGES = 4096
#: The request parameter (true) of the listener's prefetch: its images are kept in the embedding cache.
PREFETCH_PARAMETER = "biomedclip_prefetch"
#: The Prometheus counters of a model with an embedding cache: images answered from it, images it computed.
CACHE_METRICS = ("biomedclip_embedding_cache_hits", "biomedclip_embedding_cache_misses")
#: Further parameters of a model. The Python backend copies every input to host memory unless told not to:
#: the PyTorch model takes an input that a client left in CUDA shared memory where it is, on the GPU (by DLPack,
#: the stub mapping the client's memory), and a host input as before. The CPU Python models keep embeddings by
#: input (the listener's prefetch fills it); the GPU model does not: at ~10,000 img/s hashing each input would
#: cost more than computing it.
MODEL_PARAMETERS = {PYTORCH_MODEL: {"FORCE_CPU_ONLY_INPUT_TENSORS": "no"}, PYTHON_MODEL: {CACHE_PARAMETER: str(CACHE_IMAGES)}}
#: The models only a server with a CUDA device can load (a TensorRT plan exists only once built on one).
NEEDS_CUDA = {PYTORCH_MODEL}
#: The file in each model's version folder that the model needs before a server can load it.
VERSION_FILE = {PYTHON_MODEL: "model.py", PYTORCH_MODEL: "model.py", ONNX_MODEL: "model.onnx", TENSORRT_MODEL: "model.plan"}
#: The Python-backend model: this module's sibling, copied into the package at build time.
PYTHON_MODEL_SOURCE = Path(__file__).resolve().parent / "triton_python_model.py"


@dataclass(frozen=True)
class TensorShapes:
    input: str
    output: str
    embed_dim: int
    image_size: int


def model_config(name: str, shapes: TensorShapes, version_sha256: str) -> str:
    """config.pbtxt (Triton's ``ModelConfig`` in protobuf text format) of one model of the repository."""
    like = CONFIGURED_AS.get(name, name)
    backend = {
        PYTHON_MODEL: 'backend: "python"',
        PYTORCH_MODEL: 'backend: "python"',
        ONNX_MODEL: 'backend: "onnxruntime"\ndefault_model_filename: "model.onnx"',
        TENSORRT_MODEL: 'platform: "tensorrt_plan"\ndefault_model_filename: "model.plan"',
    }[like]
    # The CPU Python model runs where the server runs; the others on a GPU where there is one. The PyTorch model
    # puts itself on the GPU (cuda:0) and stages its own transfers (``GpuBatches``): declared KIND_CPU, the server
    # hands it inputs as they arrived (3,686 vs 2,345 img/s as KIND_GPU on an H200, 64 clients x 8 images, when it
    # took numpy arrays; by DLPack the two kinds measure alike: BENCHMARKS.md "Triton on a GPU").
    kind = {PYTHON_MODEL: "KIND_CPU", PYTORCH_MODEL: "KIND_CPU", TENSORRT_MODEL: "KIND_GPU"}.get(like, "KIND_AUTO")
    batching = BATCHING[like]
    preferred = f"preferred_batch_size: [ {', '.join(map(str, batching.preferred))} ]\n  " if batching.preferred else ""
    parameters = ({VERSION_PARAMETER: version_sha256} | ({BACKEND_PARAMETER: PYTHON_BACKENDS[name]} if name in PYTHON_BACKENDS else {})
                  | MODEL_PARAMETERS.get(like, {}))
    return f"""name: "{name}"
{backend}
max_batch_size: {batching.max_batch_size}
input [ {{ name: "{shapes.input}" data_type: TYPE_{INPUT_TYPE.get(name, "FP32")} dims: [ 3, {shapes.image_size}, {shapes.image_size} ] }} ]
output [ {{ name: "{shapes.output}" data_type: TYPE_FP32 dims: [ {shapes.embed_dim} ] }} ]
dynamic_batching {{
  {preferred}max_queue_delay_microseconds: {batching.max_queue_delay_us}
  priority_levels: 2
  default_priority_level: {ROUTINE_PRIORITY}
}}
instance_group [ {{ kind: {kind} count: 1 }} ]
""" + "".join(f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n' for key, value in parameters.items())


def parse_backend(text: str) -> tuple[str, str, bool, bool]:
    """A Python-backend model's ``image_encoder_backend``: ``BACKEND PRECISION [compile] [cuda_graphs]``
    → (backend, precision, compile, cuda_graphs)."""
    backend, precision, *flags = text.split()
    unknown = set(flags) - {"compile", "cuda_graphs"}
    if unknown:
        raise ValueError(f"{BACKEND_PARAMETER} {text!r}: unknown flag(s) {sorted(unknown)}")
    return backend, precision, "compile" in flags, "cuda_graphs" in flags


def write_repository(package_root: Path, onnx_name: str, shapes: TensorShapes, version_sha256: str,
                     variants: Collection[str] = ()) -> list[Path]:
    """Write ``package_root/triton`` for the package's fp32 graph ``onnx_name`` and, for each precision of its
    ONNX ``variants`` (``int8-dynamic``: int8) that has a model of its own, that model; returns the regular
    files written (the manifest lists them; the ONNX model's link points at a file it already lists)."""
    root = package_root / REPOSITORY
    written = []
    precisions = {variant.split("-")[0] for variant in variants}
    models = MODEL_PREFERENCE + tuple(model for precision, model in PRECISION_MODELS.items() if precision in precisions)
    for name in models:
        folder = root / name
        # no version folder for the plan until it is built: an empty one would be a version without a model
        (folder if name == TENSORRT_MODEL else folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(model_config(name, shapes, version_sha256))
        written.append(folder / "config.pbtxt")
    for name in (model for model in models if model in PYTHON_BACKENDS):
        (root / name / "1" / "model.py").write_text(PYTHON_MODEL_SOURCE.read_text())
        written.append(root / name / "1" / "model.py")
    os.symlink(Path("..", "..", "..", onnx_name), root / ONNX_MODEL / "1" / "model.onnx")
    return written


def loadable_models(repository: Path, backends: set[str], cuda: bool = False) -> list[str]:
    """The repository's models that a server with ``backends`` (and, where ``cuda``, torch and a CUDA device
    in its Python environment) can load: its backend present and its version file there (a TensorRT plan
    exists only once built on the target GPU)."""
    needs = {PYTHON_MODEL: "python", PYTORCH_MODEL: "python", ONNX_MODEL: "onnxruntime", TENSORRT_MODEL: "tensorrt"}
    return [name for name in ALL_MODELS
            if needs[CONFIGURED_AS.get(name, name)] in backends and (cuda or name not in NEEDS_CUDA)
            and (repository / name / "1" / VERSION_FILE[CONFIGURED_AS.get(name, name)]).exists()]
