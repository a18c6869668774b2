"""The listener with real DICOM peers on loopback: dcmtk storescu sends, dcmtk storescp (or Orthanc)
plays the PACS, the MAP runs once per study, the SR arrives at the PACS and passes dciodvfy.
Every peer runs in a private network namespace whose only interface is ``lo``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage

from app.listener.jobs import ROUTINE_NICENESS
from tests.support.listener_peers import (
    LISTENER_AE,
    LISTENER_PORT,
    PACS_AE,
    PACS_PORT,
    ROOT,
    SENDER_AE,
    DcmtkPacs,
    ListenerProcess,
    LoopbackNamespace,
    OrthancPacs,
    echo,
    listener_config,
    make_ct_studies,
    make_dose_report,
    make_non_image_instances,
    make_truncated_copy,
    map_jobs,
    storescu,
    storescu_popen,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(not LoopbackNamespace.available(), reason="needs `unshare --net` (CAP_SYS_ADMIN) to confine peers that listen on all interfaces"),
    pytest.mark.skipif(not shutil.which("storescu") or not shutil.which("storescp"), reason="needs dcmtk (scripts/setup.sh installs it)"),
]
JOB_TIMEOUT_S = 600  # one MAP run is ~10 s of CPU; other work may share the cores


@pytest.fixture()
def ns():
    namespace = LoopbackNamespace()
    yield namespace
    namespace.close()


@pytest.fixture()
def started(ns: LoopbackNamespace, tmp_path: Path):
    """Starts listeners and peers for a test and stops whatever is still running afterwards."""
    running: list = []

    def start(thing):
        running.append(thing)
        return thing

    yield start
    for thing in reversed(running):
        thing.stop()


def _headers(files: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in files]


def _assert_valid_sr_of(sr_path: Path, study: list[pydicom.Dataset]) -> pydicom.Dataset:
    sr = pydicom.dcmread(sr_path)
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert sr.StudyInstanceUID == study[0].StudyInstanceUID
    assert sr.PatientID == study[0].PatientID
    evidence = {
        series.SeriesInstanceUID
        for item in sr.CurrentRequestedProcedureEvidenceSequence
        for series in item.ReferencedSeriesSequence
    }
    assert evidence == {ds.SeriesInstanceUID for ds in study}, "the SR references every sent series"
    check = subprocess.run(["dciodvfy", str(sr_path)], capture_output=True, text=True)
    assert check.returncode == 0 and "Error" not in check.stderr, check.stderr[-3000:]
    return sr


def _run_reports(output: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(output.glob("*/run_report.json"))]


def _journal(spool: Path) -> list[dict]:
    path = spool / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_multi_series_study_from_storescu_returns_one_valid_sr_to_the_pacs(ns, started, model_package: Path, sample_study: Path, tmp_path: Path) -> None:
    pacs = started(DcmtkPacs(ns, tmp_path / "pacs"))
    listener = started(ListenerProcess(ns, listener_config(tmp_path, model_package, quiet_period_s=2), tmp_path / "listener.log").start())
    sent = _headers(sorted(p for p in sample_study.rglob("*") if p.is_file()))

    # One study over two associations: completion waits for the quiet period, not for the release.
    for series in ("CT2N", "CT5N"):
        result = storescu(ns, sample_study / series)
        assert result.returncode == 0, result.stderr

    received = wait_for(pacs.received, JOB_TIMEOUT_S, "the SR at the PACS")
    time.sleep(3)  # nothing else follows
    assert len(pacs.received()) == 1
    sr = _assert_valid_sr_of(received[0], sent)

    outputs = sorted((tmp_path / "output").glob("*/*.dcm"))
    assert [pydicom.dcmread(p).SOPInstanceUID for p in outputs] == [sr.SOPInstanceUID], "the SR is also in the output folder"
    (report,) = _run_reports(tmp_path / "output")
    assert sorted(report["files"]) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in sent), "one arrival held the whole study"
    assert report["timings_s"]["write_sr_warm_up"] < 0.01, "the job was forked warm: highdicom's tables were loaded before it"
    assert not any((tmp_path / "spool" / "arrivals").iterdir()), "the spooled study is removed once its SR is written"
    assert (tmp_path / "spool").stat().st_mode & 0o077 == 0, "only the listener's user can read the spool"

    log = (tmp_path / "listener.log").read_text()
    assert "SR delivered to PACS@127.0.0.1" in log
    identifiers = {str(ds.get(k)) for ds in sent for k in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    identifiers |= {sr.SOPInstanceUID, sr.SeriesInstanceUID}
    leaked = sorted(v for v in identifiers if len(v) >= 4 and v in log)  # shorter values (accession "2") match any log
    assert not leaked, f"identifiers in the listener's log: {leaked}"
    listener.stop()
    assert listener.process.returncode == 0


@pytest.mark.skipif(not shutil.which("Orthanc"), reason="needs Orthanc (scripts/setup.sh installs the Debian package)")
def test_orthanc_as_the_pacs_stores_the_sr(ns, started, model_package: Path, sample_study: Path, tmp_path: Path) -> None:
    orthanc = started(OrthancPacs(ns, tmp_path / "orthanc"))
    started(ListenerProcess(ns, listener_config(tmp_path, model_package, quiet_period_s=2), tmp_path / "listener.log").start())

    assert storescu(ns, sample_study).returncode == 0

    (instance_id,) = wait_for(lambda: orthanc.get("/instances"), JOB_TIMEOUT_S, "the SR in Orthanc", 0.5)
    sr_file = tmp_path / "from_orthanc.dcm"
    sr_file.write_bytes(orthanc.get(f"/instances/{instance_id}/file", raw=True))
    _assert_valid_sr_of(sr_file, _headers(sorted(p for p in sample_study.rglob("*") if p.is_file())))
    assert orthanc.get("/statistics")["CountInstances"] == 1


SEND_AS_ENCODED = """
import sys
from pathlib import Path
from tests.support.hostile_peers import Scp, send_as_encoded
print(*send_as_encoded(Scp("127.0.0.1", int(sys.argv[1]), sys.argv[2]), [Path(sys.argv[3])]))
"""


@pytest.mark.skipif(not shutil.which("Orthanc"), reason="needs Orthanc (scripts/setup.sh installs the Debian package)")
def test_a_mixed_study_pushed_by_orthanc_gets_exactly_one_sr_back_in_the_same_study_and_patient(
        ns, started, model_package: Path, tmp_path: Path) -> None:
    """Orthanc pushes a whole study (``POST /modalities/{id}/store``): a CT series, a secondary-capture
    dose report, a prior SR, key images, a presentation state and a PDF. The study's one truncated
    instance goes by pynetdicom in the same quiet period: Orthanc refuses to store a truncated file
    (``POST /instances``: 400 "Bad file format", DCMTK cannot parse it), so it cannot push one."""
    (study_uid, ct), = make_ct_studies(tmp_path / "sent", studies=1, series_per_study=1, instances_per_series=5).items()
    others = [make_dose_report(ct[0], tmp_path / "sent"), *make_non_image_instances(tmp_path / "sent" / "others", like=ct[0])]
    truncated = make_truncated_copy(ct[0], tmp_path / "sent")
    orthanc = started(OrthancPacs(ns, tmp_path / "orthanc", modalities={"listener": [LISTENER_AE, "127.0.0.1", LISTENER_PORT]}))
    config = listener_config(tmp_path, model_package, quiet_period_s=5, allowed_calling_ae_titles=[PACS_AE, SENDER_AE])
    started(ListenerProcess(ns, config, tmp_path / "listener.log").start())
    for path in [*ct, *others]:
        assert orthanc.post("/instances", path.read_bytes())["Status"] == "Success"
    (study_id,) = orthanc.get("/studies")
    pushed = set(orthanc.get("/instances"))

    sent = ns.run([sys.executable, "-c", SEND_AS_ENCODED, LISTENER_PORT, LISTENER_AE, truncated], cwd=ROOT, timeout=60)
    assert sent.stdout.split() == [str(0x0000)], sent.stdout + sent.stderr
    orthanc.post("/modalities/listener/store", json.dumps({"Resources": [study_id], "Synchronous": True}).encode())

    wait_for(lambda: set(orthanc.get("/instances")) - pushed, JOB_TIMEOUT_S, "the SR in Orthanc", 0.5)
    time.sleep(5)  # a second SR would follow within the delivery back-off
    (sr_id,) = set(orthanc.get("/instances")) - pushed
    sr_file = tmp_path / "sr-from-orthanc.dcm"
    sr_file.write_bytes(orthanc.get(f"/instances/{sr_id}/file", raw=True))
    sr = _assert_valid_sr_of(sr_file, _headers(ct))  # same Study Instance UID and Patient ID, dciodvfy clean
    assert sr.StudyInstanceUID == study_uid
    assert orthanc.get("/studies") == [study_id] and len(orthanc.get("/patients")) == 1, "Orthanc files it in the pushed study and patient"

    (report,) = _run_reports(tmp_path / "output")
    status = {name: entry["status"] for name, entry in report["files"].items()}
    uid_of = {path: f"{pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID}.dcm" for path in [*ct, *others]}
    assert [status[uid_of[p]] for p in ct] == ["used"] * len(ct)
    assert status[uid_of[others[0]]] == "refused", "the dose report: burned-in annotation"
    assert [status[uid_of[p]] for p in others[1:]] == ["skipped"] * 4, "SR, KOS, presentation state, PDF: not images"
    assert len(status) == len(ct) + len(others) + 1 and list(status.values()).count("refused") == 2, "and the truncated instance"
    (finished,) = [r for r in _journal(tmp_path / "spool") if r["event"] == "job_finished"]
    assert (finished["exit_code"], finished["refused"]) == (3, 2)


def test_a_study_with_a_refused_file_still_gets_its_sr_and_the_refusal_is_recorded(ns, started, model_package: Path, sample_study: Path, tmp_path: Path) -> None:
    images = sorted(p for p in sample_study.rglob("*") if p.is_file())
    dose_report = make_dose_report(images[0], tmp_path / "extra")
    pacs = started(DcmtkPacs(ns, tmp_path / "pacs"))
    started(ListenerProcess(ns, listener_config(tmp_path, model_package, quiet_period_s=2), tmp_path / "listener.log").start())

    assert storescu(ns, [*images, dose_report]).returncode == 0

    received = wait_for(pacs.received, JOB_TIMEOUT_S, "the SR at the PACS")
    time.sleep(3)
    assert len(pacs.received()) == 1, "delivered once, not retried as a failure"
    _assert_valid_sr_of(received[0], _headers(images))
    (report,) = _run_reports(tmp_path / "output")
    assert report["files"][f"{pydicom.dcmread(dose_report).SOPInstanceUID}.dcm"]["status"] == "refused"
    (finished,) = [r for r in _journal(tmp_path / "spool") if r["event"] == "job_finished"]
    assert (finished["exit_code"], finished["refused"]) == (3, 1)
    log = (tmp_path / "listener.log").read_text()
    assert "1 file(s) refused" in log and "job attempt 2" not in log and not list((tmp_path / "spool").glob("failed/*"))
    results = [p for p in (tmp_path / "output").rglob("*") if p.is_file()]
    assert results and {p.stat().st_mode & 0o777 for p in results} == {0o600}, "SR, run report and log for the listener's user only"
    assert {p.parent.stat().st_mode & 0o777 for p in results} == {0o700}


def test_four_concurrent_associations_of_200_instances_are_all_spooled_and_grouped_by_study(ns, started, model_package: Path, tmp_path: Path) -> None:
    studies = make_ct_studies(tmp_path / "sent", studies=2, series_per_study=2, instances_per_series=200)
    files = sorted(p for paths in studies.values() for p in paths)
    assert len(files) == 800
    pacs = started(DcmtkPacs(ns, tmp_path / "pacs"))
    started(ListenerProcess(ns, listener_config(tmp_path, model_package, quiet_period_s=3), tmp_path / "listener.log").start())

    # Each association carries instances of both studies, interleaved.
    senders = [storescu_popen(ns, files[k::4]) for k in range(4)]
    for sender in senders:
        output, _ = sender.communicate(timeout=600)
        assert sender.returncode == 0, output

    wait_for(lambda: len(pacs.received()) >= 2, 2 * JOB_TIMEOUT_S, "two SRs at the PACS")
    reports = _run_reports(tmp_path / "output")
    spooled = [sorted(r["files"]) for r in reports]
    expected = [sorted(f"{pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID}.dcm" for p in paths) for paths in studies.values()]
    assert sorted(spooled) == sorted(expected), "each study arrived whole, in its own arrival, nothing lost or mixed"
    srs = [pydicom.dcmread(p) for p in pacs.received()]
    assert sorted(sr.StudyInstanceUID for sr in srs) == sorted(studies)


def test_more_of_a_reported_study_after_a_restart_gets_an_sr_of_the_whole_study_that_supersedes_the_first(
    ns, started, model_package: Path, sample_study: Path, tmp_path: Path
) -> None:
    """The partial-study policy: one series is pushed and reported; the listener is killed (-9) and
    restarted; the other series follows. The second SR covers the whole study, in the first SR's series,
    with the first in its Predecessor Documents Sequence (PS3.3 C.17.2)."""
    pacs = started(DcmtkPacs(ns, tmp_path / "pacs"))
    config = listener_config(tmp_path, model_package, quiet_period_s=1)
    listener = ListenerProcess(ns, config, tmp_path / "listener.log").start()
    assert storescu(ns, sample_study / "CT2N").returncode == 0
    (first_path,) = wait_for(pacs.received, JOB_TIMEOUT_S, "the first SR at the PACS")
    wait_for(lambda: "SR delivered" in (tmp_path / "listener.log").read_text(), 30, "the delivery journalled", 0.1)
    first = _assert_valid_sr_of(first_path, _headers(sorted((sample_study / "CT2N").iterdir())))
    listener.kill9()

    started(ListenerProcess(ns, config, tmp_path / "listener.log").start())
    assert storescu(ns, sample_study / "CT5N").returncode == 0
    second_path, = wait_for(lambda: [p for p in pacs.received() if p != first_path], JOB_TIMEOUT_S, "the second SR at the PACS")
    time.sleep(3)  # nothing else follows
    assert len(pacs.received()) == 2

    sent = _headers(sorted(p for p in sample_study.rglob("*") if p.is_file()))
    second = _assert_valid_sr_of(second_path, sent)  # evidence: both series
    assert (second.SeriesInstanceUID, second.SeriesNumber, second.InstanceNumber) == (first.SeriesInstanceUID, first.SeriesNumber, 2)
    assert second.SOPInstanceUID != first.SOPInstanceUID
    (study,) = second.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    (instance,) = series.ReferencedSOPSequence
    assert (study.StudyInstanceUID, series.SeriesInstanceUID, instance.ReferencedSOPInstanceUID) == (
        first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)
    first_report, second_report = _run_reports(tmp_path / "output")
    assert sorted(second_report["files"]) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in sent), "the whole study was run again"
    assert len(first_report["files"]) < len(sent)
    assert not any((tmp_path / "spool" / "arrivals").iterdir())
    assert len(list((tmp_path / "spool" / "reported").iterdir())) == 1, "only the latest arrival's instances are kept"
    log = (tmp_path / "listener.log").read_text()
    assert "the whole study is run again" in log
    assert not [uid for uid in (first.SOPInstanceUID, second.SOPInstanceUID, first.SeriesInstanceUID, first.StudyInstanceUID) if uid in log]


def test_kill9_mid_receive_then_resend_gives_one_sr_with_every_instance(ns, started, model_package: Path, tmp_path: Path) -> None:
    (study_uid, files), = make_ct_studies(tmp_path / "sent", studies=1, series_per_study=1, instances_per_series=400).items()
    pacs = started(DcmtkPacs(ns, tmp_path / "pacs"))
    config = listener_config(tmp_path, model_package, quiet_period_s=4)
    listener = ListenerProcess(ns, config, tmp_path / "listener.log").start()
    sender = storescu_popen(ns, files)
    wait_for(lambda: len(list((tmp_path / "spool" / "arrivals").glob("*/*.dcm"))) >= 50, 60, "50 instances spooled", 0.01)
    listener.kill9()
    output, _ = sender.communicate(timeout=60)
    assert sender.returncode != 0, "the sender saw the association break"
    before_restart = len(list((tmp_path / "spool" / "arrivals").glob("*/*.dcm")))
    assert 50 <= before_restart < 400

    started(ListenerProcess(ns, config, tmp_path / "listener.log").start())
    assert storescu(ns, files).returncode == 0  # the sender retries the whole study

    received = wait_for(pacs.received, JOB_TIMEOUT_S, "the SR at the PACS")
    time.sleep(3)
    assert len(pacs.received()) == 1
    assert pydicom.dcmread(received[0]).StudyInstanceUID == study_uid
    (report,) = _run_reports(tmp_path / "output")
    assert len(report["files"]) == 400, "the instances spooled before the crash and the resent ones form one arrival"


def test_kill9_mid_job_and_while_delivery_is_pending_delivers_exactly_one_sr(ns, started, model_package: Path, sample_study: Path, tmp_path: Path) -> None:
    config = listener_config(tmp_path, model_package, quiet_period_s=1)
    listener = ListenerProcess(ns, config, tmp_path / "listener.log").start()
    assert storescu(ns, sample_study).returncode == 0

    # Mid-job: the MAP is running (its output is still staged under a .partial folder).
    wait_for(lambda: list((tmp_path / "output").glob(".*.partial")) and map_jobs(listener.pid), 60, "the job to start")
    time.sleep(2)
    (app_pid,) = map_jobs(listener.pid)
    listener.kill9()
    wait_for(lambda: not Path(f"/proc/{app_pid}").exists() or "Z" in Path(f"/proc/{app_pid}/stat").read_text().split()[2], 10,
             "the orphaned job to be killed with the listener")

    # The job re-runs; the PACS is down, so the SR waits for delivery; crash again then.
    listener = ListenerProcess(ns, config, tmp_path / "listener.log").start()
    wait_for(lambda: "SR delivery failed" in (tmp_path / "listener.log").read_text(), JOB_TIMEOUT_S, "a failed delivery attempt", 0.2)
    listener.kill9()
    assert len(list((tmp_path / "output").glob("*/*.dcm"))) == 1

    pacs = started(DcmtkPacs(ns, tmp_path / "pacs"))
    started(ListenerProcess(ns, config, tmp_path / "listener.log").start())
    received = wait_for(pacs.received, 60, "the SR at the PACS")
    time.sleep(3)
    assert len(pacs.received()) == 1
    sent = _headers(sorted(p for p in sample_study.rglob("*") if p.is_file()))
    sr = _assert_valid_sr_of(received[0], sent)
    assert [pydicom.dcmread(p).SOPInstanceUID for p in (tmp_path / "output").glob("*/*.dcm")] == [sr.SOPInstanceUID]
    starts = [r for r in _journal(tmp_path / "spool") if r["event"] == "job_started"]
    assert len(starts) in (0, 2), "compacted once finished, else two attempts (killed, re-run)"


def test_an_urgent_study_sent_behind_routine_ones_gets_its_sr_first(ns, started, fp32_model_package: Path, tmp_path: Path) -> None:
    """Issue 14: one job at a time; while the first routine study's job runs, two more routine studies and
    then an urgent one (by its calling AE title) arrive. The urgent study's job jumps the queue: its SR
    reaches the PACS second, before the routine ones queued ahead of it, and its app ran ``--priority urgent``."""
    pacs = started(DcmtkPacs(ns, tmp_path / "pacs"))
    config = listener_config(tmp_path, fp32_model_package, quiet_period_s=1, max_concurrent_jobs=1,
                             allowed_calling_ae_titles=[SENDER_AE, "EMERGENCY"], urgent={"calling_ae_titles": ["EMERGENCY"]})
    listener = started(ListenerProcess(ns, config, tmp_path / "listener.log").start())
    studies = make_ct_studies(tmp_path / "studies", 4, 1, 1)  # Study Instance UID -> its one instance
    first, *routine, urgent = studies
    assert storescu(ns, studies[first]).returncode == 0
    wait_for(lambda: "job attempt 1" in (tmp_path / "listener.log").read_text() and map_jobs(listener.pid), 60, "the first job", 0.1)
    (routine_app,) = map_jobs(listener.pid)
    assert _niceness(routine_app) == ROUTINE_NICENESS, "a routine job yields the cores to an urgent one"
    for study in routine:
        assert storescu(ns, studies[study]).returncode == 0
    assert storescu(ns, studies[urgent], calling_ae="EMERGENCY").returncode == 0
    wait_for(lambda: (tmp_path / "listener.log").read_text().count(" complete: ") == 4, 30, "the three studies queued", 0.1)
    assert "job attempt 1 on 1 instance(s)" in (tmp_path / "listener.log").read_text(), "the first job still runs"

    received = wait_for(lambda: len(pacs.received()) == 4 and pacs.received(), 4 * JOB_TIMEOUT_S, "the four SRs at the PACS", 0.2)
    by_arrival = sorted(received, key=lambda p: p.stat().st_mtime_ns)  # storescp writes one at a time, as received
    assert [pydicom.dcmread(p).StudyInstanceUID for p in by_arrival] == [first, urgent, *routine]
    assert sorted(report["priority"] for report in _run_reports(tmp_path / "output")) == ["routine"] * 3 + ["urgent"]


def _niceness(pid: int) -> int:
    """proc(5) /proc/PID/stat field 19."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.parametrize(
    ("settings", "calling_ae", "expected"),
    [
        ({}, "INTRUDER", "Calling AE Title Not Recognized"),
        ({"allowed_source_addresses": ["192.0.2.0/24"]}, "STORESCU", "Rejected Permanent"),
        ({"min_free_bytes": 2**60}, "STORESCU", "Local Limit Exceeded"),
    ],
    ids=["calling-ae-title", "source-address", "disk-nearly-full"],
)
def test_refused_association_is_rejected_and_nothing_is_spooled(ns, started, sample_study: Path, tmp_path: Path, settings: dict, calling_ae: str, expected: str) -> None:
    config = listener_config(tmp_path, tmp_path / "no-model-needed", quiet_period_s=1, **settings)
    listener = started(ListenerProcess(ns, config, tmp_path / "listener.log").start())

    result = storescu(ns, sample_study, calling_ae=calling_ae)

    assert result.returncode != 0
    assert "Association Rejected" in result.stderr and expected in result.stderr, result.stderr
    time.sleep(1.5)
    assert not any((tmp_path / "spool" / "arrivals").iterdir())
    assert _journal(tmp_path / "spool") == []
    assert "rejected" in listener.log.read_text()


def test_a_whole_study_push_with_non_image_instances_is_accepted_and_spooled(ns, started, sample_study: Path, tmp_path: Path) -> None:
    images = sorted(p for p in sample_study.rglob("*") if p.is_file())
    make_non_image_instances(sample_study / "others", like=images[0])
    config = listener_config(tmp_path, tmp_path / "no-model-needed", quiet_period_s=600)
    started(ListenerProcess(ns, config, tmp_path / "listener.log").start())

    result = storescu(ns, sample_study)  # storescu +sd +r: one presentation context per SOP class found

    assert result.returncode == 0 and "No presentation context" not in result.stderr, result.stderr
    sent = {f"{ds.SOPInstanceUID}.dcm" for ds in _headers(sorted(p for p in sample_study.rglob("*") if p.is_file()))}
    spooled = list((tmp_path / "spool" / "arrivals").glob("*/*.dcm"))
    assert {p.name for p in spooled} == sent, "the whole study is in one arrival"
    assert {p.stat().st_mode & 0o777 for p in spooled} == {0o600} and {p.parent.stat().st_mode & 0o777 for p in spooled} == {0o700}
    assert (tmp_path / "output").stat().st_mode & 0o777 == 0o700


HOLD_ASSOCIATION = """
import sys, time
from pynetdicom import AE
ae = AE("STORESCU")
ae.add_requested_context("1.2.840.10008.1.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="BIOMEDCLIP")
print("established" if assoc.is_established else "refused", flush=True)
sys.stdin.readline()
assoc.release()
"""


def test_associations_beyond_the_limit_are_rejected_transiently(ns, started, tmp_path: Path) -> None:
    config = listener_config(tmp_path, tmp_path / "no-model-needed", quiet_period_s=1, max_associations=1)
    started(ListenerProcess(ns, config, tmp_path / "listener.log").start())
    holder = ns.popen([sys.executable, "-c", HOLD_ASSOCIATION, "11112"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "established"

    refused = echo(ns)
    holder.communicate("release\n", timeout=30)
    assert refused.returncode != 0 and "Rejected Transient" in refused.stderr and "Local Limit Exceeded" in refused.stderr, refused.stderr
    assert wait_for(lambda: echo(ns).returncode == 0, 10, "C-ECHO once the first association is released")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(pki: Path) -> Path:
    """A test CA (ca.pem) and two certificates it signed for 127.0.0.1: server.pem/.key, client.pem/.key."""
    pki.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=pki)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
                 "-copy_extensions", "copy", "-out", f"{name}.pem", cwd=pki)
    return pki


def test_tls_with_client_certificates(ns, started, sample_study: Path, tmp_path: Path) -> None:
    pki = _make_pki(tmp_path / "pki")
    tls = {"certificate": str(pki / "server.pem"), "private_key": str(pki / "server.key"), "ca_certificates": str(pki / "ca.pem")}
    config = listener_config(tmp_path, tmp_path / "no-model-needed", quiet_period_s=600, tls=tls)
    listener = started(ListenerProcess(ns, config, tmp_path / "listener.log").start())
    client_tls = ["+tls", pki / "client.key", pki / "client.pem", "+cf", pki / "ca.pem"]

    assert echo(ns, extra=client_tls).returncode == 0
    assert storescu(ns, sample_study, extra=client_tls).returncode == 0
    assert len(list((tmp_path / "spool" / "arrivals").glob("*/*.dcm"))) == 7, "every instance is spooled when acknowledged"
    assert echo(ns).returncode != 0, "plain TCP is refused"
    assert echo(ns, extra=["+tla", "+cf", pki / "ca.pem"]).returncode != 0, "TLS without a client certificate is refused"
    listener.process.send_signal(signal.SIGTERM)
    assert listener.process.wait(timeout=20) == 0


def test_the_sr_goes_over_tls_only_to_a_pacs_whose_certificate_the_configured_ca_signed(ns, started, model_package: Path, sample_study: Path, tmp_path: Path) -> None:
    pki, stranger = _make_pki(tmp_path / "pki"), _make_pki(tmp_path / "other-ca")
    as_client = ["+tls", pki / "client.key", pki / "client.pem", "+cf", pki / "ca.pem"]
    pacs = started(DcmtkPacs(ns, tmp_path / "pacs", tls=["+tls", pki / "server.key", pki / "server.pem", "+cf", pki / "ca.pem"], echo_tls=as_client))
    assert ns.run(["echoscu", "-aec", PACS_AE, "127.0.0.1", PACS_PORT], timeout=30).returncode != 0, "the PACS refuses plain TCP"
    client = {"certificate": str(pki / "client.pem"), "private_key": str(pki / "client.key")}

    # Trusting another CA, the listener does not deliver to this PACS (and keeps the SR).
    config = listener_config(tmp_path, model_package, quiet_period_s=1, destination_tls={"ca_certificates": str(stranger / "ca.pem"), **client})
    listener = ListenerProcess(ns, config, tmp_path / "listener.log").start()
    assert storescu(ns, sample_study).returncode == 0
    wait_for(lambda: "SR delivery failed" in (tmp_path / "listener.log").read_text(), JOB_TIMEOUT_S, "a failed delivery attempt", 0.2)
    listener.stop()
    assert pacs.received() == []

    # Trusting the PACS's CA, the kept SR is delivered after the restart.
    listener_config(tmp_path, model_package, quiet_period_s=1, destination_tls={"ca_certificates": str(pki / "ca.pem"), **client})
    started(ListenerProcess(ns, config, tmp_path / "listener.log").start())
    received = wait_for(pacs.received, 60, "the SR at the PACS")
    time.sleep(2)
    assert len(pacs.received()) == 1
    _assert_valid_sr_of(received[0], _headers(sorted(p for p in sample_study.rglob("*") if p.is_file())))
    assert "SR delivered to PACS@127.0.0.1" in (tmp_path / "listener.log").read_text()
