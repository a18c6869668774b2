"""The Triton backend checks the server's answer: a server that says 200 but returns no embeddings (as
tritonserver 2.51's Python backend does with numpy arrays under numpy 2) fails the study with a clear message,
never a wrong or empty result passed on to the SR. The peer is a real HTTP server on loopback answering as
Triton's HTTP/REST protocol does (KServe v2, binary tensor extension)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from operators.inference.backends.triton import ServerLost, TritonBackend

EMBED_DIM = 512


def _handler(answer_rows: int, binary_rows: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            data = np.ones((binary_rows, EMBED_DIM), np.float32).tobytes()
            header = json.dumps({"model_name": "m", "model_version": "1", "outputs": [
                {"name": "image_features", "datatype": "FP32", "shape": [answer_rows, EMBED_DIM],
                 "parameters": {"binary_data_size": len(data)}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Inference-Header-Content-Length", str(len(header)))
            self.send_header("Content-Length", str(len(header) + len(data)))
            self.end_headers()
            self.wfile.write(header + data)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(*request.param))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _backend(netloc: str) -> TritonBackend:
    return TritonBackend(netloc, "biomedclip_image_encoder_python", "0" * 64, "pixel_values", "image_features")


@pytest.mark.parametrize("peer", [(2, 2)], indirect=True)
def test_an_answer_of_one_embedding_per_image_is_passed_on(peer: str) -> None:
    features = _backend(peer).embed(np.zeros((2, 3, 224, 224), np.float32))
    assert features.shape == (2, EMBED_DIM) and features.dtype == np.float32


@pytest.mark.parametrize("peer", [(2, 0), (1, 1)], indirect=True, ids=["empty output", "fewer rows than images"])
def test_an_answer_without_one_embedding_per_image_fails_the_study_in_one_line(peer: str) -> None:
    with pytest.raises(ServerLost) as caught:
        _backend(peer).embed(np.zeros((2, 3, 224, 224), np.float32))
    message = str(caught.value)
    assert "answered 2 image(s)" in message and "no SR written" in message and "\n" not in message
