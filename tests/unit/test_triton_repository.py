"""The package's Triton model repository: what a server may load, and the model version each config names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from operators.inference.triton_repository import (
    BACKEND_PARAMETER,
    CACHE_PARAMETER,
    ONNX_MODEL,
    PYTHON_INT8_MODEL,
    PYTHON_MODEL,
    PYTORCH_MODEL,
    TENSORRT_MODEL,
    VERSION_PARAMETER,
    TensorShapes,
    loadable_models,
    parse_backend,
    write_repository,
)

SHA = "ab" * 32


def _repository(tmp_path: Path, variants: tuple[str, ...] = ()) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "image_encoder.onnx").write_bytes(b"graph")
    written = write_repository(tmp_path, "image_encoder.onnx", TensorShapes("pixel_values", "image_features", 512, 224), SHA, variants)
    assert all(p.is_file() and not p.is_symlink() for p in written)
    return tmp_path / "triton"


def test_a_server_loads_what_its_backends_can_and_a_plan_only_once_built(tmp_path: Path) -> None:
    repository = _repository(tmp_path)
    assert loadable_models(repository, {"python"}) == [PYTHON_MODEL]  # the nvidia-pytriton wheel's server
    assert loadable_models(repository, {"python"}, cuda=True) == [PYTORCH_MODEL, PYTHON_MODEL]  # torch and a GPU there
    assert loadable_models(repository, {"python", "onnxruntime", "tensorrt"}) == [ONNX_MODEL, PYTHON_MODEL]
    (repository / TENSORRT_MODEL / "1").mkdir()
    (repository / TENSORRT_MODEL / "1" / "model.plan").write_bytes(b"plan")
    assert loadable_models(repository, {"python", "onnxruntime", "tensorrt"}) == [TENSORRT_MODEL, ONNX_MODEL, PYTHON_MODEL]
    assert loadable_models(repository, {"python", "onnxruntime", "tensorrt"}, cuda=True) == [
        TENSORRT_MODEL, PYTORCH_MODEL, ONNX_MODEL, PYTHON_MODEL]
    assert (repository / ONNX_MODEL / "1" / "model.onnx").read_bytes() == b"graph", "a relative link to the package's graph"


def test_every_config_names_the_model_version_and_two_priority_levels(tmp_path: Path) -> None:
    repository = _repository(tmp_path)
    for name, largest in ((PYTHON_MODEL, 16), (PYTORCH_MODEL, 256), (ONNX_MODEL, 16), (TENSORRT_MODEL, 16)):
        config = (repository / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config
        assert re.search(rf'key: "{VERSION_PARAMETER}" value {{ string_value: "{SHA}" }}', config)
        assert "priority_levels: 2" in config and f"max_batch_size: {largest}\n" in config


def test_each_python_model_names_the_backend_it_wraps(tmp_path: Path) -> None:
    repository = _repository(tmp_path)
    wrapped = {}
    for name in (PYTHON_MODEL, PYTORCH_MODEL):
        config = (repository / name / "config.pbtxt").read_text()
        wrapped[name] = parse_backend(re.search(rf'key: "{BACKEND_PARAMETER}" value {{ string_value: "([^"]+)" }}', config)[1])
        assert (repository / name / "1" / "model.py").is_file()
    assert wrapped == {PYTHON_MODEL: ("onnxruntime", "fp32", False, False), PYTORCH_MODEL: ("pytorch", "bf16", True, True)}
    with pytest.raises(ValueError, match="unknown flag"):
        parse_backend("pytorch bf16 compiled")


def test_only_the_pytorch_model_takes_gpu_inputs_where_they_are(tmp_path: Path) -> None:
    """CUDA shared memory inputs reach the PyTorch model on the GPU; the CPU models get host memory, as by default."""
    repository = _repository(tmp_path)
    force_cpu = {name: re.search(r'key: "FORCE_CPU_ONLY_INPUT_TENSORS" value { string_value: "(\w+)" }',
                                 (repository / name / "config.pbtxt").read_text())
                 for name in (PYTHON_MODEL, PYTORCH_MODEL)}
    assert force_cpu[PYTORCH_MODEL] and force_cpu[PYTORCH_MODEL][1] == "no"
    assert force_cpu[PYTHON_MODEL] is None


def test_a_package_with_an_int8_variant_also_serves_it_and_one_without_does_not(tmp_path: Path) -> None:
    """For sites whose ``inference.precision`` is int8 (a CPU server): the Python model on that graph."""
    with_int8 = _repository(tmp_path / "with", ("fp16", "int8-dynamic"))
    assert loadable_models(with_int8, {"python"}) == [PYTHON_MODEL, PYTHON_INT8_MODEL]
    config = (with_int8 / PYTHON_INT8_MODEL / "config.pbtxt").read_text()
    assert parse_backend(re.search(rf'key: "{BACKEND_PARAMETER}" value {{ string_value: "([^"]+)" }}', config)[1]) == (
        "onnxruntime", "int8", False, False)
    assert re.search(rf'key: "{VERSION_PARAMETER}" value {{ string_value: "{SHA}" }}', config), "the package's version, as every model"
    assert "priority_levels: 2" in config and "max_batch_size: 16\n" in config
    assert (_repository(tmp_path / "qdq", ("int8-qdq",)) / PYTHON_INT8_MODEL).is_dir()
    assert not (_repository(tmp_path / "without", ("fp16", "fp8-qdq")) / PYTHON_INT8_MODEL).exists()


def test_only_the_cpu_python_models_keep_embeddings(tmp_path: Path) -> None:
    """The listener's prefetch pays where inference is slow (a CPU server); on a GPU hashing each input costs more."""
    repository = _repository(tmp_path, ("int8-dynamic",))
    keeping = {name for name in (PYTHON_MODEL, PYTHON_INT8_MODEL, PYTORCH_MODEL, ONNX_MODEL, TENSORRT_MODEL)
               if re.search(rf'key: "{CACHE_PARAMETER}" value {{ string_value: "[1-9][0-9]*" }}', (repository / name / "config.pbtxt").read_text())}
    assert keeping == {PYTHON_MODEL, PYTHON_INT8_MODEL}
