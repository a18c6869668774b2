"""Remote inference on a real Triton Inference Server (``python -m app.inference_server``, the tritonserver
of the nvidia-pytriton wheel in .venv-triton) on loopback: the same embeddings and SR as the local ONNX
Runtime backend, several app instances at once, and the documented outcomes of a server lost mid-study,
a server holding another model version, an unreachable server with and without the local fallback."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from models.builder import DEFAULT_LABELS, build_package, model_inputs_from_dicom
from operators.inference.backends.base import BackendSpec
from operators.inference.backends.registry import create_backend
from operators.inference.model_package import ModelPackage, sha256_file
from operators.inference.triton_repository import PYTHON_MODEL
from operators.inference.zero_shot import l2_normalise
from tests.conftest import ROOT, SEED, run_app, tree_digest
from tests.support.listener_peers import make_dose_report, wait_for
from tests.support.loopback_listener import PACS_AE, LoopbackListener, LoopbackPacs, send
from tests.support.triton_server import Server, algorithm_parameters, free_port, inference_server, sr_content

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the nvidia-pytriton wheel's tritonserver is built for x86-64 Linux only")

#: A key of our own, so that two runs of the app de-identify alike (the SR itself is re-identified).
SECRET = {"BIOMEDCLIP_DEID_SECRET": "triton-tests"}


@pytest.fixture(scope="module")
def model_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded package as tests/conftest.py builds it, without the ONNX variants: the Triton path uses the fp32 graph."""
    out = tmp_path_factory.mktemp("models") / "biomedclip"
    build_package(None, SEED, DEFAULT_LABELS, out)
    return out


@pytest.fixture(scope="module")
def server(model_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    with inference_server(model_package, tmp_path_factory.mktemp("triton") / "server.log", metrics=True) as running:
        yield running
    assert running.process.returncode == 0, "SIGTERM stops the server cleanly"
    assert "stopped: tritonserver exit status 0" in running.log.read_text()


@pytest.fixture(scope="module")
def local_run(model_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample study through the local ONNX Runtime fp32 backend (the app's default on the CPU)."""
    from scripts.make_sample_study import make_sample_study

    folder = tmp_path_factory.mktemp("local")
    make_sample_study(folder / "input")
    result = run_app(folder / "input", folder / "output", model_package, env=SECRET)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "output"


#: ``python -c MODULES_PROBE app ...`` runs the app as ``python app ...`` does, and at its exit writes the names of
#: the modules it imported to $MODULES_OUT (the importtime log also lists imports that failed: the SDK's hidden torch)
MODULES_PROBE = ("import atexit, os, runpy, sys; "
                 "atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write('\\n'.join(sorted(sys.modules)))); "
                 "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def _app_t(sample_study: Path, output: Path, model: Path, netloc: str, env: dict[str, str] | None = None,
           options: tuple[str, ...] = (), launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *launcher, str(ROOT / "app"), "-i", str(sample_study), "-o", str(output), "-m", str(model),
                             "-t", netloc, *options],
                            env={**os.environ, **SECRET, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(output: Path) -> dict:
    return json.loads((output / "run_report.json").read_text())


def test_embeddings_through_triton_equal_the_local_onnxruntime_fp32_ones(server: Server, model_package: Path) -> None:
    package = ModelPackage.load(model_package)
    images = _sample_images()
    remote = create_backend(BackendSpec(triton_server=server.netloc), package)
    local = create_backend(BackendSpec("onnxruntime", "fp32"), package)
    assert remote.name.startswith(f"triton-{server.netloc}-biomedclip_image_encoder_python-sha256:")
    cosine = (l2_normalise(remote.embed(images)) * l2_normalise(local.embed(images))).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_the_web_face_with_t_classifies_on_the_server_as_the_local_model_does(server: Server, model_package: Path) -> None:
    """``python -m app.web -t HOST:PORT``: the warm model's image encoder is the Triton server's, and an image
    gets the probabilities the local ONNX Runtime fp32 model gives it."""
    from dataclasses import replace

    from app.sample_study import DEMO_IMAGE
    from app.settings import AppSettings
    from app.web.classifier import WarmModel, read_input

    settings = AppSettings.load()
    image = read_input(DEMO_IMAGE.read_bytes(), settings)
    remote = WarmModel.load(model_package, settings, triton_server=server.netloc).predict(image)
    local = WarmModel.load(model_package, replace(settings, backend=BackendSpec("onnxruntime", "fp32"))).predict(image)
    assert remote.backend.startswith(f"triton-{server.netloc}-")
    assert np.abs(remote.probabilities - local.probabilities).max() < 1e-4


def _sample_images() -> np.ndarray:
    """The sample study's images as the model sees them."""
    import tempfile

    from scripts.make_sample_study import make_sample_study

    with tempfile.TemporaryDirectory() as folder:
        make_sample_study(Path(folder))
        return model_inputs_from_dicom(Path(folder), 8)


def test_the_sr_through_triton_is_the_local_one_apart_from_the_backend_it_names(
        server: Server, model_package: Path, local_run: Path, sample_study: Path, tmp_path: Path) -> None:
    before = tree_digest(sample_study)
    modules = tmp_path / "modules.txt"
    app = _app_t(sample_study, tmp_path / "output", model_package, server.netloc, env={"MODULES_OUT": str(modules)},
                 launcher=("-c", MODULES_PROBE))
    stdout, stderr = app.communicate(timeout=600)
    assert app.returncode == 0, stderr[-3000:]
    imported = {name.split(".")[0] for name in modules.read_text().split()}
    # no weights and no model runtime: the bicubic resize is numpy's (operators/imaging/bicubic.py)
    assert {"holoscan", "tritonclient"} <= imported and not imported & {"open_clip", "onnxruntime", "torch"}
    (remote_sr,), (local_sr,) = (sorted(folder.glob("*.dcm")) for folder in (tmp_path / "output", local_run))
    assert sr_content(remote_sr) == sr_content(local_sr)
    version = sha256_file(model_package / "image_encoder.onnx")[:16]
    backend = f"triton-{server.netloc}-biomedclip_image_encoder_python-sha256:{version}-priority2"  # routine (triton_repository.py)
    assert {p for p in algorithm_parameters(remote_sr) if p.startswith("backend=")} == {f"backend={backend}"}
    assert {row["backend"] for row in _report(tmp_path / "output")["series"]} == {backend}
    assert tree_digest(sample_study) == before


def test_an_urgent_study_is_sent_at_tritons_higher_priority_level(server: Server, model_package: Path, local_run: Path, sample_study: Path,
                                                                   tmp_path: Path) -> None:
    """``python app --priority urgent`` (the listener's urgent studies): the requests go at priority level 1, the
    one Triton's dynamic batcher serves first; the run report and the SR's backend parameter say so."""
    app = _app_t(sample_study, tmp_path / "output", model_package, server.netloc, options=("--priority", "urgent"))
    _, stderr = app.communicate(timeout=600)
    assert app.returncode == 0, stderr[-3000:]
    version = sha256_file(model_package / "image_encoder.onnx")[:16]
    backend = f"triton-{server.netloc}-biomedclip_image_encoder_python-sha256:{version}-priority1"
    (sr,), (local_sr,) = (sorted(folder.glob("*.dcm")) for folder in (tmp_path / "output", local_run))
    assert {p for p in algorithm_parameters(sr) if p.startswith("backend=")} == {f"backend={backend}"}
    report = _report(tmp_path / "output")
    assert report["priority"] == "urgent" and {row["backend"] for row in report["series"]} == {backend}
    assert sr_content(sr) == sr_content(local_sr), "the same result, only served first"


#: Long enough for the prefetch to send the sample study's 7 images on a busy 2-core machine (~2 s when quiet).
PREFETCH_QUIET_PERIOD_S = 8.0


def test_a_study_pushed_to_the_listener_with_t_is_inferred_while_it_arrives(server: Server, model_package: Path, local_run: Path,
                                                                           sample_study: Path, tmp_path: Path) -> None:
    """The listener's prefetch (``app/listener/prefetch.py``): each instance's images go to the server as they are
    spooled, so the job's requests are answered from the server's embedding cache, each image computed once; the SR
    is the local model's. The CT dose report in the push (burned-in annotation: its pixels may carry PHI, and the
    job refuses it) never reaches the server."""
    pacs = LoopbackPacs()
    settings = {"model_dir": str(model_package), "quiet_period_s": PREFETCH_QUIET_PERIOD_S, "triton_server": server.netloc,
                "destination": f"{PACS_AE}@127.0.0.1:{pacs.port}"}
    listener = LoopbackListener(tmp_path / "listener", settings, {**os.environ, **SECRET, "PYTHONPATH": str(ROOT)})
    instances = sorted(p for p in sample_study.rglob("*") if p.is_file())
    study = [pydicom.dcmread(p) for p in [*instances, make_dose_report(instances[0], tmp_path / "extra")]]
    try:
        listener.start()
        before = server.embedding_cache()[PYTHON_MODEL]
        send(listener.port, [study])
        wait_for(lambda: study[0].StudyInstanceUID in pacs.arrived, 600, "the SR at the PACS", 0.1)
        hits, computed = (now - then for now, then in zip(server.embedding_cache()[PYTHON_MODEL], before))
    finally:
        listener.stop()
        pacs.stop()
    assert (hits, computed) == (7, 7), "the job's 7 images came from the cache; the dose report was not sent"
    (output,) = (tmp_path / "listener" / "output").iterdir()
    report = _report(output)
    assert report["summary"]["refused"] == 1, "the job refused the dose report itself"
    (sr,), (local_sr,) = (sorted(folder.glob("*.dcm")) for folder in (output, local_run))
    # the series in another order: the spool names files by SOP Instance UID, the sample study by position
    assert sorted(map(repr, sr_content(sr))) == sorted(map(repr, sr_content(local_sr))), "the local model's findings"


def test_four_app_instances_at_once_against_one_server(server: Server, model_package: Path, local_run: Path, sample_study: Path,
                                                       tmp_path: Path) -> None:
    apps = [_app_t(sample_study, tmp_path / f"output-{i}", model_package, server.netloc) for i in range(4)]
    results = [(app.wait(600), app.stderr.read() if app.stderr else "") for app in apps]
    assert [status for status, _ in results] == [0] * 4, results[0][1][-3000:]
    (local_sr,) = local_run.glob("*.dcm")
    for i in range(4):
        (sr,) = (tmp_path / f"output-{i}").glob("*.dcm")
        assert sr_content(sr) == sr_content(local_sr)


def test_a_server_holding_another_model_version_is_refused(server: Server, model_package: Path, sample_study: Path,
                                                           tmp_path: Path) -> None:
    """This app's package has another image encoder, its manifest to match: the server's model is not this
    package's version. (On the Triton path the app never opens the graph, so any other file will do.)"""
    other = tmp_path / "other"
    other.mkdir()
    for name in ("labels.json", "label_embeddings.npy", "open_clip_config.json", "image_encoder.safetensors"):
        (other / name).symlink_to(model_package / name)
    (other / "image_encoder.onnx").write_bytes(b"another model version")
    manifest = json.loads((model_package / "manifest.json").read_text())
    manifest["files"] = {p.name: sha256_file(p) for p in other.iterdir()}
    (other / "manifest.json").write_text(json.dumps(manifest))
    app = _app_t(sample_study, tmp_path / "output", other, server.netloc)
    _, stderr = app.communicate(timeout=300)
    served, wanted = sha256_file(model_package / "image_encoder.onnx")[:16], manifest["files"]["image_encoder.onnx"][:16]
    assert app.returncode == 2
    assert stderr.strip().splitlines()[-1] == (
        f"error: Triton server {server.netloc} holds another model version (biomedclip_image_encoder_python "
        f"sha256:{served}; this package's is sha256:{wanted})")
    assert not (tmp_path / "output" / "run_report.json").exists(), "refused before anything ran"


def test_an_unreachable_server_is_one_line_and_exit_2_or_with_the_fallback_the_local_backend_said_everywhere(
        model_package: Path, local_run: Path, sample_study: Path, tmp_path: Path) -> None:
    netloc = f"127.0.0.1:{free_port()}"  # nothing listens there
    app = _app_t(sample_study, tmp_path / "refused", model_package, netloc)
    _, stderr = app.communicate(timeout=300)
    assert app.returncode == 2
    (line,) = [line for line in stderr.strip().splitlines() if not line.startswith("Model package")]
    assert line.startswith(f"error: Triton server {netloc} unreachable (")

    config = shutil.copytree(ROOT / "app" / "config", tmp_path / "config") / "app.json"
    config.write_text(config.read_text().replace('"triton_fallback": false', '"triton_fallback": true'))
    app = _app_t(sample_study, tmp_path / "output", model_package, netloc, env={"BIOMEDCLIP_APP_CONFIG": str(config)})
    _, stderr = app.communicate(timeout=600)
    assert app.returncode == 0, stderr[-3000:]
    said = f"onnxruntime-CPUExecutionProvider-fp32 (local fallback: Triton server {netloc} unreachable ("
    assert f"Triton server {netloc} unreachable (" in stderr and "inference.triton_fallback is on, running locally" in stderr
    (sr,) = (tmp_path / "output").glob("*.dcm")
    assert [p for p in algorithm_parameters(sr) if p.startswith("backend=")][0].startswith(f"backend={said}")
    assert all(row["backend"].startswith(said) for row in _report(tmp_path / "output")["series"])
    (local_sr,) = local_run.glob("*.dcm")
    assert sr_content(sr) == sr_content(local_sr)


def test_a_server_killed_mid_study_fails_the_run_with_exit_4_and_writes_nothing(model_package: Path, sample_study: Path,
                                                                                 tmp_path: Path) -> None:
    """Documented outcome (README "Exit codes", docs/deployment.md): exit 4, one error line, no SR, the run
    report says failed and why, the input untouched; the listener runs the study again."""
    before = tree_digest(sample_study)
    with inference_server(model_package, tmp_path / "server.log") as server:
        app = _app_t(sample_study, tmp_path / "output", model_package, server.netloc)
        assert app.stderr is not None
        for line in app.stderr:  # the last series preprocessed: its images go to the server next
            if "Series" in line and "all 5 images" in line:
                break
        os.kill(server.tritonserver_pid(), signal.SIGKILL)
        _, stderr = app.communicate(timeout=600)
        time.sleep(0.5)
    assert app.returncode == 4, stderr[-3000:]
    error = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and error[0].startswith(f"error: Triton server {server.netloc} lost during inference (")
    assert "run the study again" in error[0] and "Traceback" not in stderr
    assert list((tmp_path / "output").glob("*.dcm")) == []
    report = _report(tmp_path / "output")
    assert report["status"] == "failed" and report["error"].startswith(f"Triton server {server.netloc} lost during inference")
    assert tree_digest(sample_study) == before


def test_a_server_environment_without_the_pytriton_wheel_is_refused_in_one_line(model_package: Path, tmp_path: Path) -> None:
    """The app's own environment (no nvidia-pytriton) named as the server's: one line, exit 2, no traceback."""
    result = subprocess.run([sys.executable, "-m", "app.inference_server", "-m", str(model_package), "--http-port", "18999"],
                            env={**os.environ, "TRITON_PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no nvidia-pytriton wheel" in result.stderr and "requirements-triton.txt" in result.stderr


def test_a_site_asking_for_int8_gets_the_servers_int8_model_or_a_one_line_refusal(
        server: Server, model_package: Path, sample_study: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """``inference.precision`` int8 (the quicker CPU graph): a package with an int8 variant serves it as a model of
    its own, whose embeddings are the local int8 backend's and which the app's run names; a server without it is refused,
    not silently swapped for the fp32 model."""
    config = shutil.copytree(ROOT / "app" / "config", tmp_path / "config") / "app.json"
    config.write_text(config.read_text().replace('"precision": "fp32"', '"precision": "int8"'))
    env = {"BIOMEDCLIP_APP_CONFIG": str(config)}

    app = _app_t(sample_study, tmp_path / "refused", model_package, server.netloc, env=env)
    _, stderr = app.communicate(timeout=300)
    assert app.returncode == 2
    assert stderr.strip().splitlines()[-1] == (f"error: Triton server {server.netloc} serves none of biomedclip_image_encoder_python_int8 "
                                               "(inference.precision int8)")

    with_int8 = tmp_path_factory.mktemp("models-int8") / "biomedclip"
    build_package(None, SEED, DEFAULT_LABELS, with_int8, variants=["int8-dynamic"])
    with inference_server(with_int8, tmp_path / "server.log") as int8_server:
        package = ModelPackage.load(with_int8)
        images = _sample_images()
        remote = create_backend(BackendSpec(precision="int8", triton_server=int8_server.netloc), package)
        local = create_backend(BackendSpec("onnxruntime", "int8"), package)
        assert remote.name.startswith(f"triton-{int8_server.netloc}-biomedclip_image_encoder_python_int8-sha256:")
        cosine = (l2_normalise(remote.embed(images)) * l2_normalise(local.embed(images))).sum(axis=1)
        assert cosine.min() >= 0.9999, cosine

        app = _app_t(sample_study, tmp_path / "output", with_int8, int8_server.netloc, env=env)
        _, stderr = app.communicate(timeout=600)
        assert app.returncode == 0, stderr[-3000:]
        (sr,) = (tmp_path / "output").glob("*.dcm")
        backend = [p for p in algorithm_parameters(sr) if p.startswith("backend=")][0]
        assert backend.startswith(f"backend=triton-{int8_server.netloc}-biomedclip_image_encoder_python_int8-sha256:")
