"""The listener's Storage SCP against hostile peers on loopback (127.0.0.1 only), one test per case of
issue 13. Each test runs a well-behaved sender at the same time and checks that it lost nothing: every
instance it sent was acknowledged and is in the spool. The SCP runs in this process (bound to
127.0.0.1), the peers are pynetdicom associations or raw sockets; every wait is bounded."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE

from app import logging_policy
from app.listener.config import Destination, ListenerConfig
from app.listener.health import HealthEndpoint
from app.listener.journal import Journal
from app.listener.scp import StorageSCP
from app.listener.spool import Spool
from tests.support.hostile_peers import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RQ,
    P_DATA_TF,
    TIMEOUT_S,
    Scp,
    WellBehavedSender,
    associate_rq,
    closed_within,
    connect,
    data_sets_sent_as_encoded,
    pdu_header,
    read_pdu,
    send_as_encoded,
    write_deflate_bomb,
)
from tests.support.listener_peers import LISTENER_AE, SENDER_AE, make_ct_studies, wait_for


@dataclass
class RunningSCP:
    scp: StorageSCP
    spool: Spool
    port: int

    @property
    def address(self) -> Scp:
        return Scp("127.0.0.1", self.port, LISTENER_AE)

    def spooled(self) -> set[str]:
        """SOP Instance UIDs of the instances in the spool."""
        return {p.name.removesuffix(".dcm") for p in self.spool.arrivals_dir.glob("*/*.dcm")}

    def sender(self, files: list[Path]) -> WellBehavedSender:
        """A well-behaved sender, started."""
        return WellBehavedSender(self.address, files).start()


@pytest.fixture()
def start_scp(tmp_path: Path) -> Iterator[Callable[..., RunningSCP]]:
    """Starts the listener's SCP on 127.0.0.1 (a free port) with ``settings``; stops it afterwards."""
    running: list[tuple[StorageSCP, Journal]] = []

    def start(**settings: object) -> RunningSCP:
        config = ListenerConfig(**{
            "spool_dir": tmp_path / "spool", "output_dir": tmp_path / "output", "model_dir": tmp_path / "models",
            "allowed_calling_ae_titles": (SENDER_AE,), "destination": Destination.parse("PACS@127.0.0.1:11113"),
            "ae_title": LISTENER_AE, "port": 0, "quiet_period_s": 600.0, "min_free_bytes": 64 * 2**20, **settings,
        })
        journal = Journal(config.spool_dir / "journal.jsonl")
        spool = Spool(config.spool_dir, journal, config.quiet_period_s, config.max_spool_bytes, config.min_free_bytes)
        scp = StorageSCP(config, spool)
        running.append((scp, journal))
        return RunningSCP(scp, spool, scp.start())

    yield start
    for scp, journal in running:
        scp.stop()
        journal.close()


def _assert_lost_nothing(good: WellBehavedSender, scp: RunningSCP) -> None:
    """The well-behaved sender finished, every instance it sent was acknowledged and is in the spool."""
    assert good.finish().lost_nothing, f"acknowledged {good.acknowledged} of {len(good.files)}"
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in good.files}
    assert sent <= scp.spooled(), "and is in the spool"


@pytest.fixture()
def good_files(tmp_path: Path) -> list[Path]:
    (files,) = make_ct_studies(tmp_path / "good", studies=1, series_per_study=1, instances_per_series=40).values()
    return files


def test_item8_a_data_set_whose_uids_disagree_with_the_request_or_the_uid_syntax_is_refused(
        start_scp, good_files: list[Path], tmp_path: Path) -> None:
    scp = start_scp()
    forged = []
    for name, keyword, value in [("path", "SOPInstanceUID", "../../1.2.3"), ("other-instance", "SOPInstanceUID", generate_uid()),
                                 ("newline", "SeriesInstanceUID", "1.2.3\n4"), ("mr-on-ct", "SOPClassUID", MRImageStorage)]:
        ds = pydicom.dcmread(good_files[0])
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # the request's, well-formed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of the invalid UIDs, which are the point
            setattr(ds, keyword, value)  # the data set's own
            ds.save_as(tmp_path / f"{name}.dcm")
        forged.append(tmp_path / f"{name}.dcm")
    good = scp.sender(good_files)

    with data_sets_sent_as_encoded():  # the request's SOP class too: the data set's is the case
        statuses = _send_raw(scp.port, forged)

    assert statuses == [0xC000, 0xC000, 0xC000, 0xA900], "cannot understand; data set does not match SOP class (PS3.4 B.2.3)"
    _assert_lost_nothing(good, scp)
    assert len(scp.spooled()) == len(good_files), "nothing of the forged instances was spooled"


def _send_raw(port: int, files: list[Path]) -> list[int]:
    """One association, CT Image Storage only (a data set may claim another class: that is the case)."""
    ae = AE(SENDER_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.add_requested_context(CTImageStorage, pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(path).Status) for path in files]
    assoc.release()
    return statuses


def test_item4_connections_without_an_association_take_no_slot_and_are_closed_by_the_artim_timer(
        start_scp, good_files: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    scp = start_scp(max_associations=1, max_connections_per_address=4, association_request_timeout_s=1.0)
    silent = [connect(scp.address, "127.0.0.2") for _ in range(6)]
    good = scp.sender(good_files)
    for _ in range(20):  # tcpSocket probes: connect and close
        connect(scp.address, "127.0.0.3").close()

    _assert_lost_nothing(good, scp)
    assert all(closed_within(s, 5) for s in silent), "over the per-address limit at once, the others by the ARTIM timer"
    assert "Connection from 127.0.0.2 closed: max_connections_per_address (4) reached" in caplog.text
    for s in silent:
        s.close()


def test_item5_a_peer_that_stalls_inside_a_pdu_is_closed_after_the_network_timeout(start_scp, good_files: list[Path]) -> None:
    scp = start_scp(network_timeout_s=2.0)
    stalled = connect(scp.address, "127.0.0.2")
    stalled.sendall(pdu_header(A_ASSOCIATE_RQ, 1000) + b"\x00\x01" + b"\x00" * 8)  # an A-ASSOCIATE-RQ cut short
    good = scp.sender(good_files)

    assert closed_within(stalled, 10)
    _assert_lost_nothing(good, scp)
    stalled.close()


def test_item5_a_peer_that_stalls_inside_a_p_data_pdu_of_an_accepted_association_is_closed(start_scp, good_files: list[Path]) -> None:
    scp = start_scp(network_timeout_s=2.0)
    stalled = connect(scp.address, "127.0.0.2")
    stalled.sendall(associate_rq(scp.address, SENDER_AE, CTImageStorage, ExplicitVRLittleEndian))
    assert read_pdu(stalled)[0] == A_ASSOCIATE_AC
    stalled.sendall(pdu_header(P_DATA_TF, 1000) + bytes(10))  # a P-DATA-TF cut short
    good = scp.sender(good_files)

    assert closed_within(stalled, 10)
    _assert_lost_nothing(good, scp)
    stalled.close()


def test_item6_a_pdu_longer_than_max_pdu_bytes_is_refused_before_it_is_read(
        start_scp, good_files: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    scp = start_scp()
    huge = connect(scp.address, "127.0.0.2")
    huge.sendall(pdu_header(A_ASSOCIATE_RQ, 256 * 2**20) + b"\x00\x01" + b"\x00" * 1000)  # announces a 256 MiB A-ASSOCIATE-RQ
    good = scp.sender(good_files)

    assert closed_within(huge, 5), "closed at once, not after reading (or waiting for) 256 MiB"
    _assert_lost_nothing(good, scp)
    assert f"a PDU of {256 * 2**20} bytes exceeds max_pdu_bytes ({2**20})" in caplog.text
    huge.close()



def test_item6_a_data_set_larger_than_max_instance_bytes_aborts_its_association_as_it_arrives(
        start_scp, good_files: list[Path], caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    scp = start_scp(max_instance_bytes=256 * 2**10, max_pdu_bytes=16 * 2**10)
    big = pydicom.dcmread(good_files[0])
    big.SOPInstanceUID = big.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    big.Rows = big.Columns = 512  # 512 KiB of pixel data
    big.PixelData = bytes(512 * 512 * 2)
    big.save_as(tmp_path / "big.dcm")
    good = scp.sender(good_files)

    ae = AE(SENDER_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.add_requested_context(CTImageStorage, big.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    status = assoc.send_c_store(tmp_path / "big.dcm")

    assert "Status" not in status, "no response: the association was aborted"
    wait_for(lambda: assoc.is_aborted, 5, "the A-ABORT at the sender")
    _assert_lost_nothing(good, scp)
    assert big.SOPInstanceUID not in scp.spooled()
    assert "a data set exceeds max_instance_bytes (262144)" in caplog.text


def test_item6_a_deflate_bomb_is_refused_without_inflating_it(
        start_scp, good_files: list[Path], caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    scp = start_scp()
    bomb = write_deflate_bomb(tmp_path / "bomb.dcm", good_files[0], 256 * 2**20)  # ~270 KB on the wire
    good = scp.sender(good_files)

    assert send_as_encoded(scp.address, [bomb]) == [0xA700]

    _assert_lost_nothing(good, scp)
    assert len(scp.spooled()) == len(good_files)
    assert "max_header_bytes (1048576)" in caplog.text


def test_item12_a_wrong_called_ae_title_a_refused_sop_class_and_a_silent_connection_each_get_one_clear_line(
        start_scp, good_files: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    scp = start_scp(storage_sop_classes=(CTImageStorage,), association_request_timeout_s=1.0)
    silent = connect(scp.address, "127.0.0.2")
    good = scp.sender(good_files)

    wrong_called = AE(SENDER_AE)
    wrong_called.add_requested_context(CTImageStorage)
    assert wrong_called.associate("127.0.0.1", scp.port, ae_title="NOT-THE-SCP").is_rejected
    mixed = AE(SENDER_AE)
    mixed.add_requested_context(CTImageStorage)
    mixed.add_requested_context(MRImageStorage)
    assoc = mixed.associate("127.0.0.1", scp.port, ae_title=LISTENER_AE)
    assert assoc.is_established and [c.abstract_syntax for c in assoc.accepted_contexts] == [CTImageStorage]
    assoc.release()
    assert closed_within(silent, 5)

    _assert_lost_nothing(good, scp)
    log = caplog.text
    assert "Association from 127.0.0.1 (calling AE 'STORESCU') rejected: called AE title 'NOT-THE-SCP' is not 'BIOMEDCLIP'" in log
    assert "Association from 127.0.0.1: presentation context for MR Image Storage rejected" in log
    assert "Connection from 127.0.0.2 closed: no A-ASSOCIATE-RQ within association_request_timeout_s (1 s)" in log
    silent.close()


@pytest.fixture()
def listener_log() -> Iterator[io.StringIO]:
    """The listener's own logging (``python -m app.listener`` installs it), into a buffer."""
    stream = io.StringIO()
    handler = logging_policy.install_for_listener(stream)
    yield stream
    logging.getLogger().removeHandler(handler)
    logging.captureWarnings(False)


def test_item9_library_messages_about_non_conformant_uids_keep_the_uids_out_of_the_log(
        start_scp, good_files: list[Path], listener_log: io.StringIO, tmp_path: Path) -> None:
    scp = start_scp()
    ds = pydicom.dcmread(good_files[0])
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.0123"  # a leading zero: tolerated, but pynetdicom warns quoting it
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.0456"
    ds.save_as(tmp_path / "leading-zero.dcm")
    good = scp.sender(good_files)

    assert send_as_encoded(scp.address, [tmp_path / "leading-zero.dcm"]) == [0x0000]
    logging.getLogger("app.listener.scp").warning("forged? %s", "a\n2026-11-29 INFO app.listener: forged line")

    _assert_lost_nothing(good, scp)
    log = listener_log.getvalue()
    assert "message withheld" in log, "pynetdicom did warn"
    assert "0123" not in log and "0456" not in log
    assert "forged? a\\x0a2026-11-29 INFO" in log and "\n2026-11-29 INFO app.listener: forged" not in log


def _health(port: int) -> tuple[int, dict]:
    """``GET /healthz`` on the listener's health port: (HTTP status, JSON body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_item4_the_health_endpoint_costs_no_dicom_slot_and_answers_503_when_the_spool_is_full(
        start_scp, good_files: list[Path]) -> None:
    """With one association and one connection allowed, the sender holds both while 50 health checks
    are answered 200; a listener whose spool holds more than ``max_spool_bytes`` answers 503."""
    scp = start_scp(max_associations=1, max_connections=1)
    health = HealthEndpoint(scp.scp, scp.spool, "127.0.0.1", 0)
    health.start()
    try:
        good = scp.sender(good_files)
        wait_for(lambda: good.statuses, TIMEOUT_S, "the sender's first C-STORE")
        answers = [_health(health.port) for _ in range(50)]
        still_sending = len(good.statuses) < len(good_files)
        _assert_lost_nothing(good, scp)
        assert [code for code, _ in answers] == [200] * 50
        assert answers[0][1] == {"status": "ok", "checks": {"scp_accepting": True, "spool_writable": True, "spool_within_limits": True}}
        assert still_sending, "the checks ran while the sender held the only slot"
        assert _get(health.port, "/") == 404
    finally:
        health.stop()

    full = start_scp(max_spool_bytes=10**6)  # the same spool, now holding the sender's ~1.6 MB
    health = HealthEndpoint(full.scp, full.spool, "127.0.0.1", 0)
    health.start()
    try:
        code, body = _health(health.port)
    finally:
        health.stop()
    assert code == 503 and body["status"] == "unavailable"
    assert body["checks"] == {"scp_accepting": True, "spool_writable": True, "spool_within_limits": False}
    assert body["spool_limit"].startswith("spool limit reached (") and body["spool_limit"].endswith(" of 1000000 bytes used)")


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT_S) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
