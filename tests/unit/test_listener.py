"""The listener's settings, journal, spool and file writing, without a network: what an operator or
a crash would hit."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EncapsulatedPDFStorage,
    EnhancedCTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    XRayRadiationDoseSRStorage,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.sop_class import Verification

from app.listener.config import ConfigError, Destination, ListenerConfig, load, parser
from app.listener.delivery import DeliveryError, DeliveryQueue, store_sr
from app.listener.file_format import dicom_file
from app.listener.instance_uids import (
    IDENTIFYING_TAGS,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DOES_NOT_MATCH_SOP_CLASS,
    STUDY_INSTANCE_UID,
    HeaderTooLong,
    InstanceUIDs,
    instance_uids,
    mismatch,
    names_a_file,
    top_level_values,
)
from app.listener.jobs import JobOutcome
from app.listener.journal import COMPLETE, PROCESSED, Arrival, Journal
from app.listener.scp import IMAGE_STORAGE_BY_MODALITY, StorageSCP, selected_image_sop_classes, storage_sop_classes
from app.listener.service import Listener
from app.listener.spool import Spool
from app.listener.tcp import DUL_POLL_INTERVAL_S, LOW_LATENCY_HANDLER

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "app" / "config" / "listener.example.json"


def test_the_example_config_loads_and_flags_override_it() -> None:
    config = load(parser().parse_args(["--config", str(EXAMPLE), "--port", "4242", "--destination", "ORTHANC@[::1]:4243"]))
    assert config.bind_host == "127.0.0.1"
    assert config.port == 4242
    assert config.destination == Destination("ORTHANC", "::1", 4243)
    assert config.allowed_calling_ae_titles


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"destination": "PACS@host"}, "destination: 'PACS@host' is not AE@host:port"),
        ({"allowed_calling_ae_titles": []}, "allowed_calling_ae_titles: at least one"),
        ({"ae_title": "A\\B"}, "ae_title: 'A\\\\B' is not a valid AE title"),
        ({"quiet_period": 5}, "unknown setting(s): quiet_period"),
        ({"quiet_period_by_calling_ae": {"MODALITY": 0}}, "quiet_period_by_calling_ae: every quiet period must be a number > 0"),
        ({"quiet_period_by_calling_ae": {"MODALITY": True}}, "quiet_period_by_calling_ae: every quiet period must be a number > 0"),
        ({"quiet_period_by_calling_ae": {"MODALITY": "30"}}, "quiet_period_by_calling_ae: every quiet period must be a number > 0"),
        ({"quiet_period_by_calling_ae": {"A\\B": 30}}, "quiet_period_by_calling_ae: 'A\\\\B' is not a valid AE title"),
        ({"quiet_period_by_calling_ae": [30]}, "quiet_period_by_calling_ae: expected an object"),
        ({"storage_sop_classes": "images-only"}, "storage_sop_classes: expected 'all', 'images' or a non-empty list"),
        ({"storage_sop_classes": ["1.2.840.10008.5.1.4.1.1.2", "CT"]}, "storage_sop_classes: expected"),
        ({"allowed_source_addresses": ["10.0.0.300"]}, "allowed_source_addresses:"),
        ({"destination_tls": {"certificate": "listener.pem", "private_key": "listener.key"}}, "destination_tls: ca_certificates is required"),
        ({"destination_tls": {"ca_certificates": "ca.pem", "certificate": "listener.pem"}}, "destination_tls: certificate and private_key go together"),
        ({"prefetch_embeddings": "yes"}, "prefetch_embeddings: expected true or false"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, settings: dict, message: str) -> None:
    data = {**json.loads(EXAMPLE.read_text()), **settings}
    path = tmp_path / "listener.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as error:
        load(parser().parse_args(["--config", str(path)]))
    assert message in str(error.value)


def test_journal_replay_ignores_a_torn_last_record_and_compaction_keeps_unfinished_arrivals(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    done, pending = Arrival("a-done"), Arrival("b-pending")
    for arrival in (done, pending):
        journal.append(arrival, "opened")
        journal.append(arrival, "completed", instances=3)
    journal.append(done, "job_started", attempt=1)
    journal.append(done, "job_finished", srs=["1.2.3.dcm"])
    journal.append(done, "delivered", sr="1.2.3.dcm")
    journal.close()
    with open(journal.path, "ab") as f:  # kill -9 in the middle of an append
        f.write(b'{"arrival": "b-pending", "event": "job_sta')

    replayed = Journal(journal.path).replay()
    assert replayed["a-done"].finished and replayed["a-done"].state == PROCESSED
    assert replayed["b-pending"].state == COMPLETE and replayed["b-pending"].job_attempts == 0

    Journal(journal.path).rewrite([a for a in replayed.values() if not a.finished])
    assert list(Journal(journal.path).replay()) == ["b-pending"]
    assert journal.path.read_text().endswith("\n")


def test_journal_records_hold_no_dicom_identifiers(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    arrival = Arrival("20261127T000000-00000000")
    journal.append(arrival, "opened")
    journal.append(arrival, "completed", instances=1)
    record_keys = {k for line in journal.path.read_text().splitlines() for k in json.loads(line)}
    assert record_keys == {"arrival", "event", "time", "instances"}


@pytest.mark.parametrize(
    ("uid", "spooled"),
    [("1.2.840.10008.5.1.4.1.1.2", True), ("1.2.840.0123.4", True), ("../../etc/passwd", False), ("1.2/3", False),
     ("", False), ("1." + "2" * 63, False)],
)
def test_only_uids_that_are_safe_file_names_are_spooled(uid: str, spooled: bool) -> None:
    assert names_a_file(uid) is spooled


_CT = InstanceUIDs(CTImageStorage, "1.2.3.4", "1.2.3", "1.2.3.5")


@pytest.mark.parametrize(
    ("uids", "affected_class", "affected_instance", "expected"),
    [
        (_CT, CTImageStorage, "1.2.3.4", None),
        (InstanceUIDs(CTImageStorage, "../../1.2", "1.2.3", "1.2.3.5"), CTImageStorage, "1.2.3.4", STATUS_CANNOT_UNDERSTAND),
        (InstanceUIDs(CTImageStorage, "1.2.3.4", "1.2.3", "1.2.3\n5"), CTImageStorage, "1.2.3.4", STATUS_CANNOT_UNDERSTAND),
        (InstanceUIDs(CTImageStorage, "1.2.3.4", "", "1.2.3.5"), CTImageStorage, "1.2.3.4", STATUS_CANNOT_UNDERSTAND),
        (_CT, CTImageStorage, "1.2.3.9", STATUS_CANNOT_UNDERSTAND),
        (InstanceUIDs(MRImageStorage, "1.2.3.4", "1.2.3", "1.2.3.5"), CTImageStorage, "1.2.3.4", STATUS_DOES_NOT_MATCH_SOP_CLASS),
        (_CT, MRImageStorage, "1.2.3.4", STATUS_DOES_NOT_MATCH_SOP_CLASS),
    ],
    ids=["consistent", "path-as-sop-instance", "newline-in-series", "no-study", "instance-differs", "data-set-class", "request-class"],
)
def test_the_data_sets_uids_must_match_the_request_and_the_presentation_context(uids, affected_class, affected_instance, expected) -> None:
    refused = mismatch(uids, affected_class, affected_instance, abstract_syntax=CTImageStorage)
    assert (refused[0] if refused else None) == expected
    assert refused is None or not any(uid in refused[1] for uid in ("1.2.3", "../")), "the reason names no UID"


def _encoded(ds: pydicom.Dataset, syntax: str) -> bytes:
    """The data set as a sender puts it on the wire in ``syntax`` (no File Meta)."""
    stream = DicomBytesIO()
    stream.is_implicit_VR, stream.is_little_endian = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    write_dataset(stream, ds)
    return stream.getvalue()


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("uid_length", [63, 64], ids=["odd-uid", "even-uid"])
def test_a_received_data_set_is_spooled_as_the_dicom_file_pynetdicom_would_write(syntax: str, uid_length: int) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")[:uid_length].rstrip(".")
    received = _encoded(ds, syntax)

    written = dicom_file(ds.SOPClassUID, ds.SOPInstanceUID, syntax, received)

    meta = create_file_meta(sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID, transfer_syntax=syntax)
    assert written == b"\x00" * 128 + b"DICM" + encode_file_meta(meta) + received  # what Event.encoded_dataset() returns
    read_back = pydicom.dcmread(io.BytesIO(written))
    assert read_back.file_meta.TransferSyntaxUID == syntax
    assert read_back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert read_back.PixelData == ds.PixelData and read_back.StudyInstanceUID == ds.StudyInstanceUID


def _bytes_used(spool: Spool) -> int:
    # always over the limit, so the reason states the bytes in use (the check alone: refusal() would
    # first remove kept instances to make room)
    refusal = spool._limit_reached(spool.max_bytes + 1)
    return int(refusal.split("(")[1].split()[0])


def test_a_retransmitted_instance_replaces_its_copy_in_the_spool_size_and_instance_count(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    instances = {}
    for uid in (generate_uid(), generate_uid()):
        ds.SOPInstanceUID = uid
        instances[uid] = dicom_file(ds.SOPClassUID, uid, ImplicitVRLittleEndian, _encoded(ds, ImplicitVRLittleEndian))
    (first, first_bytes), (second, second_bytes) = instances.items()
    root, study = tmp_path / "spool", ds.StudyInstanceUID
    journal = Journal(root / "journal.jsonl")
    spool = Spool(root, journal, quiet_period_s=0.0, max_bytes=10**9, min_free_bytes=0)
    empty = _bytes_used(spool)

    arrival_id = spool.store(study, first, first_bytes)
    spool.store(study, second, second_bytes)
    spool.store(study, first, first_bytes)  # the sender retried it
    assert _bytes_used(spool) == empty + len(first_bytes) + len(second_bytes)

    # A restart in the middle of the arrival: its sizes are read back from disk, and a retry still replaces.
    journal.close()
    restarted = Spool(root, Journal(journal.path), quiet_period_s=0.0, max_bytes=10**9, min_free_bytes=0)
    assert restarted.resume(Journal(journal.path).replay()[arrival_id])
    before = _bytes_used(restarted)
    assert restarted.store(study, first, first_bytes) == arrival_id
    assert _bytes_used(restarted) == before
    (completed,) = restarted.complete_quiet_arrivals()
    assert completed.instances == 2
    assert sorted(p.name for p in restarted.instances(arrival_id)) == sorted(f"{uid}.dcm" for uid in instances)


def _as_received(name: str) -> tuple[UID, bytes]:
    """A pydicom test file as a sender would transfer it: its transfer syntax and the data set's bytes."""
    path = Path(get_testdata_file(name))
    raw = path.read_bytes()
    group_length = int.from_bytes(raw[140:144], "little")  # (0002,0000) UL, right after "DICM"
    return pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID, raw[144 + group_length:]


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "JPEG2000.dcm",
                                  "SC_rgb_rle.dcm", "emri_small_jpeg_2k_lossless.dcm", "693_UNCR.dcm"])
def test_the_identifying_uids_are_read_from_the_bytes_as_received(name: str) -> None:
    syntax, received = _as_received(name)
    ds = pydicom.dcmread(get_testdata_file(name))
    assert instance_uids(received, syntax, 2**20) == InstanceUIDs(ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID)


def test_the_header_walk_finds_the_uid_of_a_ct_and_gives_up_on_a_truncated_one() -> None:
    syntax, received = _as_received("CT_small.dcm")
    walked = top_level_values(received, IDENTIFYING_TAGS, syntax.is_implicit_VR, syntax.is_little_endian)
    assert walked[STUDY_INSTANCE_UID].rstrip(b"\0") == pydicom.dcmread(get_testdata_file("CT_small.dcm")).StudyInstanceUID.encode()
    assert top_level_values(received[:500], IDENTIFYING_TAGS, False, True) is None, "cut short before the element"


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("undefined_length", [False, True], ids=["sequence-of-defined-length", "sequence-of-undefined-length"])
def test_a_study_instance_uid_nested_in_an_earlier_sequence_is_not_taken_for_the_data_sets(syntax: str, undefined_length: bool) -> None:
    """(0008,1250) Related Series Sequence precedes (0020,000D) and its items hold another study's UID."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    related = Dataset()
    related.StudyInstanceUID, related.SeriesInstanceUID = generate_uid(), generate_uid()
    related.is_undefined_length_sequence_item = undefined_length
    ds.RelatedSeriesSequence = Sequence([related])
    ds["RelatedSeriesSequence"].is_undefined_length = undefined_length
    received, syntax = _encoded(ds, syntax), UID(syntax)

    assert instance_uids(received, syntax, 2**20).study == ds.StudyInstanceUID
    walked = top_level_values(received, IDENTIFYING_TAGS, syntax.is_implicit_VR, syntax.is_little_endian)
    assert (walked is None) is undefined_length, "a sequence of defined length is stepped over; else pydicom parses it"


def test_both_ends_of_an_association_get_nodelay_and_the_short_dul_poll_interval() -> None:
    seen = {}

    def on_echo(event) -> int:
        seen["acceptor"] = (event.assoc.dul._run_loop_delay, event.assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return 0x0000

    scp = AE("SCP")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[LOW_LATENCY_HANDLER, (evt.EVT_C_ECHO, on_echo)])
    try:
        scu = AE("SCU")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="SCP", evt_handlers=[LOW_LATENCY_HANDLER])
        assert assoc.is_established
        seen["requestor"] = (assoc.dul._run_loop_delay, assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
    assert seen["acceptor"] == seen["requestor"] == (DUL_POLL_INTERVAL_S, 1)


def test_the_scp_accepts_every_storage_class_of_a_study_or_what_the_setting_says() -> None:
    rules = (ROOT / "app" / "config" / "series_selection.json").read_text()
    every = set(storage_sop_classes(load(parser().parse_args(["--config", str(EXAMPLE)])).storage_sop_classes, rules))
    assert set(selected_image_sop_classes(rules)) < every
    assert {BasicTextSRStorage, KeyObjectSelectionDocumentStorage, GrayscaleSoftcopyPresentationStateStorage,
            EncapsulatedPDFStorage, XRayRadiationDoseSRStorage} <= every
    assert storage_sop_classes("images", rules) == selected_image_sop_classes(rules)
    assert storage_sop_classes((CTImageStorage,), rules) == (CTImageStorage,)


def test_the_scp_accepts_the_image_storage_classes_of_the_modalities_the_series_selection_takes() -> None:
    rules = (ROOT / "app" / "config" / "series_selection.json").read_text()
    accepted = set(selected_image_sop_classes(rules))
    assert {CTImageStorage, EnhancedCTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, UltrasoundImageStorage} <= accepted
    assert len(accepted) == 24  # every class of IMAGE_STORAGE_BY_MODALITY: the default selection takes all its modalities
    assert BasicTextSRStorage not in accepted
    only_ct = json.dumps({"selections": [{"name": "CT only", "conditions": {"Modality": "(?i)^CT$"}}]})
    assert set(selected_image_sop_classes(only_ct)) == set(IMAGE_STORAGE_BY_MODALITY["CT"])
    no_modality_rule = json.dumps({"selections": [{"name": "any", "conditions": {"SeriesDescription": "(?i)chest"}}]})
    assert set(selected_image_sop_classes(no_modality_rule)) == accepted


def test_recovery_moves_spooled_files_it_cannot_read_aside_and_starts(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    good = dicom_file(ds.SOPClassUID, ds.SOPInstanceUID, ImplicitVRLittleEndian, _encoded(ds, ImplicitVRLittleEndian))
    corrupt = good[:200]  # accepted once (its header walk succeeded), cut short on disk
    root = tmp_path / "spool"
    journal = Journal(root / "journal.jsonl")
    spool = Spool(root, journal, quiet_period_s=0.0, max_bytes=10**9, min_free_bytes=0)
    mixed = spool.store(ds.StudyInstanceUID, "1.1", corrupt)  # read first: sorts before the good instance
    spool.store(ds.StudyInstanceUID, ds.SOPInstanceUID, good)
    only_corrupt = spool.store(generate_uid(), "1.1", corrupt)
    journal.close()

    config = ListenerConfig(spool_dir=root, output_dir=tmp_path / "output", model_dir=tmp_path / "models",
                            allowed_calling_ae_titles=("STORESCU",), destination=Destination.parse("PACS@127.0.0.1:11113"),
                            quiet_period_s=0.01)
    listener = Listener(config)
    listener.recover()

    assert [p.name for p in listener.spool.instances(mixed)] == [f"{ds.SOPInstanceUID}.dcm"]
    assert (root / "failed" / mixed / "1.1.dcm").read_bytes() == corrupt
    assert (root / "failed" / only_corrupt / "1.1.dcm").read_bytes() == corrupt
    assert not listener.spool.folder(only_corrupt).exists(), "nothing readable: discarded"
    time.sleep(0.05)  # the resumed arrival's quiet period (0.01 s) starts again at recovery
    (completed,) = listener.spool.complete_quiet_arrivals()
    assert (completed.id, completed.instances) == (mixed, 1)


@pytest.mark.parametrize(("address", "admitted"), [("127.0.0.1", True), ("::ffff:127.0.0.1", True), ("::ffff:127.0.0.2", False),
                                                    ("::1", False)])
def test_an_ipv4_peer_of_a_dual_stack_bind_is_matched_as_its_ipv4_address(tmp_path: Path, address: str, admitted: bool) -> None:
    """With a ``::`` bind, IPv4 peers arrive as IPv4-mapped IPv6 addresses (RFC 4291 §2.5.5.2); binding
    ``::`` in a test would listen on every interface, so the admission decision is checked directly."""
    config = ListenerConfig(spool_dir=tmp_path / "spool", output_dir=tmp_path / "output", model_dir=tmp_path / "models",
                            allowed_calling_ae_titles=("STORESCU",), destination=Destination.parse("PACS@127.0.0.1:11113"),
                            allowed_source_addresses=(ipaddress.ip_network("127.0.0.1/32"),), min_free_bytes=0)
    journal = Journal(config.spool_dir / "journal.jsonl")
    scp = StorageSCP(config, Spool(config.spool_dir, journal, 1.0, config.max_spool_bytes, 0))
    refused = scp.refusal("STORESCU", address)
    assert (refused is None) is admitted, refused


def test_a_deflated_data_set_is_inflated_only_as_far_as_max_header_bytes() -> None:
    """A 256 MiB private element before the UIDs deflates to ~250 KB; finding the UIDs must not inflate it."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    header = struct.pack("<HH2sxxI", 0x0007, 0x1000, b"OB", 256 * 2**20)  # (0007,1000): a private element, before (0008,0016)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = deflater.compress(header) + b"".join(deflater.compress(bytes(2**20)) for _ in range(256))
    bomb += deflater.compress(_encoded(ds, ExplicitVRLittleEndian)) + deflater.flush()
    assert len(bomb) < 2**20

    tracemalloc.start()
    try:
        with pytest.raises(HeaderTooLong, match=r"max_header_bytes \(1048576\)"):
            instance_uids(bomb, UID(DeflatedExplicitVRLittleEndian), 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_a_pacs_that_is_down_is_reported_as_no_connection_not_as_an_aborted_association() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a loopback port nothing listens on
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(DeliveryError, match=rf"^no connection to PACS@127.0.0.1:{port} \(down or unreachable\)$"):
        store_sr(Path(get_testdata_file("CT_small.dcm")), Destination("PACS", "127.0.0.1", port), "BIOMEDCLIP", 5.0)


def _age(folder: Path, days: float) -> None:
    when = time.time() - days * 86400
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (when, when))


def test_retention_removes_quarantined_studies_and_results_older_than_retention_days_but_not_work_in_progress(tmp_path: Path) -> None:
    root, output = tmp_path / "spool", tmp_path / "output"
    journal = Journal(root / "journal.jsonl")
    waiting = Arrival("20261001T000000-00000001")  # its SR was never delivered
    journal.append(waiting, "opened")
    journal.append(waiting, "completed", instances=1)
    journal.append(waiting, "job_started", attempt=1)
    journal.append(waiting, "job_finished", srs=["sr.dcm"])
    journal.close()
    folders = {name: parent / name for parent, name in [(root / "failed", "old-failed"), (root / "failed", "new-failed"),
                                                         (output, "old-result"), (output, "new-result"), (output, waiting.id)]}
    for name, folder in folders.items():
        folder.mkdir(parents=True)
        (folder / ("sr.dcm" if name == waiting.id else "x.dcm")).write_bytes(b"x" * 100)
        _age(folder, 1 if name.startswith("new") else 40)

    config = ListenerConfig(spool_dir=root, output_dir=output, model_dir=tmp_path / "models", allowed_calling_ae_titles=("STORESCU",),
                            destination=Destination.parse("PACS@127.0.0.1:11113"), retention_days=30)
    listener = Listener(config)
    before = _bytes_used(listener.spool)
    listener.recover()

    assert {name for name, folder in folders.items() if folder.exists()} == {"new-failed", "new-result", waiting.id}
    assert _bytes_used(listener.spool) == before - 100, "the quarantined bytes no longer count against the spool limit"


def test_a_calling_ae_title_can_have_its_own_quiet_period(tmp_path: Path) -> None:
    config = ListenerConfig(spool_dir=tmp_path / "spool", output_dir=tmp_path / "output", model_dir=tmp_path / "models",
                            allowed_calling_ae_titles=("STORESCU", "MODALITY"), destination=Destination.parse("PACS@127.0.0.1:11113"),
                            port=0, quiet_period_s=600, quiet_period_by_calling_ae={"MODALITY": 0.2}, min_free_bytes=0)
    journal = Journal(config.spool_dir / "journal.jsonl")
    spool = Spool(config.spool_dir, journal, config.quiet_period_s, config.max_spool_bytes, 0)
    scp = StorageSCP(config, spool)
    port = scp.start()
    try:
        studies = {}
        for calling in ("STORESCU", "MODALITY"):
            ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
            sender = AE(calling)
            sender.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            assoc = sender.associate("127.0.0.1", port, ae_title=config.ae_title)
            assert assoc.send_c_store(ds).Status == 0x0000
            assoc.release()
            studies[calling] = ds.StudyInstanceUID
        time.sleep(0.5)
        (completed,) = spool.complete_quiet_arrivals()
    finally:
        scp.stop()
        journal.close()
    assert [p.parent.name for p in config.spool_dir.glob("arrivals/*/*.dcm")].count(completed.id) == 1
    assert pydicom.dcmread(next(spool.folder(completed.id).glob("*.dcm"))).StudyInstanceUID == studies["MODALITY"]


def test_an_sr_being_sent_keeps_its_output_folder_from_retention() -> None:
    """Retention keeps the arrivals ``DeliveryQueue.arrival_ids`` names: an SR taken for sending stays named
    until it is settled, so a purge during a slow or failing attempt cannot remove the file being sent."""
    queue, stop = DeliveryQueue(), threading.Event()
    queue.put(Arrival("20261001T000000-00000001"), Path("sr.dcm"))
    pending = queue.take_due(stop)
    assert pending is not None
    assert queue.arrival_ids() == {"20261001T000000-00000001"}  # in flight: not in the heap, still in use
    queue.put(pending.arrival, pending.sr, delay_s=60, failures=1)  # the attempt failed: put back for a retry
    queue.settle(pending)
    assert queue.arrival_ids() == {"20261001T000000-00000001"}
    delivered = DeliveryQueue()
    delivered.put(Arrival("20261001T000000-00000002"), Path("sr.dcm"))
    sent = delivered.take_due(stop)
    assert sent is not None
    delivered.settle(sent)  # delivered: nothing keeps its folder any more
    assert delivered.arrival_ids() == set()


class _RecordingJob:
    """Stands in for ``MapJob``: records what each run got (instances, predecessor SR) and writes an SR."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.runs: list[tuple[list[str], Path | None]] = []

    def run(self, arrival_id: str, study: Path, predecessor: Path | None = None, urgent: bool = False) -> JobOutcome:
        self.runs.append((sorted(p.name for p in study.glob("*.dcm")), predecessor))
        output = self.output_dir / arrival_id
        output.mkdir(parents=True)
        (output / f"sr-{arrival_id}.dcm").write_bytes(b"an SR")
        return JobOutcome(0, output, (f"sr-{arrival_id}.dcm",))


def test_a_later_arrival_of_a_reported_study_is_run_on_the_whole_study_and_names_the_earlier_sr_across_a_restart(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    instances = {}
    for uid in (generate_uid(), generate_uid()):
        ds.SOPInstanceUID = uid
        instances[uid] = dicom_file(ds.SOPClassUID, uid, ImplicitVRLittleEndian, _encoded(ds, ImplicitVRLittleEndian))
    (a, a_bytes), (b, b_bytes) = instances.items()
    config = ListenerConfig(spool_dir=tmp_path / "spool", output_dir=tmp_path / "output", model_dir=tmp_path / "models",
                            allowed_calling_ae_titles=("STORESCU",), destination=Destination.parse("PACS@127.0.0.1:11113"),
                            quiet_period_s=0.01, min_free_bytes=0)

    def listener() -> tuple[Listener, _RecordingJob]:
        started = Listener(config)
        started.job = job = _RecordingJob(config.output_dir)  # type: ignore[assignment]
        started.recover()
        return started, job

    first, job = listener()
    first.spool.store(ds.StudyInstanceUID, a, a_bytes)
    time.sleep(0.02)
    (reported,) = first.spool.complete_quiet_arrivals()
    first._process(reported)
    assert job.runs == [([f"{a}.dcm"], None)]
    first.journal.append(reported, "delivered", sr=f"sr-{reported.id}.dcm")  # as the delivery thread would
    first.journal.close()

    second, job = listener()  # restarted: what was reported is known from the journal and the kept instances
    assert set(second.journal.replay()) == {reported.id}
    before = _bytes_used(second.spool)
    second.spool.store(ds.StudyInstanceUID, b, b_bytes)
    second.spool.store(ds.StudyInstanceUID, a, a_bytes)  # sent again: this copy replaces the kept one
    time.sleep(0.02)
    (later,) = second.spool.complete_quiet_arrivals()
    second._process(later)
    assert job.runs == [(sorted([f"{a}.dcm", f"{b}.dcm"]), config.output_dir / reported.id / f"sr-{reported.id}.dcm")]
    assert _bytes_used(second.spool) == before + len(b_bytes)
    assert [p.name for p in (config.spool_dir / "reported").iterdir()] == [later.id]
    records = [r for r in second.journal.replay()[later.id].records if r["event"] == "superseding"]
    assert [(r["earlier"], r["sr"]) for r in records] == [(reported.id, f"sr-{reported.id}.dcm")]
    second.journal.append(later, "delivered", sr=f"sr-{later.id}.dcm")
    second.journal.close()

    third, _ = listener()
    assert set(third.journal.replay()) == {later.id}, "the superseded arrival leaves the journal; the latest stays"
    third.journal.close()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_received_data_set_is_held_once_from_its_fragments_to_the_spool(tmp_path: Path, syntax: str) -> None:
    """Issue 13 item 6: pynetdicom assembles a data set's P-DATA fragments in a BytesIO (its DIMSE
    decoder writes each fragment to it); from there to the spooled file nothing may hold a second copy.
    Traced from the first fragment to the acknowledgement: the peak stays near one data set (a copy
    would make it about two)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 4096  # 32 MiB of pixel data
    ds.PixelData = bytes(range(256)) * (4096 * 4096 * 2 // 256)
    encoded = _encoded(ds, syntax)
    config = ListenerConfig(spool_dir=tmp_path / "spool", output_dir=tmp_path / "output", model_dir=tmp_path / "models",
                            allowed_calling_ae_titles=("STORESCU",), destination=Destination.parse("PACS@127.0.0.1:11113"),
                            min_free_bytes=0)
    journal = Journal(config.spool_dir / "journal.jsonl")
    spool = Spool(config.spool_dir, journal, config.quiet_period_s, config.max_spool_bytes, 0)
    scp = StorageSCP(config, spool)
    request = C_STORE()
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    event = SimpleNamespace(request=request, context=SimpleNamespace(transfer_syntax=UID(syntax), abstract_syntax=ds.SOPClassUID),
                            assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="STORESCU")))

    tracemalloc.start()
    try:
        request.DataSet = io.BytesIO()
        for offset in range(0, len(encoded), 2**20):  # the fragments of 1 MiB PDUs
            request.DataSet.write(encoded[offset:offset + 2**20])
        status = scp._store(event)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        journal.close()

    assert status == 0x0000
    assert peak < 1.3 * len(encoded), f"peak {peak / len(encoded):.2f} x the data set"
    request.DataSet.write(b"")  # pynetdicom may still use its buffer: no view of it is left exported
    (spooled,) = spool.arrivals_dir.glob("*/*.dcm")
    read_back = pydicom.dcmread(spooled)
    assert read_back.PixelData == ds.PixelData and read_back.file_meta.TransferSyntaxUID == syntax


def test_the_instances_kept_for_a_later_arrival_give_way_when_the_spool_needs_room(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    instance = dicom_file(ds.SOPClassUID, ds.SOPInstanceUID, ImplicitVRLittleEndian, _encoded(ds, ImplicitVRLittleEndian))
    journal = Journal(tmp_path / "spool" / "journal.jsonl")
    spool = Spool(tmp_path / "spool", journal, quiet_period_s=0.0, max_bytes=3 * len(instance) // 2, min_free_bytes=0)
    spool.store(ds.StudyInstanceUID, ds.SOPInstanceUID, instance)
    (reported,) = spool.complete_quiet_arrivals()
    journal.append(reported, "job_finished", srs=["sr.dcm"])
    assert spool.keep(reported) and spool.reported_ids() == {reported.id}

    assert spool.refusal(len(instance)) is None, "the kept instances made room for a new one"
    assert spool.reported_ids() == set() and not any((tmp_path / "spool" / "reported").iterdir())
    assert spool.refusal(2 * len(instance)) is not None, "nothing left to give way: the limit holds"
    journal.close()
