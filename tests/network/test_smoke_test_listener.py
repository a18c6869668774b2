"""``python -m app.smoke_test --listener``: the sample study pushed to a real listener, the SR awaited at
the smoke test's own Storage SCP and checked; FAIL with the reason when the deployment is broken.
The listener and the smoke test run in a private network namespace whose only interface is ``lo``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.support.listener_peers import LISTENER_PORT, PACS_PORT, SENDER_AE, ListenerProcess, LoopbackNamespace, listener_config

pytestmark = pytest.mark.skipif(not LoopbackNamespace.available(),
                                reason="needs `unshare --net` (CAP_SYS_ADMIN) to give the listener and the smoke test a loopback-only network")
ROOT = Path(__file__).resolve().parents[2]
SMOKE_AE = "SMOKETEST"


@pytest.fixture()
def ns():
    namespace = LoopbackNamespace()
    yield namespace
    namespace.close()


def smoke_test(ns: LoopbackNamespace, *args: object, timeout_s: float = 600):
    command = [sys.executable, "-m", "app.smoke_test", "--listener", f"127.0.0.1:{LISTENER_PORT}", "--pacs-port", PACS_PORT,
               "--timeout", timeout_s, *args]
    return ns.run(command, cwd=ROOT, timeout=timeout_s + 120)


def test_smoke_test_passes_through_a_running_listener(ns, model_package: Path, tmp_path: Path) -> None:
    config = listener_config(tmp_path, model_package, quiet_period_s=1, allowed_calling_ae_titles=[SENDER_AE, SMOKE_AE])
    listener = ListenerProcess(ns, config, tmp_path / "listener.log").start()
    try:
        refused = smoke_test(ns, "--calling-ae", "NOTALLOWED", timeout_s=30)
        passed = smoke_test(ns, "-m", model_package)
    finally:
        listener.stop()

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "FAIL  push: association NOTALLOWED -> BIOMEDCLIP@127.0.0.1:11112 rejected" in refused.stdout

    assert passed.returncode == 0, passed.stdout + passed.stderr[-3000:] + (tmp_path / "listener.log").read_text()[-3000:]
    lines = passed.stdout.splitlines()
    assert lines[1] == "PASS  push: 7 instances stored by BIOMEDCLIP@127.0.0.1:11112"
    assert lines[2].startswith(f"PASS  SR returned: by C-STORE to 127.0.0.1:{PACS_PORT} after ")
    assert [line.split(":")[0] for line in lines[3:7]] == ["PASS  DICOM SR", "PASS  study", "PASS  model", "PASS  findings"]
    assert lines[-1] == "PASS"


def test_smoke_test_fails_when_the_listeners_model_package_is_broken(ns, model_package: Path, tmp_path: Path) -> None:
    broken = tmp_path / "models" / "biomedclip"
    shutil.copytree(model_package, broken)
    (broken / "manifest.json").write_text("{")
    config = listener_config(tmp_path, broken, quiet_period_s=1, allowed_calling_ae_titles=[SMOKE_AE])
    listener = ListenerProcess(ns, config, tmp_path / "listener.log").start()
    try:
        result = smoke_test(ns, timeout_s=45)
    finally:
        listener.stop()

    assert result.returncode == 1, result.stdout + result.stderr
    assert "PASS  push: 7 instances stored" in result.stdout
    assert f"FAIL  SR returned: none at 127.0.0.1:{PACS_PORT} within 45 s; see the listener's log and output folder" in result.stdout
    assert result.stdout.splitlines()[-1] == "FAIL (1 of 2 checks failed)"
    assert "no SR, exit code 2 (nothing usable in the study)" in (tmp_path / "listener.log").read_text(), "the reason is in the listener's log"
