"""Where the ``tritonserver`` binary and its backends are, and the environment it runs in.

Two distributions: NVIDIA's Triton container (``tritonserver`` on ``PATH``, backends in
``/opt/tritonserver/backends``: python, onnxruntime, tensorrt), and — on this project's machines — the
``nvidia-pytriton`` wheel installed in its own environment, ``.venv-triton`` (``requirements-triton.txt``:
it pins numpy<2, the app's environment has numpy 2). The wheel carries the server, the Python backend
and one backend stub per Python version; as pytriton itself does, the stub matching the server
environment's Python is put in the Python backend's folder (here a temporary copy of that folder: the
installed wheel is left as it is).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: The server's own environment (scripts/setup.sh creates it); ``TRITON_PYTHON`` names another one.
SERVER_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
NVIDIA_BACKENDS = Path("/opt/tritonserver/backends")


class ServerNotFound(RuntimeError):
    """No tritonserver binary here, or none that can work; the message says where it was looked for, or why."""


@dataclass(frozen=True)
class Distribution:
    binary: Path
    backends: Path  # the folder of backend folders (python, onnxruntime, ...)
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment
    cuda: bool = False  # the server's Python environment has torch and sees a CUDA device (the PyTorch model)

    def backend_names(self) -> set[str]:
        return {p.name for p in self.backends.iterdir() if p.is_dir()}


def _server_python_paths(python: Path) -> dict[str, Any]:
    """The server environment's Python: version, library folder, site-packages, whether torch sees a CUDA
    device (one short subprocess; torch is imported only where it is installed)."""
    probe = ("import importlib.util, json, sys, sysconfig; "
             "cuda = importlib.util.find_spec('torch') is not None and __import__('torch').cuda.is_available(); "
             "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'libdir': sysconfig.get_config_var('LIBDIR'), "
             "'purelib': sysconfig.get_paths()['purelib'], 'cuda': cuda}))")
    return json.loads(subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout)


def pytriton(python: Path, workdir: Path) -> Distribution:
    """The wheel's server, with a Python backend folder in ``workdir`` holding the stub for ``python``."""
    paths = _server_python_paths(python)
    dist = Path(paths["purelib"]) / "pytriton" / "tritonserver"
    if not dist.is_dir():
        raise ServerNotFound(f"{python}: no nvidia-pytriton wheel in its environment ({dist}); requirements-triton.txt has it")
    backends = workdir / "backends"
    shutil.copytree(dist / "backends", backends, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(dist / "python_backend_stubs" / paths["version"] / "triton_python_backend_stub", backends / "python")
    env = {
        # the stub links libpython: the server environment's own (a pyenv interpreter's is not on the
        # loader's path; the system's would be another build: "_recursion_count" errors), then the wheel's libs
        "LD_LIBRARY_PATH": os.pathsep.join([paths["libdir"], str(Path(paths["purelib"]) / "nvidia_pytriton.libs"),
                                            os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep),
        # the Python model (model.py) imports numpy and onnxruntime from the server environment, and this
        # checkout's ``operators`` package (triton_python_model.py)
        "PYTHONPATH": os.pathsep.join([paths["purelib"], str(ROOT)]),
        "PATH": os.pathsep.join([str(python.parent), os.environ.get("PATH", "")]),
    }
    return Distribution(dist / "bin" / "tritonserver", backends, env, bool(paths["cuda"]))


def find(workdir: Path) -> Distribution:
    """``TRITON_PYTHON`` or ``.venv-triton`` (the pytriton wheel), else ``tritonserver`` on PATH (NVIDIA's container)."""
    python = Path(os.environ.get("TRITON_PYTHON") or SERVER_PYTHON)
    if python.is_file():
        return pytriton(python, workdir)
    binary = shutil.which("tritonserver")
    if binary and NVIDIA_BACKENDS.is_dir():
        return Distribution(Path(binary), NVIDIA_BACKENDS, {"PYTHONPATH": str(ROOT)})
    raise ServerNotFound(f"no Triton server: neither {python} (bash scripts/setup.sh creates it from requirements-triton.txt) "
                         f"nor tritonserver on PATH with {NVIDIA_BACKENDS} (NVIDIA's Triton container)")
