"""Urgent studies (issue 14): the listener's ``urgent`` rule on a study's first instance, received by
C-STORE from a real pynetdicom sender on loopback; the job queue that runs them first, across a restart;
and how a job tells the app (``--priority urgent``, ``-t``)."""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE

from app import cli
from app.listener.config import ConfigError, Destination, ListenerConfig, load, parser
from app.listener.file_format import dicom_file
from app.listener.jobs import JobOutcome, MapJob
from app.listener.journal import Journal
from app.listener.scp import StorageSCP
from app.listener.service import Listener
from app.listener.spool import Spool
from app.listener.urgency import UrgentRule, requested_procedure_priority
from operators.run_report import RunReport

PACS = Destination.parse("PACS@127.0.0.1:11113")
HIGH, MEDIUM = 0x0001, 0x0000  # C-STORE Priority (0000,0700), PS3.7 Annex E


def _config(tmp_path: Path, **settings: object) -> ListenerConfig:
    return ListenerConfig(spool_dir=tmp_path / "spool", output_dir=tmp_path / "output", model_dir=tmp_path / "models",
                          allowed_calling_ae_titles=("STORESCU", "EMERGENCY"), destination=PACS, min_free_bytes=0, **settings)  # type: ignore[arg-type]


def _ct(priority: str | None = None, in_request_attributes: bool = False) -> Dataset:
    """CT_small as a new study; with ``priority`` as its Requested Procedure Priority (0040,1003)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    if priority is not None and in_request_attributes:
        item = Dataset()
        item.RequestedProcedurePriority = priority
        ds.RequestAttributesSequence = Sequence([item])
    elif priority is not None:
        ds.RequestedProcedurePriority = priority
    return ds


def _write_config(tmp_path: Path, **settings: object) -> Path:
    data = {"spool_dir": "s", "output_dir": "o", "model_dir": "m", "allowed_calling_ae_titles": ["STORESCU"],
            "destination": "PACS@127.0.0.1:11113", **settings}
    path = tmp_path / "listener.json"
    path.write_text(json.dumps(data))
    return path


def test_the_urgent_rule_and_the_triton_server_are_settings_validated_like_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.TRITON_ENV, raising=False)
    config = load(parser().parse_args(["--config", str(_write_config(tmp_path, urgent={"calling_ae_titles": ["ER_CT"]}))]))
    assert config.urgent == UrgentRule(("ER_CT",), ("STAT", "HIGH")), "priorities default to STAT and HIGH"
    assert load(parser().parse_args(["--config", str(_write_config(tmp_path))])).urgent == UrgentRule((), ("STAT", "HIGH"))
    only_stat = load(parser().parse_args(["--config", str(_write_config(tmp_path, urgent={"priorities": ["STAT"]}))]))
    assert only_stat.urgent == UrgentRule((), ("STAT",))
    for bad, why in [({"calling_ae_title": ["ER"]}, "urgent: expected an object"), ({"priorities": ["stat"]}, "urgent: calling_ae_titles is a list"),
                     ({"priorities": "STAT"}, "urgent: calling_ae_titles is a list"), ({"calling_ae_titles": ["A\\B"]}, "urgent.calling_ae_titles:"),
                     (["STAT"], "urgent: expected an object")]:
        with pytest.raises(ConfigError, match="^" + re.escape(why)):
            load(parser().parse_args(["--config", str(_write_config(tmp_path, urgent=bad))]))
    for bad in ("localhost", "127.0.0.1:0", "127.0.0.1:8000/v2", 8000):
        with pytest.raises(ConfigError, match="^triton_server: .* is not HOST:PORT"):
            load(parser().parse_args(["--config", str(_write_config(tmp_path, triton_server=bad))]))


def test_with_a_triton_server_two_jobs_run_at_once_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.TRITON_ENV, raising=False)
    config_file = str(_write_config(tmp_path))
    assert load(parser().parse_args(["--config", config_file])).concurrent_jobs == 1
    with_server = load(parser().parse_args(["--config", config_file, "-t", "127.0.0.1:8000"]))
    assert (with_server.triton_server, with_server.concurrent_jobs) == ("127.0.0.1:8000", 2)
    assert load(parser().parse_args(["--config", config_file, "-t", "127.0.0.1:8000", "--max-concurrent-jobs", "4"])).concurrent_jobs == 4
    monkeypatch.setenv(cli.TRITON_ENV, "[::1]:8001")  # as python app -t
    assert load(parser().parse_args(["--config", config_file])).triton_server == "[::1]:8001"
    with pytest.raises(ConfigError, match="^max_concurrent_jobs: must be >= 1$"):
        load(parser().parse_args(["--config", config_file, "--max-concurrent-jobs", "0"]))


@pytest.mark.filterwarnings("ignore:Unknown encoding")  # the truncated copy's Specific Character Set
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
@pytest.mark.parametrize("in_request_attributes", [False, True], ids=["top-level", "request-attributes"])
def test_the_requested_procedure_priority_is_read_from_the_received_bytes(syntax: str, in_request_attributes: bool) -> None:
    ds = _ct(" stat", in_request_attributes)
    stream = DicomBytesIO()
    stream.is_implicit_VR, stream.is_little_endian = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    write_dataset(stream, ds)
    encoded = stream.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        encoded = deflater.compress(encoded) + deflater.flush()
    assert requested_procedure_priority(encoded, UID(syntax), 1 << 20) == "STAT"
    assert requested_procedure_priority(encoded[:100], UID(syntax), 1 << 20) is None, "unreadable: routine"


def test_the_first_instance_of_a_study_decides_whether_it_is_urgent_by_calling_ae_store_priority_or_requested_priority(tmp_path: Path) -> None:
    """Real C-STOREs from pynetdicom on loopback; the journal (what survives a restart) says which arrivals are urgent."""
    config = _config(tmp_path, port=0, quiet_period_s=600, urgent=UrgentRule(("EMERGENCY",), ("STAT", "HIGH")))
    journal = Journal(config.spool_dir / "journal.jsonl")
    spool = Spool(config.spool_dir, journal, config.quiet_period_s, config.max_spool_bytes, 0)
    scp = StorageSCP(config, spool)
    port = scp.start()
    sends = {  # name: (calling AE title, C-STORE priority, the study's instances' Requested Procedure Priorities)
        "routine": ("STORESCU", MEDIUM, [None]),
        "routine-procedure": ("STORESCU", MEDIUM, ["ROUTINE"]),
        "emergency-ae": ("EMERGENCY", MEDIUM, [None]),
        "store-high": ("STORESCU", HIGH, [None]),
        "stat": ("STORESCU", MEDIUM, ["STAT"]),
        "stat-in-request-attributes": ("STORESCU", MEDIUM, ["STAT*"]),
        "stat-after-the-first": ("STORESCU", MEDIUM, [None, "STAT"]),
    }
    arrival_of = {}
    try:
        for name, (calling, priority, requested) in sends.items():
            sender = AE(calling)
            sender.add_requested_context(_ct().SOPClassUID, ExplicitVRLittleEndian)
            assoc = sender.associate("127.0.0.1", port, ae_title=config.ae_title)
            study = generate_uid()
            for value in requested:
                ds = _ct(value.rstrip("*") if value else None, in_request_attributes=bool(value and value.endswith("*")))
                ds.StudyInstanceUID = study
                assert assoc.send_c_store(ds, priority=priority).Status == 0x0000
            assoc.release()
            arrival_of[name] = max(spool.arrivals_dir.iterdir(), key=lambda p: p.stat().st_mtime_ns).name
    finally:
        scp.stop()
        journal.close()
    urgent = {arrival.id for arrival in Journal(config.spool_dir / "journal.jsonl").replay().values() if arrival.urgent}
    assert {name for name, arrival in arrival_of.items() if arrival in urgent} == {"emergency-ae", "store-high", "stat", "stat-in-request-attributes"}
    assert len(set(arrival_of.values())) == len(sends)


def test_no_priority_rule_means_only_the_calling_ae_title_makes_a_study_urgent() -> None:
    rule = UrgentRule(("EMERGENCY",), ())
    assert rule.matches("EMERGENCY ", MEDIUM, lambda: None)
    assert not rule.matches("STORESCU", HIGH, _not_read)


def _not_read() -> str | None:
    raise AssertionError("without priorities in the rule the data set is not read")


class _BlockingJob:
    """Stands in for ``MapJob``: the first run waits for ``release``; every run is recorded, in order."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir, self.release, self.started = output_dir, threading.Event(), threading.Event()
        self.runs: list[tuple[str, bool]] = []

    def start(self) -> None:
        """Nothing to warm up."""

    def run(self, arrival_id: str, study: Path, predecessor: Path | None = None, urgent: bool = False) -> JobOutcome:
        self.runs.append((arrival_id, urgent))
        self.started.set()
        assert self.release.wait(30)
        output = self.output_dir / arrival_id
        output.mkdir(parents=True)
        return JobOutcome(2, output, ())  # nothing usable: no SR, no delivery to wait for


def _instance(ds: Dataset) -> bytes:
    stream = DicomBytesIO()
    stream.is_implicit_VR, stream.is_little_endian = True, True
    write_dataset(stream, ds)
    return dicom_file(ds.SOPClassUID, ds.SOPInstanceUID, ImplicitVRLittleEndian, stream.getvalue())


def _wait(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _send(listener: Listener, urgent: bool) -> str:
    """One study of one instance into the spool; returns its arrival id once completed (its quiet period over)."""
    ds = _ct()
    arrival = listener.spool.store(ds.StudyInstanceUID, ds.SOPInstanceUID, _instance(ds), urgent=lambda: urgent)
    _wait(lambda: any(r["arrival"] == arrival and r["event"] == "completed" for r in _records(listener)), "completed")
    return arrival


def test_an_urgent_arrival_queued_after_routine_ones_runs_first_and_urgent_ones_in_order(tmp_path: Path) -> None:
    listener = Listener(_config(tmp_path, quiet_period_s=0.05, max_concurrent_jobs=1))
    listener.job = job = _BlockingJob(listener.config.output_dir)  # type: ignore[assignment]
    listener.start_workers()
    try:
        running = _send(listener, urgent=False)
        _wait(job.started.is_set, "the first job started")
        queued = [(_send(listener, urgent), urgent) for urgent in (False, False, True, False, True)]
        job.release.set()
        _wait(lambda: len(job.runs) == 6, "every job ran")
    finally:
        listener.stop()
    urgent = [(a, u) for a, u in queued if u]
    routine = [(a, u) for a, u in queued if not u]
    assert job.runs == [(running, False), *urgent, *routine], "urgent first (FIFO among them), then routine in arrival order"


def test_with_a_triton_server_an_urgent_study_does_not_wait_for_the_routine_job_running(tmp_path: Path) -> None:
    """The urgent lane: with a server the jobs are light (no model), so one more job runs for an urgent study
    while every routine slot is busy; the routine studies queued still wait for theirs."""
    config = _config(tmp_path, quiet_period_s=0.05, max_concurrent_jobs=1, triton_server="127.0.0.1:8000", prefetch_embeddings=False)
    listener = Listener(config)
    listener.job = job = _BlockingJob(listener.config.output_dir)  # type: ignore[assignment]
    listener.start_workers()
    try:
        running = _send(listener, urgent=False)
        _wait(job.started.is_set, "the routine job started")
        queued = _send(listener, urgent=False)
        urgent = _send(listener, urgent=True)
        _wait(lambda: len(job.runs) == 2, "the urgent job started while the routine one runs")
        time.sleep(0.2)
        assert job.runs == [(running, False), (urgent, True)], "the queued routine study still waits"
        job.release.set()
        _wait(lambda: len(job.runs) == 3, "the queued routine job ran")
    finally:
        listener.stop()
    assert job.runs[2] == (queued, False)


def _records(listener: Listener) -> list[dict]:
    return [json.loads(line) for line in listener.journal.path.read_text().splitlines()]


def test_an_urgent_arrival_stays_urgent_and_first_across_a_restart(tmp_path: Path) -> None:
    config = _config(tmp_path, quiet_period_s=0.01)
    first = Listener(config)
    arrivals = []
    for urgent in (False, True):
        ds = _ct()
        arrivals.append(first.spool.store(ds.StudyInstanceUID, ds.SOPInstanceUID, _instance(ds), urgent=lambda u=urgent: u))  # type: ignore[misc]
        time.sleep(0.02)
        first.spool.complete_quiet_arrivals()
    first.journal.close()  # as kill -9 leaves it: both completed, no job started

    restarted = Listener(config)
    restarted.recover()
    order = [restarted.jobs.get(timeout=1) for _ in arrivals]
    restarted.journal.close()
    assert [(a.id, a.urgent) for a in order] == [(arrivals[1], True), (arrivals[0], False)]


def test_a_job_tells_the_app_its_triton_server_and_that_the_study_is_urgent(tmp_path: Path) -> None:
    urgent = MapJob(tmp_path / "models", tmp_path / "output", 60, "127.0.0.1:8000").arguments(tmp_path / "in", tmp_path / "out", urgent=True)
    assert urgent[urgent.index("-t") + 1] == "127.0.0.1:8000" and urgent[urgent.index("--priority") + 1] == "urgent"
    routine = MapJob(tmp_path / "m", tmp_path / "o", 60).arguments(tmp_path / "in", tmp_path / "out")
    assert "--priority" not in routine and "-t" not in routine


def test_the_app_takes_priority_urgent_and_its_run_report_records_it(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    folders = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(tmp_path)]
    assert cli.parse(folders).priority == "routine"
    assert cli.parse([*folders, "--priority", "urgent"]).priority == "urgent"
    with pytest.raises(cli.UsageError, match="--priority: invalid choice: 'stat'"):
        cli.parse([*folders, "--priority", "stat"])
    report = RunReport()
    report.priority = "urgent"
    assert report.as_dict()["priority"] == "urgent" and RunReport().as_dict()["priority"] == "routine"
