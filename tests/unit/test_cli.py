"""What ``python app`` answers when its arguments cannot work: one ``error:`` line on stderr, exit code 2
(README "Exit codes"), no traceback, nothing written to the output folder (an earlier run's report
stays), found before Holoscan is even imported. Also its own ``--help`` and ``--version``. (A truncated
model manifest: tests/integration/test_app_end_to_end.py, which has a model package.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from app import cli
from tests.conftest import ROOT, tree_digest

#: Printed by Holoscan's executor once a graph runs: absent when the app stopped before the pipeline.
PIPELINE_STARTED = "gxf_executor"


def _app(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python app ARGUMENTS`` in ``cwd``, without the SDK's folder variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLOSCAN_")}
    return subprocess.run([sys.executable, str(ROOT / "app"), *arguments], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and PIPELINE_STARTED not in result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.fixture()
def earlier_output(tmp_path: Path) -> Path:
    """``tmp_path/output`` as an earlier run left it: an SR and its run report."""
    output = tmp_path / "output"
    output.mkdir()
    (output / "run_report.json").write_text('{"status": "completed"}\n')
    (output / "2.25.1.dcm").write_bytes(b"an earlier SR")
    return output


def test_no_arguments_names_the_missing_input_and_leaves_the_output_folder_alone(tmp_path: Path, earlier_output: Path) -> None:
    before = tree_digest(earlier_output)
    line = _one_error_line(_app(cwd=tmp_path))
    assert line == "error: no input folder: give -i INPUT_DIR or set HOLOSCAN_INPUT_PATH (see python app --help)"
    assert tree_digest(earlier_output) == before


def test_an_input_that_is_a_file_is_refused(sample_study: Path, tmp_path: Path) -> None:
    one_file = next(path for path in sample_study.rglob("*") if path.is_file())
    line = _one_error_line(_app("-i", str(one_file), "-o", str(tmp_path / "out"), "-m", str(tmp_path), cwd=tmp_path))
    assert line == f"error: {one_file}: the input is a file; give the folder that holds the study (-i)"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """No file can be created in ``folder``: mode 555, or for root (whom modes do not stop) the immutable attribute."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i (an ext4-like file system and CAP_LINUX_IMMUTABLE): no read-only folder")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_output_folder_is_refused_before_the_pipeline_runs(sample_study: Path, tmp_path: Path, earlier_output: Path) -> None:
    before = tree_digest(earlier_output)
    with _read_only(earlier_output):
        line = _one_error_line(_app("-i", str(sample_study), "-o", str(earlier_output), "-m", str(tmp_path), cwd=tmp_path))
    assert line.startswith(f"error: {earlier_output}: cannot write to the output folder (")
    assert tree_digest(earlier_output) == before


def test_help_lists_this_apps_options_and_variables_not_holoscans(tmp_path: Path) -> None:
    result = _app("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("-i INPUT_DIR", "-o OUTPUT_DIR", "-m MODEL_DIR", "HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH",
                   "HOLOSCAN_MODEL_PATH", "BIOMEDCLIP_APP_CONFIG", "exit codes"):
        assert option in result.stdout, option
    assert "--driver" not in result.stdout and "--fragments" not in result.stdout


def test_version_is_the_application_version_of_app_yaml(tmp_path: Path) -> None:
    result = _app("--version", cwd=tmp_path)
    version = yaml.safe_load((ROOT / "app.yaml").read_text())["application"]["version"]
    assert (result.returncode, result.stdout.strip()) == (0, f"python app {version}")
    assert version != "0.0.0"


def test_an_unknown_option_is_a_one_line_error(tmp_path: Path) -> None:
    line = _one_error_line(_app("--fragments", "all", cwd=tmp_path))
    assert line.startswith("error: unrecognized arguments: --fragments all")


def test_the_sdk_variables_stand_for_missing_options_and_an_option_wins(
    sample_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOLOSCAN_INPUT_PATH", str(sample_study))
    monkeypatch.setenv("HOLOSCAN_OUTPUT_PATH", str(tmp_path / "from-env"))
    monkeypatch.setenv("HOLOSCAN_MODEL_PATH", str(tmp_path))
    arguments = cli.parse(["-o", str(tmp_path / "from-option")])
    assert (arguments.input, arguments.output, arguments.model) == (sample_study, tmp_path / "from-option", tmp_path)
    assert arguments.sdk_argv("app")[1:] == ["app", "-i", str(sample_study), "-o", str(tmp_path / "from-option"), "-m", str(tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from-option", "input"], "the output folder made, no probe left"


def test_a_bad_setting_is_a_one_line_error_before_anything_runs(sample_study: Path, tmp_path: Path, earlier_output: Path) -> None:
    config = shutil.copytree(ROOT / "app" / "config", tmp_path / "config") / "app.json"
    config.write_text(config.read_text().replace('"min_margin": 0.1', '"min_margin": "0.1"'))
    before = tree_digest(earlier_output)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLOSCAN_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "app"), "-i", str(sample_study), "-o", str(earlier_output), "-m", str(tmp_path)],
        env={**env, "BIOMEDCLIP_APP_CONFIG": str(config)}, capture_output=True, text=True, timeout=300,
    )
    assert _one_error_line(result) == f"error: {config}: structured_report.min_margin: must be a number from 0 to 1, not '0.1'"
    assert tree_digest(earlier_output) == before


def test_an_earlier_sr_that_is_not_one_is_a_one_line_error_before_anything_runs(sample_study: Path, tmp_path: Path, earlier_output: Path) -> None:
    """``--supersedes`` (the listener's partial-study policy) names an image, not an SR: refused, naming the file."""
    image = next(p for p in sample_study.rglob("*") if p.is_file())
    before = tree_digest(earlier_output)
    result = _app("-i", str(sample_study), "-o", str(earlier_output), "-m", str(tmp_path), "--supersedes", str(image), cwd=tmp_path)
    assert _one_error_line(result) == f"error: {image}: the earlier SR is not a Structured Report (Modality 'CT')"
    assert tree_digest(earlier_output) == before


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:", ":8000", "127.0.0.1:0", "127.0.0.1:65536", "http://127.0.0.1:8000",
                                   "127.0.0.1:8000/v2", "a b:8000", "::1:8000"])
def test_a_bad_triton_server_is_a_one_line_error_before_anything_runs(value: str, sample_study: Path, tmp_path: Path, earlier_output: Path) -> None:
    before = tree_digest(earlier_output)
    line = _one_error_line(_app("-i", str(sample_study), "-o", str(earlier_output), "-m", str(tmp_path), "-t", value, cwd=tmp_path))
    assert line == f"error: -t {value!r}: expected HOST:PORT, the Triton server's HTTP address (e.g. 127.0.0.1:8000)"
    assert tree_digest(earlier_output) == before


@pytest.mark.parametrize("value", ["127.0.0.1:8000", "localhost:1", "triton.radiology.svc:8000", "[::1]:65535"])
def test_triton_server_netloc_stands_for_a_missing_t_and_t_wins(value: str, sample_study: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    folders = ["-i", str(sample_study), "-o", str(tmp_path / "out"), "-m", str(tmp_path)]
    monkeypatch.setenv(cli.TRITON_ENV, value)
    assert cli.parse(folders).triton_server == value
    assert cli.parse([*folders, "-t", "127.0.0.2:9"]).triton_server == "127.0.0.2:9"
    monkeypatch.setenv(cli.TRITON_ENV, "")
    assert cli.parse(folders).triton_server is None  # the SDK's default: empty is none
    assert "-t" not in cli.parse([*folders, "-t", value]).sdk_argv("app"), "the SDK would connect its own models"
