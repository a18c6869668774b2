"""The JSON API, probes, metrics and the guard, through FastAPI's TestClient (no network)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from app.web.classifier import WarmModel
from app.web.server import create_app
from operators.intake.inventory import classify_file
from tests.support.web import AUTH, TOKEN, ready_client, web_config

CT = Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="module")
def model(fp32_model_package: Path) -> WarmModel:
    return WarmModel.load(fp32_model_package)


@pytest.fixture()
def client(tmp_path: Path, fp32_model_package: Path, model: WarmModel) -> Iterator[TestClient]:
    with ready_client(create_app(web_config(tmp_path / "state", fp32_model_package), model)) as client:
        yield client


def classify(client: TestClient, data: bytes, headers: dict[str, str] = AUTH):
    return client.post("/api/v1/classify", files={"file": ("upload", data)}, headers=headers)


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def test_a_dicom_image_is_classified_over_the_package_labels(client: TestClient, model: WarmModel) -> None:
    response = classify(client, CT.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    probabilities = [p["probability"] for p in body["probabilities"]]
    assert [p["label"] for p in body["probabilities"]] == model.package.labels.names
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert body["top_label"] == model.package.labels.names[int(np.argmax(probabilities))]
    assert body["input"] == "DICOM" and body["backend"] == model.backend.name
    assert "RANDOM" in body["warning"] and "RANDOM-INIT" in body["model"]
    assert body["timings"]["inference_seconds"] > 0


def test_the_same_image_as_dicom_and_as_png_gives_the_same_prediction(client: TestClient) -> None:
    """A PNG's pixels are display values: CT_small rendered through the app's window, then sent as a
    PNG, is the DICOM path's model input up to 8-bit rounding."""
    from operators.imaging.preprocessing import decode_frame, to_unit

    ds = pydicom.dcmread(CT)
    rendered = (to_unit(ds, decode_frame(ds, None)) * 255 + 0.5).astype(np.uint8)
    from_dicom = classify(client, CT.read_bytes()).json()
    from_png = classify(client, png(rendered)).json()
    assert from_png["input"] == "PNG"
    assert from_png["top_label"] == from_dicom["top_label"]
    np.testing.assert_allclose([p["probability"] for p in from_png["probabilities"]],
                               [p["probability"] for p in from_dicom["probabilities"]], atol=2e-3)


def test_a_file_the_app_refuses_is_refused_with_the_apps_reason(client: TestClient, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(CT.read_bytes()[:-5000])
    reason = classify_file(truncated).reason
    response = classify(client, truncated.read_bytes())
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert reason and reason in response.json()["detail"]


def test_an_image_with_burned_in_annotation_is_refused_as_the_app_refuses_it(client: TestClient) -> None:
    ds = pydicom.dcmread(CT)
    ds.BurnedInAnnotation = "YES"
    out = io.BytesIO()
    ds.save_as(out)
    response = classify(client, out.getvalue())
    assert response.status_code == 422
    assert "Burned In Annotation" in response.json()["detail"] or "BurnedInAnnotation" in response.json()["detail"]


def test_refusals_name_neither_the_patient_nor_the_uploaded_file_name(client: TestClient) -> None:
    ds = pydicom.dcmread(CT)
    response = client.post("/api/v1/classify", files={"file": ("Doe^Jane.dcm", b"not an image at all")}, headers=AUTH)
    assert response.status_code == 422
    assert "not a DICOM file" in response.json()["detail"]
    assert "Doe" not in response.text and str(ds.PatientName) not in response.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}])
def test_without_a_valid_bearer_token_nothing_but_the_probes_answers(client: TestClient, headers: dict[str, str]) -> None:
    for path in ("/api/v1/jobs/x", "/metrics", "/docs", "/openapi.json"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"
    assert classify(client, CT.read_bytes(), headers).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"


def test_openapi_describes_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert {"/api/v1/classify", "/api/v1/jobs/{job_id}", "/dicomweb/studies"} <= set(schema["paths"])
    assert client.get("/docs", headers=AUTH).status_code == 200


def test_a_declared_body_over_the_limit_is_refused_unread(tmp_path: Path, fp32_model_package: Path, model: WarmModel) -> None:
    app = create_app(web_config(tmp_path / "state", fp32_model_package, max_classify_bytes=10_000), model)
    with ready_client(app) as client:
        response = classify(client, CT.read_bytes())  # 39 KB
        assert response.status_code == 413
        assert "10000 bytes" in response.json()["detail"]
        huge = client.post("/api/v1/classify", content=b"x", headers={**AUTH, "Content-Length": str(1 << 40)})
        assert huge.status_code == 413


def test_a_chunked_body_is_cut_off_at_the_limit(tmp_path: Path, fp32_model_package: Path, model: WarmModel) -> None:
    app = create_app(web_config(tmp_path / "state", fp32_model_package, max_classify_bytes=10_000), model)

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(100):
            yield b"y" * 1000

    with ready_client(app) as client:
        response = client.post("/api/v1/classify", content=chunks(), headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"})
        assert response.status_code == 413


def test_metrics_count_requests_and_classifications(client: TestClient) -> None:
    classify(client, CT.read_bytes())
    classify(client, b"garbage")
    text = client.get("/metrics", headers=AUTH).text
    assert 'biomedclip_web_classifications_total{outcome="classified"} 1.0' in text
    assert 'biomedclip_web_classifications_total{outcome="refused"} 1.0' in text
    assert 'biomedclip_web_requests_total{method="POST",route="/api/v1/classify",status="200"} 1.0' in text


def test_the_audit_log_names_who_and_the_route_never_the_uids(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    study = str(pydicom.dcmread(CT).StudyInstanceUID)
    with caplog.at_level(logging.INFO, logger="app.web.audit"):
        client.get(f"/dicomweb/studies/{study}/instances", headers=AUTH)
        client.get(f"/dicomweb/studies/{study}/instances")
    lines = [r.getMessage() for r in caplog.records if r.name == "app.web.audit"]
    assert any("who=tester" in line and "/dicomweb/studies/{study}/instances" in line and "outcome=200" in line for line in lines)
    assert any("who=-" in line and "outcome=401" in line for line in lines)
    assert not any(study in line for line in lines)


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.options("/api/v1/classify", headers={**AUTH, "Origin": "http://elsewhere.example",
                                                           "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in response.headers


def test_not_ready_until_the_model_loads_and_then_the_reason(tmp_path: Path) -> None:
    app = create_app(web_config(tmp_path / "state", tmp_path / "no-such-model"))
    with TestClient(app) as client:
        app.state.readiness.done.wait(60)
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "no model package" in response.json()["detail"]
        refused = classify(client, CT.read_bytes())
        assert refused.status_code == 503 and "not ready" in refused.json()["detail"]


@pytest.mark.parametrize(("tokens", "arguments", "expected"), [
    ("", [], "error: no bearer token configured"),
    ("alice:short", [], "error: BIOMEDCLIP_WEB_TOKENS: token 'alice' is shorter than 16 characters"),
    ("alice:0123456789abcdef", ["-t", "http://127.0.0.1:8000"], "error: -t 'http://127.0.0.1:8000': expected HOST:PORT"),
])
def test_the_server_refuses_to_start_without_usable_tokens_or_triton_server(tmp_path: Path, tokens: str, arguments: list[str],
                                                                           expected: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "BIOMEDCLIP_WEB_TOKENS": tokens}
    result = subprocess.run([sys.executable, "-m", "app.web", "-m", str(tmp_path), *arguments], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(expected) and len(result.stderr.strip().splitlines()) == 1
