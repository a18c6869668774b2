"""An ONNX file ONNX Runtime cannot load is a one-line refusal naming the file, not a traceback."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from operators.inference.backends.base import BackendUnavailable
from operators.inference.backends.onnxruntime import OnnxRuntimeBackend


def test_a_file_that_is_not_onnx_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "image_encoder.onnx"
    path.write_bytes(b"\x08\x07not a protobuf model" * 64)
    with pytest.raises(BackendUnavailable, match=r"image_encoder\.onnx: ONNX Runtime cannot load it \(InvalidProtobuf"):
        OnnxRuntimeBackend(str(path), "image", "embedding")


def test_a_graph_onnx_runtime_cannot_run_is_refused_naming_it(tmp_path: Path) -> None:
    """Well-formed protobuf, invalid graph: a node reads a tensor nothing produces."""
    node = helper.make_node("Relu", ["missing"], ["embedding"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1])])
    path = tmp_path / "image_encoder.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(BackendUnavailable, match=r"image_encoder\.onnx: ONNX Runtime cannot load it"):
        OnnxRuntimeBackend(str(path), "image", "embedding")
