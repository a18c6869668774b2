"""Hostile DICOM peers (raw sockets and pynetdicom) and a well-behaved sender, aimed at any Storage
SCP by host, port and called AE title: ``tests/network/test_listener_hostile.py`` turns them on the
listener's SCP, ``benchmarks/hostile_peers.py`` on Orthanc and on the listener alike.

Every wait is bounded; the callers keep every address on loopback.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

TIMEOUT_S = 30
#: PS3.8 §9.3.1: the PDU types used here.
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, P_DATA_TF = 0x01, 0x02, 0x04
DICOM_APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"  # PS3.7 Annex A.2.1


@dataclass(frozen=True)
class Scp:
    """The Storage SCP under test."""

    host: str
    port: int
    ae_title: str


def connect(scp: Scp, source: str) -> socket.socket:
    """A TCP connection to ``scp`` from ``source``, a loopback address (127.0.0.2 …): limits per
    source address then tell the hostile peer from the well-behaved sender."""
    return socket.create_connection((scp.host, scp.port), timeout=5, source_address=(source, 0))


def seconds_until_closed(sock: socket.socket, bound_s: float) -> float | None:
    """Seconds until the SCP closes ``sock`` (what it sent first is discarded), or None if it is still
    open after ``bound_s``."""
    started = time.monotonic()
    while (left := bound_s - (time.monotonic() - started)) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        except TimeoutError:
            return None
    return None


def closed_within(sock: socket.socket, seconds: float) -> bool:
    return seconds_until_closed(sock, seconds) is not None


def pdu_header(pdu_type: int, length: int) -> bytes:
    """PS3.8 §9.3: type, reserved, length (big endian)."""
    return struct.pack(">BBL", pdu_type, 0, length)


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def associate_rq(scp: Scp, calling_ae: str, abstract_syntax: str, transfer_syntax: str, max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 §9.3.2) proposing one presentation context; user information: the
    maximum length received and the implementation class UID (PS3.7 D.3.3.1, D.3.3.2)."""
    context = bytes([1, 0, 0, 0]) + _item(0x30, abstract_syntax.encode()) + _item(0x40, transfer_syntax.encode())
    body = (struct.pack(">HH", 1, 0) + scp.ae_title.encode().ljust(16) + calling_ae.encode().ljust(16) + bytes(32)
            + _item(0x10, DICOM_APPLICATION_CONTEXT) + _item(0x20, context)
            + _item(0x50, _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, PYDICOM_IMPLEMENTATION_UID.encode())))
    return pdu_header(A_ASSOCIATE_RQ, len(body)) + body


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One whole PDU: its type and body."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the SCP")
            data += chunk
        return data

    pdu_type, _, length = struct.unpack(">BBL", exactly(6))
    return pdu_type, exactly(length)


@dataclass
class WellBehavedSender:
    """One association from ``source`` sending ``files`` (one SOP class) in a thread, while a hostile
    peer does its thing."""

    scp: Scp
    files: Sequence[Path]
    calling_ae: str = "STORESCU"
    statuses: list[int] = field(default_factory=list)
    established: bool = False
    seconds: float | None = None
    thread: threading.Thread | None = None

    def start(self) -> WellBehavedSender:
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()
        return self

    def _send(self) -> None:
        started = time.monotonic()
        first = pydicom.dcmread(self.files[0], stop_before_pixels=True)
        ae = AE(self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
        ae.add_requested_context(first.SOPClassUID, first.file_meta.TransferSyntaxUID)
        assoc = ae.associate(self.scp.host, self.scp.port, ae_title=self.scp.ae_title)
        self.established = assoc.is_established
        if not assoc.is_established:
            return
        for path in self.files:
            status = assoc.send_c_store(path)
            self.statuses.append(int(status.Status) if "Status" in status else -1)
        assoc.release()
        self.seconds = time.monotonic() - started

    def finish(self, bound_s: float = 2 * TIMEOUT_S) -> WellBehavedSender:
        assert self.thread is not None
        self.thread.join(bound_s)
        return self

    @property
    def acknowledged(self) -> int:
        """Instances answered Success (0000)."""
        return self.statuses.count(0x0000)

    @property
    def lost_nothing(self) -> bool:
        return self.thread is not None and not self.thread.is_alive() and self.acknowledged == len(self.files)


@contextmanager
def data_sets_sent_as_encoded() -> Iterator[None]:
    """pynetdicom then sends a file's data set bytes as they are in the file (truncated, deflated,
    forged), its command's UIDs taken from the File Meta Information."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def send_as_encoded(scp: Scp, files: Sequence[Path], calling_ae: str = "STORESCU") -> list[int | None]:
    """One association sending ``files`` byte for byte; each C-STORE's status, None where no response
    came (the association was aborted or refused)."""
    ae = AE(calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    for meta in {(m.MediaStorageSOPClassUID, m.TransferSyntaxUID) for m in (pydicom.filereader.read_file_meta_info(p) for p in files)}:
        ae.add_requested_context(*meta)
    with data_sets_sent_as_encoded():
        assoc = ae.associate(scp.host, scp.port, ae_title=scp.ae_title)
        if not assoc.is_established:
            return [None] * len(files)
        statuses: list[int | None] = []
        for path in files:
            status = assoc.send_c_store(path) if assoc.is_established else pydicom.Dataset()
            statuses.append(int(status.Status) if "Status" in status else None)
        if assoc.is_established:
            assoc.release()
    return statuses


def write_deflate_bomb(path: Path, like: Path, inflated_bytes: int) -> Path:
    """A copy of ``like`` in Deflated Explicit VR Little Endian (PS3.5 §A.5) whose data set starts with
    a private OB element of ``inflated_bytes`` zeros, before the SOP and study UIDs: ~1/1000 of that on
    the wire, all of it in memory for a receiver that inflates the data set to read it."""
    ds = pydicom.dcmread(like)
    ds.SOPInstanceUID = generate_uid()
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    del ds.file_meta
    ds.preamble = None
    body = io.BytesIO()
    pydicom.dcmwrite(body, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate, PS3.5 §A.5
    chunk = bytes(2**20)
    bomb = [deflater.compress(struct.pack("<HH2sxxI", 0x0007, 0x1000, b"OB", inflated_bytes))]  # (0007,1000) < (0008,0016)
    bomb += [deflater.compress(chunk[: min(2**20, inflated_bytes - k)]) for k in range(0, inflated_bytes, 2**20)]
    bomb += [deflater.compress(body.getvalue()), deflater.flush()]
    with open(path, "wb") as f:
        f.write(bytes(128) + b"DICM")
        write_file_meta_info(pydicom.filebase.DicomFileLike(f), meta)
        f.write(b"".join(bomb))
    return path
