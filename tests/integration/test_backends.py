"""Backend seam: every backend/precision returns the fp32 embeddings within its tolerance; ``auto``
falls back in the documented order; TensorRT's engine cache is keyed, atomic and built once."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from benchmarks.fidelity_set import make_set, to_pixel_values
from models.builder import DEFAULT_CALIBRATION, model_inputs_from_dicom
from models.fidelity import embedding_fidelity
from operators.inference.backends.base import BackendSpec, BackendUnavailable, embed_in_batches
from operators.inference.backends.onnxruntime import OnnxRuntimeBackend
from operators.inference.backends.pytorch import TorchBackend
from operators.inference.backends.registry import create_backend
from operators.inference.backends.tensorrt import EngineKey, EngineOptions, cached_engine
from operators.inference.model_package import MissingArtefact, ModelPackage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return to_pixel_values(make_set(24))  # real DICOM images through the app's preprocessing


@pytest.fixture(scope="module")
def package(model_package: Path) -> ModelPackage:
    return ModelPackage.load(model_package)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _onnx(package: ModelPackage, precision: str, flavour: tuple[str, ...] = ()) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(str(package.artefact(precision, flavour)), "pixel_values", "image_features", precision)


@pytest.mark.parametrize(
    ("precision", "flavour", "min_cosine"),
    [("fp16", (), 0.999), ("int8", ("dynamic",), 0.99), ("int8", ("qdq",), 0.99), ("fp8", ("qdq",), 0.99)],
)
def test_onnx_variants_match_fp32_within_tolerance(package: ModelPackage, images: np.ndarray, precision: str,
                                                     flavour: tuple[str, ...], min_cosine: float) -> None:
    reference = _onnx(package, "fp32").embed(images)
    variant = _onnx(package, precision, flavour)
    assert _cosine(variant.embed(images), reference).min() >= min_cosine


def test_pytorch_bf16_on_cpu_matches_fp32(package: ModelPackage, images: np.ndarray) -> None:
    reference = TorchBackend(package.image_tower(), "cpu", "fp32").embed(images[:4])
    assert _cosine(TorchBackend(package.image_tower(), "cpu", "bf16").embed(images[:4]), reference).min() >= 0.999


def test_fused_kernel_rewrites_keep_the_embeddings(package: ModelPackage, images: np.ndarray) -> None:
    """The GPU rewrites (patch embedding as one GEMM, GELU in fc1's epilogue) compute the same function:
    checked in fp32 on the CPU, where PyTorch's GELU epilogue is the exact GELU."""
    import torch

    from operators.inference.backends.vit_kernels import GeluEpilogueMlp, PatchEmbeddingGemm, fuse_kernels

    x = torch.from_numpy(images[:4])
    tower = package.image_tower().eval()
    with torch.inference_mode():
        reference = tower(x)
        fused = fuse_kernels(tower)
        assert isinstance(fused.trunk.patch_embed, PatchEmbeddingGemm)
        assert all(isinstance(block.mlp, GeluEpilogueMlp) for block in fused.trunk.blocks)
        torch.testing.assert_close(fused(x), reference, atol=2e-4, rtol=1e-4)
        with pytest.raises(ValueError, match="not a multiple of the 16-pixel patch"):
            fused.trunk.patch_embed(torch.zeros(1, 3, 200, 200))


def test_onnxruntime_takes_its_own_fused_fp16_graph(package: ModelPackage, images: np.ndarray) -> None:
    """``fp16-ort`` (ONNX Runtime's fused graph: what its CUDA provider runs fastest and can capture in CUDA
    graphs) is what the ONNX Runtime backend loads for fp16, and it computes the package's function. Run
    here on the CPU provider, which has the same contrib ops, through I/O binding on torch tensors as the
    GPU benchmark does; each batch shape keeps its own bindings."""
    import torch

    backend = OnnxRuntimeBackend.from_package(package, BackendSpec("onnxruntime", "fp16"))
    assert Path(backend.onnx_path).name == "image_encoder.fp16-ort.onnx"
    ops = Counter(node.op_type for node in onnx.load(backend.onnx_path).graph.node)
    blocks = len(package.image_tower().trunk.blocks)
    assert (ops["MultiHeadAttention"], ops["SkipLayerNormalization"], ops["BiasGelu"]) == (blocks, 2 * blocks, blocks)
    reference = _onnx(package, "fp32").embed(images[:4])
    x = torch.from_numpy(images[:4])
    first = backend.embed_tensor(x).clone()
    assert _cosine(first.numpy(), reference).min() >= 0.999
    np.testing.assert_allclose(backend.embed(images[:4]), first.numpy(), rtol=1e-5, atol=1e-5)
    assert _cosine(backend.embed_tensor(x[:2]).numpy(), reference[:2]).min() >= 0.999
    torch.testing.assert_close(backend.embed_tensor(x), first)


def test_qdq_is_symmetric_int8_on_matmul_gemm_conv_only(package: ModelPackage) -> None:
    graph = onnx.load(str(package.artefact("int8", ("qdq",)))).graph
    produced_by = {out: node for node in graph.node for out in node.output}
    quantized_consumers = {
        node.op_type for node in graph.node
        if any(produced_by.get(i) is not None and produced_by[i].op_type == "DequantizeLinear" for i in node.input)
    }
    assert quantized_consumers and quantized_consumers <= {"MatMul", "Gemm", "Conv"}
    initializers = {t.name: t for t in graph.initializer}
    zero_points = [initializers[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(zp.data_type == onnx.TensorProto.INT8 for zp in zero_points)
    assert all(not onnx.numpy_helper.to_array(zp).any() for zp in zero_points), "TensorRT needs zero point 0"


def test_fp8_qdq_quantises_the_linear_layers_only_for_tensorrt(package: ModelPackage) -> None:
    """TensorRT's FP8 recipe: E4M3 weights per output channel and activations per tensor feed the
    weight-bearing GEMMs; attention's activation x activation matmuls and everything else stay fp16."""
    graph = onnx.load(str(package.artefact("fp8", ("qdq",)))).graph
    initializers = {t.name: t for t in graph.initializer}
    produced_by = {out: node for node in graph.node for out in node.output}

    def dequantised(name: str) -> bool:
        return name in produced_by and produced_by[name].op_type == "DequantizeLinear"

    gemms = [n for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    weight_gemms = [n for n in gemms if dequantised(n.input[1]) and produced_by[n.input[1]].input[0] in initializers]
    assert len(weight_gemms) == 12 * 4 + 2  # qkv, proj, fc1, fc2 per block + patch conv + final projection
    assert all(dequantised(n.input[0]) for n in weight_gemms)
    assert not any(dequantised(i) for n in gemms if n not in weight_gemms for i in n.input)
    for node in weight_gemms:
        weight = initializers[produced_by[node.input[1]].input[0]]
        channel_scales = onnx.numpy_helper.to_array(initializers[produced_by[node.input[1]].input[1]])
        activation_scale = onnx.numpy_helper.to_array(initializers[produced_by[node.input[0]].input[1]])
        assert weight.data_type == onnx.TensorProto.FLOAT8E4M3FN
        assert channel_scales.ndim == 1 and channel_scales.size > 1 and activation_scale.ndim == 0
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_auto_on_a_cpu_machine_takes_onnxruntime_fp32_even_with_int8_in_the_package(
    package: ModelPackage, caplog: pytest.LogCaptureFixture
) -> None:
    """INT8 loses measurably (``test_documented_fidelity_figures_reproduce``): a site opts in, ``auto`` does not."""
    caplog.set_level("INFO")
    assert package.has_artefact("int8")
    backend = create_backend(BackendSpec("auto"), package)
    assert backend.name == "onnxruntime-CPUExecutionProvider-fp32"
    assert "tensorrt-fp16: no CUDA device" in caplog.text


def test_int8_without_its_artefact_is_refused_by_name(package: ModelPackage) -> None:
    manifest = replace(package.manifest, image_encoder=replace(package.manifest.image_encoder, variants={}))
    with pytest.raises(MissingArtefact, match="no int8 image encoder"):
        replace(package, manifest=manifest).artefact("int8")


#: The fidelity table of docs/backends.md: ``| backend precision | images | cosine min | cosine mean | top-1 agreement |``.
FIDELITY_ROW = re.compile(r"^\| `(\w+) (\w+)` \| (\d+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) % \|$", re.MULTILINE)


def test_documented_fidelity_figures_reproduce(package: ModelPackage) -> None:
    """Every row of docs/backends.md's fidelity table, recomputed as ``scripts/validate_model.py <pydicom test files>``
    computes it (the same functions), within a tolerance: docs and code cannot drift apart."""
    text = (ROOT / "docs" / "backends.md").read_text()
    rows = FIDELITY_ROW.findall(text)
    assert rows, "docs/backends.md has no fidelity table"
    images = model_inputs_from_dicom(DEFAULT_CALIBRATION, 512)
    reference = embed_in_batches(create_backend(BackendSpec("onnxruntime", "fp32"), package), images, 8)
    for backend, precision, count, cosine_min, cosine_mean, top1 in rows:
        candidate = embed_in_batches(create_backend(BackendSpec(backend, precision), package), images, 8)
        measured = embedding_fidelity(candidate, reference, package.head.label_embeddings)
        assert len(images) == int(count)
        assert measured["cosine_min"] == pytest.approx(float(cosine_min), abs=5e-4), (backend, precision)
        assert measured["cosine_mean"] == pytest.approx(float(cosine_mean), abs=5e-4), (backend, precision)
        assert 100 * measured["top1_agreement"] == pytest.approx(float(top1), abs=1.0), (backend, precision)


def test_explicit_gpu_backends_refuse_clearly_without_a_gpu(package: ModelPackage) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        TorchBackend(package.image_tower(), "cuda", "fp16")
    with pytest.raises((BackendUnavailable, ImportError)):
        create_backend(BackendSpec("tensorrt", "fp16"), package)
    with pytest.raises(ValueError, match="unknown precision"):
        BackendSpec("pytorch", "int4")


def _key(**changes: object) -> EngineKey:
    base = dict(gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", tensorrt_version="10.13.0",
                onnx_sha256="ab" * 32, options=EngineOptions("fp16"))
    return EngineKey(**{**base, **changes})  # type: ignore[arg-type]


def test_engine_key_changes_with_every_component(tmp_path: Path) -> None:
    files = {_key().engine_file(tmp_path)}
    for change in (dict(gpu_name="NVIDIA H200"), dict(compute_capability="8.9"), dict(tensorrt_version="11.4.0"),
                   dict(onnx_sha256="cd" * 32), dict(options=EngineOptions("int8")), dict(options=EngineOptions("fp16", max_batch=64))):
        files.add(_key(**change).engine_file(tmp_path))
    assert len(files) == 7
    assert _key().engine_file(tmp_path) == _key().engine_file(tmp_path)


def test_engine_cache_builds_once_under_concurrency_and_never_exposes_partial_files(tmp_path: Path) -> None:
    builds = []

    def build() -> bytes:
        builds.append(1)
        time.sleep(0.3)  # a slow build: the second instance must wait, not build again
        return b"engine-bytes" * 1000

    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(cached_engine(_key(), tmp_path, build))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert results == [b"engine-bytes" * 1000] * 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == [_key().engine_file(tmp_path).name]


def test_tensorrt_engine_builds_and_matches_fp32(package: ModelPackage, images: np.ndarray, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT wheels are only on NVIDIA's package index, unreachable from this machine")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU; this machine has none")
    from operators.inference.backends.tensorrt import TensorRTBackend

    reference = _onnx(package, "fp32").embed(images[:8])
    backend = TensorRTBackend(package.artefact("fp16", ()), EngineOptions("fp16", max_batch=8, opt_batch=8), tmp_path)
    assert _cosine(backend.embed(images[:8]), reference).min() >= 0.999
