"""The package's Triton model repository: what a server may load, and the model version each config names."""

from __future__ import annotations

import re
from pathlib import Path

from operators.inference.triton_repository import (
    ONNX_MODEL,
    PYTHON_MODEL,
    TENSORRT_MODEL,
    VERSION_PARAMETER,
    TensorShapes,
    loadable_models,
    write_repository,
)

SHA = "ab" * 32


def _repository(tmp_path: Path) -> Path:
    (tmp_path / "image_encoder.onnx").write_bytes(b"graph")
    written = write_repository(tmp_path, "image_encoder.onnx", TensorShapes("pixel_values", "image_features", 512, 224), SHA)
    assert all(p.is_file() and not p.is_symlink() for p in written)
    return tmp_path / "triton"


def test_a_server_loads_what_its_backends_can_and_a_plan_only_once_built(tmp_path: Path) -> None:
    repository = _repository(tmp_path)
    assert loadable_models(repository, {"python"}) == [PYTHON_MODEL]  # the nvidia-pytriton wheel's server
    assert loadable_models(repository, {"python", "onnxruntime", "tensorrt"}) == [ONNX_MODEL, PYTHON_MODEL]
    (repository / TENSORRT_MODEL / "1").mkdir()
    (repository / TENSORRT_MODEL / "1" / "model.plan").write_bytes(b"plan")
    assert loadable_models(repository, {"python", "onnxruntime", "tensorrt"}) == [TENSORRT_MODEL, ONNX_MODEL, PYTHON_MODEL]
    assert (repository / ONNX_MODEL / "1" / "model.onnx").read_bytes() == b"graph", "a relative link to the package's graph"


def test_every_config_names_the_model_version_and_two_priority_levels(tmp_path: Path) -> None:
    repository = _repository(tmp_path)
    for name in (PYTHON_MODEL, ONNX_MODEL, TENSORRT_MODEL):
        config = (repository / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config
        assert re.search(rf'key: "{VERSION_PARAMETER}" value {{ string_value: "{SHA}" }}', config)
        assert "priority_levels: 2" in config and "max_batch_size: 16" in config
