"""STOW-RS into the listener's ingestion path: the same spool, journal, quiet-period completion, MAP job
and recovery (``app.listener.service.Listener``), fed by HTTP instead of C-STORE.

Each instance is checked as the app's intake checks an input file (``operators.intake.inventory``:
not DICOM, truncated, damaged, unsupported image), then written durably to the spool before the STOW
response says it is stored. The instances of one study form one arrival (one job, one SR) when no
more come for ``stow_quiet_period_s``. An SR is delivered by being kept where WADO-RS and QIDO-RS find
it (``STATE/output/<arrival>/``), so the journal's ``delivered`` record names ``WADO-RS``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path

from pydicom import dcmread

from app.listener.config import Destination, ListenerConfig
from app.listener.delivery import PendingDelivery
from app.listener.instance_uids import STATUS_CANNOT_UNDERSTAND, names_a_file
from app.listener.journal import Arrival
from app.listener.scp import STATUS_OUT_OF_RESOURCES
from app.listener.service import Listener
from app.listener.spool import INSTANCE_SUFFIX
from app.listener.urgency import priority_of
from operators.intake.inventory import PART10_HEADER, classify_file

#: Not a network peer: the journal's ``delivered`` records say where the SRs went.
WADO_RS = Destination("WADO-RS", "localhost", 0)
#: The listener's Storage SCP is built but never started here (STOW-RS feeds the spool); its settings
#: still need a calling AE title.
NO_CALLING_AE = ("STOW-RS",)
HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"]
#: What the ``urgent`` rule reads of a study's first instance (``app/listener/urgency.py``).
PRIORITY_TAGS = ["RequestedProcedurePriority", "RequestAttributesSequence"]


@dataclass(frozen=True)
class Refused:
    """An instance not stored: the failure reason code, why (one line, no PHI), and its UIDs if read."""

    status: int
    reason: str
    sop_class: str = ""
    sop_instance: str = ""


@dataclass(frozen=True)
class Stored:
    sop_class: str
    sop_instance: str
    arrival: str


@dataclass(frozen=True)
class StoredSR:
    study: str
    series: str
    sop_instance: str
    sop_class: str
    modality: str
    path: Path


class StowIngest(Listener):
    def __init__(self, state_dir: Path, model_dir: Path, quiet_period_s: float, job_timeout_s: float) -> None:
        state_dir = Path(state_dir).resolve()
        super().__init__(ListenerConfig(spool_dir=state_dir / "spool", output_dir=state_dir / "output", model_dir=Path(model_dir),
                                        allowed_calling_ae_titles=NO_CALLING_AE, destination=WADO_RS, quiet_period_s=quiet_period_s,
                                        job_timeout_s=job_timeout_s))

    def _deliver(self, pending: PendingDelivery) -> None:
        """The SR stays in the output folder, where WADO-RS serves it: nothing is sent."""
        self.journal.append(pending.arrival, "delivered", sr=pending.sr.name, destination=str(WADO_RS.ae_title))

    def store(self, part10: bytes) -> Stored | Refused:
        """Check one instance (DICOM File Format bytes) and spool it, or say why not."""
        if part10[128:132] != b"DICM":
            return Refused(STATUS_CANNOT_UNDERSTAND, f"not a DICOM file: no {PART10_HEADER}")
        with tempfile.TemporaryDirectory(prefix="biomedclip-stow-") as folder:  # the inventory reads files
            path = Path(folder) / "instance.dcm"
            path.write_bytes(part10)
            checked = classify_file(path)  # non-image SOP classes pass: the app skips them, as for the listener
        try:
            header = dcmread(BytesIO(part10), stop_before_pixels=True, specific_tags=HEADER_TAGS + PRIORITY_TAGS)
            sop_class, sop_instance, study = (str(header.get(k) or "") for k in HEADER_TAGS[:3])
        except Exception as exc:  # a damaged header raises many kinds
            return Refused(STATUS_CANNOT_UNDERSTAND, checked.reason or f"the header cannot be read ({type(exc).__name__})")
        if checked.refused:
            return Refused(STATUS_CANNOT_UNDERSTAND, checked.reason or "refused", sop_class, sop_instance)
        if not all(names_a_file(uid) for uid in (sop_class, sop_instance, study)):
            return Refused(STATUS_CANNOT_UNDERSTAND, "the SOP Class, SOP Instance or Study Instance UID is missing or malformed",
                           sop_class, sop_instance)
        refusal = self.spool.refusal(len(part10))
        if refusal:
            return Refused(STATUS_OUT_OF_RESOURCES, refusal, sop_class, sop_instance)
        try:
            # no calling AE title over HTTP: the rule's Requested Procedure Priority alone decides, read only for a study's first instance
            urgent = partial(self.config.urgent.matches, "", None, partial(priority_of, header))
            arrival = self.spool.store(study, sop_instance, part10, urgent=urgent)
        except OSError as exc:  # strerror only: the exception's text holds the file name, a UID
            return Refused(STATUS_OUT_OF_RESOURCES, f"cannot write to the spool ({exc.strerror})", sop_class, sop_instance)
        return Stored(sop_class, sop_instance, arrival)

    def arrival(self, arrival_id: str) -> Arrival | None:
        """The journal's account of one arrival (a STOW-RS job), or None."""
        return self.journal.replay().get(arrival_id)

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for arrival in self.journal.replay().values():
            counts[arrival.state] = counts.get(arrival.state, 0) + 1
        return counts

    def stored_srs(self, study: str) -> Iterator[StoredSR]:
        """The SRs written for ``study`` (finished jobs only: a job writes into a hidden folder first)."""
        for path in sorted(self.config.output_dir.glob("[!.]*/*" + INSTANCE_SUFFIX)):
            header = dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            if header.get("StudyInstanceUID") == study:
                yield StoredSR(study, str(header.SeriesInstanceUID), str(header.SOPInstanceUID), str(header.SOPClassUID),
                               str(header.get("Modality", "")), path)
