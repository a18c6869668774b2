"""docs/deployment.md's run examples give the container the stack size Holoscan asks for: every
``docker run`` passes it, and the Kubernetes Job's wrapper command line really sets it."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

DOCUMENT = (ROOT / "docs" / "deployment.md").read_text()
#: Holoscan 4.2.0's recommended minimum (holoscan/core/__init__.py): 32 MiB.
STACK_BYTES = 32 * 2**20


def _blocks(language: str | None = None) -> list[str]:
    """The fenced code blocks (of one language), indentation removed (some sit in list items)."""
    blocks, current, indent, opened = [], [], 0, None
    for line in DOCUMENT.splitlines():
        fence = line.strip().startswith("```")
        if opened is None and fence:
            opened, indent, current = line.strip()[3:], len(line) - len(line.lstrip()), []
        elif fence:
            if language is None or opened == language:
                blocks.append("\n".join(current) + "\n")
            opened = None
        elif opened is not None:
            current.append(line[indent:])
    return blocks


def _docker_runs() -> list[str]:
    """Each ``docker run`` command of the document that runs the MAP (Holoscan's stack size is the MAP's;
    NVIDIA's Triton container is not a Holoscan application), its continuation lines joined."""
    commands = [line for block in _blocks() for line in block.replace("\\\n", " ").splitlines()]
    return [command for command in commands if "docker run" in command and "nvcr.io/nvidia/tritonserver" not in command]


def test_every_docker_run_example_sets_the_stack_size() -> None:
    runs = _docker_runs()
    assert len(runs) >= 3
    assert all(f"--ulimit stack={STACK_BYTES}" in run for run in runs), [run for run in runs if "--ulimit stack" not in run]


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_STACK)[1] not in (resource.RLIM_INFINITY,) and
                    resource.getrlimit(resource.RLIMIT_STACK)[1] < STACK_BYTES,
                    reason="this machine's hard stack limit is below 32 MiB: a shell cannot raise its soft limit that far")
def test_the_kubernetes_wrapper_command_sets_the_stack_size_and_execs_the_app() -> None:
    (job,) = [doc for block in _blocks("yaml") for doc in yaml.safe_load_all(block) if doc and doc.get("kind") == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["python3", "/opt/holoscan/app"]
    probe = [sys.executable, "-c", "import os, resource; print(resource.getrlimit(resource.RLIMIT_STACK)[0], os.getppid())"]

    result = subprocess.run([*container["command"], *probe], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    soft, parent = map(int, result.stdout.split())
    assert soft == STACK_BYTES
    assert parent == subprocess.os.getpid(), "exec: the app replaces the shell (its exit code is the container's)"


def test_the_base_image_and_gpu_architectures_named_are_those_of_the_pins() -> None:
    import json

    import torch

    base = json.loads((ROOT / "deploy" / "artifacts.json").read_text())["4.2.0"]["holoscan"]["base-images"]["dgpu"]
    assert f"`FROM {base}`" in DOCUMENT
    assert f"`{' '.join(torch.cuda.get_arch_list())}`" in DOCUMENT, "the architectures the installed torch wheel has kernels for"
    assert f"`{torch.__version__}`" in DOCUMENT and f"`{torch.version.cuda}`" in DOCUMENT


def test_the_image_size_figures_are_the_measured_ones() -> None:
    import json

    measured = json.loads((ROOT / "benchmarks" / "map_footprint.json").read_text())
    assert f"{measured['python_packages']} pins) | **{measured['python_packages_gib']} GiB** installed" in DOCUMENT
    assert f"| **{measured['model_package_gib']:.2f} GiB** |" in DOCUMENT
