"""Orthanc as the DICOMweb client of our server (PS3.18): Orthanc's DICOMweb plugin (Debian
orthanc-dicomweb 1.7) stores the sample study by STOW-RS, finds the SR by QIDO-RS and retrieves it by
WADO-RS into its own store. Orthanc and ``python -m app.web`` run in one private network namespace
whose only interface is ``lo`` (Orthanc listens on every interface)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage

from tests.support.listener_peers import ROOT, LoopbackNamespace, OrthancPacs, wait_for
from tests.support.phi_corpus import dciodvfy_errors
from tests.support.web import AUTH, TOKEN

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = [
    pytest.mark.skipif(not LoopbackNamespace.available(), reason="needs `unshare --net` (CAP_SYS_ADMIN) to confine Orthanc, which listens on all interfaces"),
    pytest.mark.skipif(not shutil.which("Orthanc") or not DICOMWEB_PLUGIN.exists(),
                       reason="needs Orthanc and its DICOMweb plugin (scripts/setup.sh installs orthanc and orthanc-dicomweb)"),
]
WEB_PORT = 8080  # inside the namespace: nothing else listens there
#: One app run on this 2-core machine takes 30-90 s; other work may share the cores.
JOB_TIMEOUT_S = 400


@pytest.fixture()
def ns() -> Iterator[LoopbackNamespace]:
    namespace = LoopbackNamespace()
    yield namespace
    namespace.close()


@pytest.fixture()
def web_server(ns: LoopbackNamespace, fp32_model_package: Path, tmp_path: Path) -> Iterator[Path]:
    """``python -m app.web`` as an operator runs it, inside the namespace; yields its state folder."""
    state, log = tmp_path / "web-state", tmp_path / "web.log"
    with open(log, "wb") as out:
        process = ns.popen([sys.executable, "-m", "app.web", "--port", WEB_PORT, "-m", fp32_model_package, "--state", state, "--no-demo"],
                           cwd=ROOT, env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "BIOMEDCLIP_WEB_TOKENS": f"tester:{TOKEN}"},
                           stdout=out, stderr=subprocess.STDOUT)
    try:
        ready = ns.command(["curl", "-sf", f"http://127.0.0.1:{WEB_PORT}/readyz"])
        wait_for(lambda: process.poll() is not None or subprocess.run(ready, capture_output=True).returncode == 0, 120, "the web server to be ready", 0.2)
        assert process.poll() is None, log.read_text()[-3000:]
        yield state
    finally:
        process.terminate()
        process.wait(timeout=30)


def orthanc_with_our_server(ns: LoopbackNamespace, workdir: Path) -> OrthancPacs:
    """Orthanc with the DICOMweb plugin and our server as its DICOMweb server "biomedclip" (the
    plugin's "DicomWeb" / "Servers" options), the bearer token in the plugin's HttpHeaders."""
    dicomweb = {"Enable": True, "Servers": {"biomedclip": {"Url": f"http://127.0.0.1:{WEB_PORT}/dicomweb/", "HttpHeaders": AUTH}}}
    return OrthancPacs(ns, workdir, settings={"Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": dicomweb})


def test_orthanc_stores_the_study_by_stow_finds_the_sr_by_qido_and_retrieves_it_by_wado(
        ns: LoopbackNamespace, web_server: Path, sample_study: Path, tmp_path: Path) -> None:
    """``POST /dicom-web/servers/biomedclip/stow`` (the whole study), ``…/get`` of our QIDO-RS URL
    until it lists the SR, then ``…/retrieve`` of the SR's study/series/instance: the plugin's
    retrieve asks WADO-RS for exactly the level named, so instance level (the one we serve) suffices.
    The SR lands in Orthanc in the sent study and patient, dciodvfy clean."""
    orthanc = orthanc_with_our_server(ns, tmp_path / "orthanc")
    try:
        sent = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(sample_study.rglob("*")) if p.is_file()]
        for path in sorted(p for p in sample_study.rglob("*") if p.is_file()):
            assert orthanc.post("/instances", path.read_bytes())["Status"] == "Success"
        (study_id,) = orthanc.get("/studies")
        pushed = set(orthanc.get("/instances"))
        study_uid = str(sent[0].StudyInstanceUID)

        # the plugin's STOW-RS job fails unless Referenced SOP Sequence lists every instance and nothing failed
        orthanc.post("/dicom-web/servers/biomedclip/stow", json.dumps({"Resources": [study_id], "Synchronous": True}).encode())

        def qido() -> list[dict]:
            return orthanc.post("/dicom-web/servers/biomedclip/get", json.dumps({"Uri": f"/studies/{study_uid}/instances"}).encode())

        found = wait_for(qido, JOB_TIMEOUT_S, "the SR by QIDO-RS through Orthanc", 1)
        assert isinstance(found, list) and len(found) == 1
        match = pydicom.Dataset.from_json(found[0])
        assert match.SOPClassUID == Comprehensive3DSRStorage and match.StudyInstanceUID == study_uid

        resource = {"Study": study_uid, "Series": match.SeriesInstanceUID, "Instance": match.SOPInstanceUID}
        orthanc.post("/dicom-web/servers/biomedclip/retrieve", json.dumps({"Resources": [resource], "Synchronous": True}).encode())
        (sr_id,) = set(orthanc.get("/instances")) - pushed
        sr_file = tmp_path / "sr-from-orthanc.dcm"
        sr_file.write_bytes(orthanc.get(f"/instances/{sr_id}/file", raw=True))
        sr = pydicom.dcmread(sr_file)
        assert (sr.SOPClassUID, sr.SOPInstanceUID, sr.StudyInstanceUID) == (Comprehensive3DSRStorage, match.SOPInstanceUID, study_uid)
        assert sr.PatientID == sent[0].PatientID
        assert orthanc.get("/studies") == [study_id] and len(orthanc.get("/patients")) == 1, "Orthanc files it in the sent study and patient"
        assert dciodvfy_errors(sr_file) == []
    finally:
        orthanc.stop()
