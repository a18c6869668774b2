"""Which arrivals are urgent: the listener's ``urgent`` rule, applied to the first instance of a study.

A study is urgent when the association that brought its first instance was requested by one of the
rule's calling AE titles, or when that instance's C-STORE request's Priority (0000,0700; PS3.7 Annex E,
HIGH = 0001H) or its data set's Requested Procedure Priority (0040,1003; PS3.3 C.4.11: STAT, HIGH,
ROUTINE, MEDIUM, LOW), at the top level or in a Request Attributes Sequence (0040,0275) item, is one of
the rule's priorities. An urgent arrival's job runs before every routine one not yet started, and its
application run asks a Triton server for its higher priority level (``python app --priority urgent``).
Priorities are not PHI: they may be logged; the data set's other values are not read.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from io import BufferedReader

from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from app.listener.instance_uids import Buffer, BufferReader

REQUEST_ATTRIBUTES_SEQUENCE, REQUESTED_PROCEDURE_PRIORITY = 0x00400275, 0x00401003
#: PS3.3 C.4.11 Requested Procedure Priority (0040,1003), enumerated values.
REQUESTED_PROCEDURE_PRIORITIES = ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")
#: PS3.7 Annex E, Priority (0000,0700) of a C-STORE request: its values, by name.
C_STORE_PRIORITIES = {0x0000: "MEDIUM", 0x0001: "HIGH", 0x0002: "LOW"}


@dataclass(frozen=True)
class UrgentRule:
    #: Calling AE titles whose studies are all urgent (an emergency department's modality, say).
    calling_ae_titles: tuple[str, ...] = ()
    #: Requested Procedure Priority or C-STORE Priority values that make a study urgent.
    priorities: tuple[str, ...] = ("STAT", "HIGH")

    def matches(self, calling_ae_title: str, store_priority: int | None, requested_priority: Callable[[], str | None]) -> bool:
        """Whether a study whose first instance came so is urgent; ``requested_priority`` reads the data set
        only when the calling AE title and the C-STORE priority have not decided it."""
        if calling_ae_title.strip() in self.calling_ae_titles:
            return True
        if store_priority is not None and C_STORE_PRIORITIES.get(store_priority) in self.priorities:
            return True
        return bool(self.priorities) and requested_priority() in self.priorities


def requested_procedure_priority(received: Buffer, transfer_syntax: UID, max_header_bytes: int) -> str | None:
    """(0040,1003) of a received data set (the top level's, else the first Request Attributes Sequence
    item's), upper-cased; None if absent or unreadable: a study whose priority cannot be read is routine."""
    if transfer_syntax.is_deflated:  # PS3.5 §A.5: only the start is inflated (see instance_uids.HeaderTooLong)
        received = zlib.decompressobj(-zlib.MAX_WBITS).decompress(received, max_header_bytes)
    try:
        header = read_dataset(BufferedReader(BufferReader(received)), transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian,
                              stop_when=lambda tag, vr, length: tag > REQUESTED_PROCEDURE_PRIORITY)
    except Exception:  # a data set truncated by the inflation limit, or malformed after its UIDs: pydicom raises many kinds
        return None
    return priority_of(header)


def priority_of(header: Dataset) -> str | None:
    """(0040,1003) of a data set read at least that far (the top level's, else the first Request Attributes
    Sequence item's), upper-cased; None if absent or unreadable."""
    try:
        items = [header, *(header[REQUEST_ATTRIBUTES_SEQUENCE].value if REQUEST_ATTRIBUTES_SEQUENCE in header else [])]
        values = [str(item[REQUESTED_PROCEDURE_PRIORITY].value) for item in items if REQUESTED_PROCEDURE_PRIORITY in item]
    except Exception:  # values are decoded on access: a malformed one raises many kinds
        return None
    return values[0].strip().upper() if values else None
