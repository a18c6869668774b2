"""DICOMweb against a live uvicorn on a loopback port: a real client (dicomweb-client) stores the sample
study by STOW-RS, the app runs through the listener's spool/journal/job path, and the SR comes back by
QIDO-RS and WADO-RS; bad requests get a clear 4xx and lose nothing accepted before them."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import Comprehensive3DSRStorage, generate_uid

from app.web.classifier import WarmModel
from app.web.multipart_related import join_parts
from app.web.server import create_app
from tests.support.listener_peers import wait_for
from tests.support.web import AUTH, live_server, web_config

#: One app run on this 2-core machine takes 30-90 s; two may queue.
JOB_TIMEOUT_S = 400
STOW = 'multipart/related; type="application/dicom"; boundary='


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fp32_model_package: Path) -> Iterator[tuple[str, Path]]:
    state = tmp_path_factory.mktemp("web-state")
    app = create_app(web_config(state, fp32_model_package, max_stow_bytes=50 << 20), WarmModel.load(fp32_model_package))
    with live_server(app) as base:
        yield base, state


def stow(base: str, parts: list[bytes], headers: dict[str, str] = AUTH, content_type: str | None = None) -> httpx.Response:
    body, boundary = join_parts(parts, "application/dicom")
    return httpx.post(f"{base}/dicomweb/studies", content=body, timeout=60,
                      headers={**headers, "Content-Type": content_type or STOW + boundary})


def journal(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "spool" / "journal.jsonl").read_text().splitlines()]


def encoded(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_stow_of_the_sample_study_then_its_sr_by_qido_and_wado(server: tuple[str, Path], sample_study: Path) -> None:
    base, state = server
    client = DICOMwebClient(f"{base}/dicomweb", headers=AUTH)
    study = [pydicom.dcmread(p) for p in sorted(sample_study.rglob("*")) if p.is_file()]
    study_uid = str(study[0].StudyInstanceUID)

    stored = client.store_instances(study)
    assert [str(i.ReferencedSOPInstanceUID) for i in stored.ReferencedSOPSequence] == [str(ds.SOPInstanceUID) for ds in study]
    assert "FailedSOPSequence" not in stored

    found = wait_for(lambda: client.search_for_instances(study_instance_uid=study_uid), JOB_TIMEOUT_S, "the SR by QIDO-RS", poll_s=1)
    assert isinstance(found, list) and len(found) == 1
    match = pydicom.Dataset.from_json(found[0])
    assert match.SOPClassUID == Comprehensive3DSRStorage
    sr = client.retrieve_instance(study_uid, match.SeriesInstanceUID, match.SOPInstanceUID)
    assert sr.SOPClassUID == Comprehensive3DSRStorage and sr.StudyInstanceUID == study_uid
    assert sr.PatientID == study[0].PatientID, "filed into the original study"
    evidence = {s.SeriesInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence for s in item.ReferencedSeriesSequence}
    assert evidence == {ds.SeriesInstanceUID for ds in study}
    events = [r["event"] for r in journal(state)]
    assert events[-3:] == ["job_started", "job_finished", "delivered"], "the listener's journal, one arrival"
    assert not list((state / "spool" / "arrivals").iterdir()), "the spooled instances are removed once the SR is written"


def test_refused_instances_are_listed_with_reasons_and_bad_requests_lose_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    base, state = server
    good = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    good.StudyInstanceUID, good.SOPInstanceUID = generate_uid(), generate_uid()
    truncated = encoded(pydicom.dcmread(get_testdata_file("CT_small.dcm")))[:-5000]

    mixed = stow(base, [encoded(good), b"not DICOM at all", truncated])
    assert mixed.status_code == 202, mixed.text
    response = pydicom.Dataset.from_json(mixed.json())
    assert [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence] == [good.SOPInstanceUID]
    failed = response.FailedSOPSequence
    assert [f.FailureReason for f in failed] == [0xC000, 0xC000]
    assert "not a DICOM file" in failed[0].TransactionStatusComment
    assert "truncated" in failed[1].TransactionStatusComment or "Pixel Data" in failed[1].TransactionStatusComment
    job = mixed.headers["link"].split(">")[0].lstrip("<")

    # none of these may spool anything or disturb the job under way
    before = sorted(p.name for p in (state / "spool" / "arrivals").rglob("*.dcm"))
    assert stow(base, [b"garbage", truncated]).status_code == 409
    assert stow(base, [encoded(good)], content_type="application/dicom").status_code == 415
    assert stow(base, [encoded(good)], content_type='multipart/related; type="application/json"; boundary=x').status_code == 415
    assert stow(base, [encoded(good)], headers={}).status_code == 401
    assert stow(base, [encoded(good)], headers={"Authorization": "Bearer not-the-token-at-all"}).status_code == 401
    body, boundary = join_parts([encoded(good)], "application/dicom")
    cut = httpx.post(f"{base}/dicomweb/studies", content=body[:-20], headers={**AUTH, "Content-Type": STOW + boundary}, timeout=60)
    assert cut.status_code == 400 and "closing boundary" in cut.json()["detail"]
    assert _raw_post_with_huge_content_length(base).startswith(b"HTTP/1.1 413")
    assert sorted(p.name for p in (state / "spool" / "arrivals").rglob("*.dcm")) == before

    def finished() -> dict | None:
        record = httpx.get(job, headers=AUTH, timeout=10).json()
        return record if record["state"] in ("processed", "failed") else None

    record = wait_for(finished, JOB_TIMEOUT_S, "the job of the mixed STOW", poll_s=1)
    assert isinstance(record, dict) and record["state"] == "processed" and record["instances"] == 1
    qido = httpx.get(f"{base}/dicomweb/studies/{good.StudyInstanceUID}/instances", headers=AUTH, timeout=10).json()
    assert [m["00080018"]["Value"][0] for m in qido] == record["srs"]


def _raw_post_with_huge_content_length(base: str) -> bytes:
    """A request that declares 1 TB and sends 10 bytes: answered at once, nothing read."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST /dicomweb/studies HTTP/1.1\r\nHost: {host}\r\nAuthorization: {AUTH['Authorization']}\r\n"
                     f"Content-Type: {STOW}x\r\nContent-Length: {1 << 40}\r\n\r\n0123456789".encode())
        started = time.monotonic()
        answer = conn.recv(4096)
    assert time.monotonic() - started < 5
    return answer


def test_a_stat_study_stored_by_stow_rs_is_urgent_and_a_routine_one_is_not(server: tuple[str, Path]) -> None:
    """The listener's ``urgent`` rule over HTTP: there is no calling AE title, so the first instance's
    Requested Procedure Priority decides (here in its Request Attributes Sequence, as a modality writes it)."""
    base, state = server
    studies = {}
    for priority in ("STAT", None):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
        if priority:
            request = pydicom.Dataset()
            request.RequestedProcedurePriority = priority
            ds.RequestAttributesSequence = [request]
        response = stow(base, [encoded(ds)])
        assert response.status_code == 200, response.text
        studies[priority] = response.headers["link"].split(">")[0].lstrip("<")

    def finished(job: str) -> dict | None:
        record = httpx.get(job, headers=AUTH, timeout=10).json()
        return record if record["state"] in ("processed", "failed") else None

    priorities = {}
    for priority, job in studies.items():
        record = wait_for(lambda job=job: finished(job), JOB_TIMEOUT_S, "the job", poll_s=0.5)
        assert isinstance(record, dict) and record["state"] == "processed"
        arrival = job.rsplit("/", 1)[1]  # the job is the arrival
        priorities[priority] = json.loads((state / "output" / arrival / "run_report.json").read_text())["priority"]
    assert priorities == {"STAT": "urgent", None: "routine"}
