"""MAP packaging: scripts/package_map.py writes the ``monai-deploy package`` build context offline,
its manifests and Dockerfile agree with app.yaml, and the context alone runs the sample study."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import ROOT, run_app, tree_digest

APP_YAML = yaml.safe_load((ROOT / "app.yaml").read_text())
TAG = "biomedclip-zero-shot:test"


@pytest.fixture(scope="module")
def packaged(model_package: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The packaging script run where no Docker can be found (PATH holds no docker)."""
    out = tmp_path_factory.mktemp("map")
    no_tools = tmp_path_factory.mktemp("empty-path")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package_map.py"), "--tag", TAG, "--models", str(model_package), "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PATH": str(no_tools)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.fixture(scope="module")
def context(packaged: tuple[Path, subprocess.CompletedProcess]) -> Path:
    return packaged[0] / "context"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _copies(dockerfile: str) -> dict[str, str]:
    """Container path -> build-context path, from the Dockerfile's ``COPY ./SRC DEST`` lines."""
    return {dest.rstrip("/"): src for src, dest in re.findall(r"^COPY \./(\S+)\s+(\S+)$", dockerfile, re.M)}


def test_without_docker_the_build_context_is_complete_and_no_image_is_claimed(packaged: tuple[Path, subprocess.CompletedProcess], model_package: Path) -> None:
    out, result = packaged
    context = out / "context"
    assert "NO IMAGE WAS BUILT" in result.stdout
    assert "Docker with buildx and a running daemon is not available" in result.stdout
    assert "RANDOM weights" in result.stderr
    for name in ("Dockerfile", "map/app.json", "map/pkg.json", "app.config", "tools", "pip/requirements.txt", "app/__main__.py"):
        assert (context / name).is_file(), name
    assert (context / "app.config").read_bytes() == (ROOT / "app.yaml").read_bytes()
    shipped_models = context / "models" / model_package.name
    assert {name: digest[:64] for name, digest in tree_digest(shipped_models).items()} == {name: digest[:64] for name, digest in tree_digest(model_package).items()}
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in context.rglob("*")), "the container user (UID 1000) must read every file"
    assert sorted(p.name for p in (context / "app").iterdir()) == ["__main__.py", "app", "operators", "requirements.txt"]
    for package in ("app", "operators"):
        shipped = {p.relative_to(context / "app" / package) for p in (context / "app" / package).rglob("*.py")}
        assert shipped == {p.relative_to(ROOT / package) for p in (ROOT / package).rglob("*.py")}, package
    assert not list(context.rglob("__pycache__"))

    image = "biomedclip-zero-shot-x64-workstation-dgpu-linux-amd64:test"  # holoscan-cli names the image per platform
    assert f"image name (the packager adds platform, configuration and architecture): {image}" in result.stdout
    build = (out / "build_image.sh").read_text()
    assert f"--tag {image}" in build and "--platform linux/amd64" in build
    assert "--build-arg=UID=1000" in build and "--build-arg=GID=1000" in build and "--build-arg=UNAME=holoscan" in build


def test_app_json_command_paths_and_environment(context: Path) -> None:
    app = _json(context / "map" / "app.json")
    assert json.loads(app["command"]) == ["python3", "/opt/holoscan/app"]
    assert app["input"] == {"path": "input/", "formats": APP_YAML["application"]["input-formats"]}
    assert app["output"] == {"path": "output/", "formats": APP_YAML["application"]["output-formats"]}
    assert app["input"]["formats"] is not None, "app.yaml must use the input-formats key holoscan-cli 4.2.0 reads"
    assert app["workingDirectory"] == "/var/holoscan"
    assert app["version"] == APP_YAML["application"]["version"]
    assert (app["sdk"], app["sdkVersion"]) == ("monai-deploy", importlib.metadata.version("monai-deploy-app-sdk"))
    env = app["environment"]
    assert env["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models"
    assert env["HOLOSCAN_APPLICATION"] == "/opt/holoscan/app"
    assert (env["HOLOSCAN_INPUT_PATH"], env["HOLOSCAN_OUTPUT_PATH"], env["HOLOSCAN_WORKDIR"]) == ("input/", "output/", "/var/holoscan")


def test_pkg_json_models_and_resources(context: Path, model_package: Path) -> None:
    pkg = _json(context / "map" / "pkg.json")
    assert pkg["resources"] == APP_YAML["resources"]
    assert pkg["models"] == {model_package.name: f"/opt/holoscan/models/{model_package.name}"}
    assert (pkg["modelRoot"], pkg["applicationRoot"]) == ("/opt/holoscan/models", "/opt/holoscan/app")
    assert pkg["version"] == APP_YAML["application"]["version"]


def test_dockerfile_installs_pinned_requirements_ships_models_and_runs_as_non_root(context: Path, model_package: Path) -> None:
    dockerfile = (context / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/cuda:13.0.0-runtime-ubuntu24.04 AS base" in dockerfile
    copies = _copies(dockerfile)
    assert copies["/opt/holoscan/models"] == "models"
    assert copies["/opt/holoscan/app"] == "app"
    assert copies["/tmp/requirements.txt"] == "pip/requirements.txt"
    assert "RUN pip install --no-cache-dir --user -r /tmp/requirements.txt" in dockerfile
    assert "ENV HOLOSCAN_MODEL_PATH=/opt/holoscan/models\n" in dockerfile
    assert "ENV HOLOSCAN_WORKDIR=/var/holoscan\n" in dockerfile
    assert "RUN chown -R holoscan /var/holoscan " in dockerfile, "the work dir (engine cache) must be writable by the app"
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] == "$UNAME", "the app must run as the packager's non-root user"
    assert dockerfile.index("USER $UNAME") < dockerfile.index("ENTRYPOINT")


def test_container_requirements_are_the_repository_pins_the_app_needs(context: Path) -> None:
    pinned = {line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")}
    shipped = [line for line in (context / "pip" / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert set(shipped) <= pinned, set(shipped) - pinned
    names = {Requirement(line).name.lower() for line in shipped}
    # The Dockerfile then runs `pip install monai-deploy-app-sdk==4.0.0`, which needs holoscan-cli: unpinned, pip picks 5.x.
    assert {"monai-deploy-app-sdk", "holoscan-cu13", "holoscan-cli", "onnxruntime", "highdicom", "torch"} <= names
    assert not names & {"pytest", "matplotlib", "transformers", "onnxscript", "pydicom-data", "deid-data"}


def _printed(log: str, name: str) -> str:
    """A file the packager prints at DEBUG level between its Begin/End banners."""
    return re.search(rf"=+ Begin {re.escape(name)} =+\n(.*?)\n=+ End {re.escape(name)} =+", log, re.S).group(1)


def test_build_context_is_what_monai_deploy_package_generates(context: Path, model_package: Path, tmp_path: Path) -> None:
    """The script's staged folder through the real ``monai-deploy package`` command line, where no
    Docker can be found: it runs offline up to the image build, and the Dockerfile and manifests it
    generated (printed at DEBUG level) are those of the script's build context."""
    from scripts.package_map import stage

    command = stage(tmp_path / "staging", TAG, model_package, "x86_64")
    command[0] = str(Path(sys.executable).parent / "monai-deploy")
    no_tools = tmp_path / "empty-path"
    no_tools.mkdir()
    result = subprocess.run([*command, "-l", "DEBUG"], capture_output=True, text=True, timeout=600, env={**os.environ, "PATH": str(no_tools)})

    log = result.stdout + result.stderr
    assert result.returncode == 1 and "Error packaging application" in log, log[-3000:]
    assert "Using CLI manifest file from" in log and "Downloading CLI manifest" not in log
    assert _printed(log, "Dockerfile").strip() == (context / "Dockerfile").read_text().strip()
    for manifest in ("app.json", "pkg.json"):
        assert json.loads(_printed(log, manifest)) == _json(context / "map" / manifest), manifest


def _container_site_packages(requirements: Path, dest: Path) -> Path:
    """A site-packages holding only the distributions the container's requirements name (links)."""
    dest.mkdir()
    for line in requirements.read_text().splitlines():
        if line and not line.startswith("#"):
            dist = importlib.metadata.distribution(Requirement(line).name)
            for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
                if not (dest / top).exists():
                    (dest / top).symlink_to(Path(str(dist.locate_file(top))))
    return dest


def _findings(sr_path: Path) -> list[tuple]:
    """What the SR says, without its own UIDs and dates: per image group, the images, probabilities,
    top label and algorithm identification."""
    sr = hd.sr.srread(sr_path)
    findings = []
    for group in sr.content.get_image_measurement_groups():
        items = group[0].ContentSequence
        sources = sorted(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.ConceptNameCodeSequence[0].CodeValue == "121112")
        texts = sorted((i.ConceptNameCodeSequence[0].CodeValue, i.TextValue) for i in items if "TextValue" in i)
        probabilities = sorted((m.name.value, round(m.value, 6)) for m in group.get_measurements())
        (evaluation,) = group.get_qualitative_evaluations()
        findings.append((sources, texts, probabilities, evaluation.value.value))
    return sorted(findings)


class Container:
    """The image's file layout (app.json and the Dockerfile's COPY lines) over the build context, with
    only the container's Python packages: container paths map to the context, or to ``workdir`` for
    the working directory."""

    def __init__(self, context: Path, workdir: Path, tmp_path: Path) -> None:
        self.app = _json(context / "map" / "app.json")
        self.mounts = {dest: context / src for dest, src in _copies((context / "Dockerfile").read_text()).items()}
        self.mounts[self.app["workingDirectory"]] = workdir
        site = _container_site_packages(context / "pip" / "requirements.txt", tmp_path / "site-packages")
        self.env = {name: self.path(value) if "/" in value else value for name, value in self.app["environment"].items()}
        # The app folder is root-owned in the image: no bytecode is written there.
        self.env.update(PATH=os.environ["PATH"], HOME=str(tmp_path), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")

    def path(self, container_path: str) -> str:
        path = container_path if container_path.startswith("/") else f"{self.app['workingDirectory']}/{container_path}"
        mount = max((m for m in self.mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len, default=None)
        return container_path if mount is None else str(self.mounts[mount] / os.path.relpath(path, mount))

    def run(self, arguments: list[str], cwd: str) -> subprocess.CompletedProcess:
        """``python3 ARGUMENTS`` in the container's ``cwd`` (a container path)."""
        return subprocess.run([sys.executable, "-S", *arguments], cwd=self.path(cwd), env=self.env, capture_output=True, text=True, timeout=900)


def test_build_context_alone_runs_the_sample_study_like_the_repository(context: Path, sample_study: Path, model_package: Path, tmp_path: Path) -> None:
    """The container's command, environment and file layout on the build context alone, outside the
    repository, with only the container's packages."""
    repo_out = tmp_path / "repo-out"
    expected = run_app(sample_study, repo_out, model_package)
    assert expected.returncode == 0, expected.stderr[-3000:]

    workdir = tmp_path / "var-holoscan"
    container = Container(context, workdir, tmp_path)
    shutil.copytree(sample_study, workdir / container.app["input"]["path"])
    python, *arguments = json.loads(container.app["command"])
    assert python == "python3"
    result = container.run([container.path(a) for a in arguments], container.app["workingDirectory"])

    assert result.returncode == 0, result.stderr[-3000:]
    (sr_path,) = sorted((workdir / container.app["output"]["path"]).glob("*.dcm"))
    (expected_sr,) = sorted(repo_out.glob("*.dcm"))
    assert _findings(sr_path) == _findings(expected_sr)
    assert str(ROOT) not in result.stdout + result.stderr, "the run must not touch the repository"


def test_the_smoke_test_passes_in_the_container_as_docs_deployment_runs_it(context: Path, tmp_path: Path) -> None:
    """``-w /opt/holoscan/app python3 -m app.smoke_test`` (docs/deployment.md §10): the sample study comes
    with the container's pydicom, the model package from HOLOSCAN_MODEL_PATH. (The app run it starts is
    a plain ``python``, which sees this environment's packages too; the app alone is checked above.)"""
    container = Container(context, tmp_path / "var-holoscan", tmp_path)

    result = container.run(["-m", "app.smoke_test"], "/opt/holoscan/app")

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "PASS"
    assert f"-m {container.env['HOLOSCAN_MODEL_PATH']}" in result.stdout.splitlines()[0]


def test_map_entrypoint_exits_0_whatever_the_app_returns(context: Path, tmp_path: Path) -> None:
    """Why docs/deployment.md has orchestrators run ``python3 /opt/holoscan/app`` themselves:
    holoscan-cli 4.2.0's entrypoint (``tools``) drops the application's exit code."""
    manifest = tmp_path / "app.json"
    manifest.write_text(json.dumps({"command": json.dumps([sys.executable, str(context / "app")])}))
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "HOLOSCAN_APP_MANIFEST_PATH": str(manifest), "HOLOSCAN_INPUT_PATH": str(empty),
           "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "out"), "HOLOSCAN_MODEL_PATH": str(empty),
           "HOLOSCAN_CONFIG_PATH": str(context / "app.config"),  # the SDK refuses to run without its config file
           "PYTHONDONTWRITEBYTECODE": "1"}

    app_alone = subprocess.run([sys.executable, str(context / "app")], env=env, capture_output=True, text=True, timeout=300)
    through_entrypoint = subprocess.run(["bash", str(context / "tools")], env=env, capture_output=True, text=True, timeout=300)

    assert app_alone.returncode == 2 and "no model package" in app_alone.stderr
    assert "no model package" in through_entrypoint.stderr + through_entrypoint.stdout
    assert through_entrypoint.returncode == 0


def test_refuses_to_package_without_a_usable_model_package(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package_map.py"), "--models", str(empty), "--out", str(tmp_path / "map")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {empty}: no model package (manifest.json) found; build one with scripts/build_model.py"
    assert not (tmp_path / "map").exists()
