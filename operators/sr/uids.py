"""The UIDs the SR gets (series, instance, tracking, observer device), under a root a site chooses.

PS3.5 Section 9: a UID is an organization's root followed by its own suffix, at most 64 characters.
The default root ``2.25`` needs no registration: the suffix is the decimal form of a UUID (PS3.5
B.2, ISO/IEC 9834-8). A site that owns a root (e.g. ``1.2.826.0.1.3680043.10.1234``) sets it in
``structured_report.uid_root`` (``app/config/app.json``), so that its PACS can tell the SRs apart.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from pydicom.uid import generate_uid

UUID_ROOT = "2.25"
#: Components: digits without a leading zero (PS3.5 9.1); room left for a 10-digit suffix.
_ROOT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_MAX_ROOT_LENGTH = 53


@dataclass(frozen=True)
class UIDRoot:
    root: str = UUID_ROOT

    def __post_init__(self) -> None:
        if not _ROOT.fullmatch(self.root) or len(self.root) > _MAX_ROOT_LENGTH:
            raise ValueError(
                f"{self.root!r} is not a UID root: digits separated by single dots, no leading zeros, "
                f"at most {_MAX_ROOT_LENGTH} characters (PS3.5 9.1)"
            )

    def new(self) -> str:
        """A new, unique UID."""
        if self.root == UUID_ROOT:
            return f"{UUID_ROOT}.{uuid.uuid4().int}"
        return str(generate_uid(prefix=f"{self.root}."))

    def named(self, name: str) -> str:
        """The same UID for the same ``name`` under this root (the observer device's UID)."""
        if self.root == UUID_ROOT:
            return f"{UUID_ROOT}.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"
        return str(generate_uid(prefix=f"{self.root}.", entropy_srcs=[name]))
