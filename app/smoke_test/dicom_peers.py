"""The smoke test's two DICOM roles against a running listener: a Storage SCU that pushes the sample
study to it (PS3.4 Annex B, C-STORE), and a temporary Storage SCP standing in for the PACS, where the
listener's SR arrives."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import cast

import pydicom
from pydicom.uid import (
    Comprehensive3DSRStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from app.listener.tcp import LOW_LATENCY_HANDLER
from operators.atomic import write_atomically

STATUS_SUCCESS = 0x0000
#: The transfer syntaxes an SR can come in (native ones; PS3.5 §10).
SR_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]


class StudyPushFailed(Exception):
    """The listener did not store the sample study; the message says why."""


def push_study(files: list[Path], host: str, port: int, called_ae: str, calling_ae: str, timeout_s: float) -> None:
    """One association, one C-STORE per file in its own transfer syntax; every one must succeed."""
    metas = [pydicom.dcmread(path, stop_before_pixels=True).file_meta for path in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class, transfer_syntax in sorted({(m.MediaStorageSOPClassUID, m.TransferSyntaxUID) for m in metas}):
        ae.add_requested_context(sop_class, transfer_syntax)
    assoc = ae.associate(host, port, ae_title=called_ae, evt_handlers=[LOW_LATENCY_HANDLER])
    if not assoc.is_established:
        why = ("rejected (is the calling AE title in allowed_calling_ae_titles, the called one the listener's?)"
               if assoc.is_rejected else "not established (is the listener running there?)")
        raise StudyPushFailed(f"association {calling_ae} -> {called_ae}@{host}:{port} {why}")
    try:
        statuses = [assoc.send_c_store(path) for path in files]
    finally:
        assoc.release()
    refused = [f"0x{s.Status:04X}" if "Status" in s else "no response" for s in statuses if s.get("Status") != STATUS_SUCCESS]
    if refused:
        raise StudyPushFailed(f"{len(refused)} of {len(files)} C-STORE(s) not stored: {', '.join(sorted(set(refused)))}")


class SRReceiver:
    """A Storage SCP for Comprehensive 3D SR on ``host:port`` (any called AE title); each received SR is
    written to ``folder`` in the DICOM File Format."""

    def __init__(self, folder: Path, host: str, port: int) -> None:
        self.folder = folder
        self._count = 0
        self._lock = threading.Lock()
        self.ae = AE(ae_title="SMOKETEST")
        self.ae.add_supported_context(Comprehensive3DSRStorage, SR_TRANSFER_SYNTAXES)
        handlers: list[EventHandlerType] = [LOW_LATENCY_HANDLER, (evt.EVT_C_STORE, self._store)]
        self.server = cast(ThreadedAssociationServer, self.ae.start_server((host, port), block=False, evt_handlers=handlers))

    def _store(self, event: Event) -> int:
        with self._lock:
            self._count += 1
            path = self.folder / f"received-{self._count}.dcm"
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        write_atomically(path, lambda f: dataset.save_as(f, enforce_file_format=True))  # whole, before it is looked at
        return STATUS_SUCCESS

    def wait_for_sr_of(self, study_instance_uid: str, timeout_s: float) -> Path | None:
        """The first received SR of that study, or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        seen: set[Path] = set()
        while time.monotonic() < deadline:
            for path in sorted(set(self.folder.glob("received-*.dcm")) - seen):
                seen.add(path)
                if pydicom.dcmread(path, stop_before_pixels=True).get("StudyInstanceUID") == study_instance_uid:
                    return path
            time.sleep(0.5)
        return None

    def stop(self) -> None:
        self.server.shutdown()
