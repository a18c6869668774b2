"""The tables of the DICOM Conformance Statement (docs/conformance.md, PS3.2) generated from the code
that negotiates, so that the statement cannot drift from it: the listener's SOP classes and transfer
syntaxes (``app/listener/scp.py``), its association defaults (``app/listener/config.py``), and the SR
it sends (``app/listener/delivery.py`` proposes the SR file's own SOP class and transfer syntax,
``operators/sr/structured_report.py``).

Each table sits in the document between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``;
``render`` replaces what is between them (``scripts/conformance_tables.py`` writes the file,
``tests/unit/test_conformance.py`` fails when it would change it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields

from pydicom.uid import UID, Comprehensive3DSRStorage
from pynetdicom import DEFAULT_TRANSFER_SYNTAXES, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from app.listener.config import ALL_STORAGE, SELECTED_IMAGES, ListenerConfig
from app.listener.scp import ACCEPTED_TRANSFER_SYNTAXES, IMAGE_STORAGE_BY_MODALITY, VERIFICATION_SOP_CLASS, storage_sop_classes
from app.settings import AppSettings
from operators.sr.structured_report import SR_TRANSFER_SYNTAX

#: The association settings of the statement, with what each governs (defaults read from ListenerConfig).
ASSOCIATION_SETTINGS = {
    "ae_title": "the listener's AE title; an A-ASSOCIATE-RQ calling another is rejected (called-AE-title-not-recognized)",
    "port": "TCP port of the Storage and Verification SCP",
    "bind_host": "address listened on",
    "allowed_calling_ae_titles": "calling AE titles accepted (required; others: calling-AE-title-not-recognized)",
    "allowed_source_addresses": "source networks accepted (empty: any; others: rejected-permanent, no-reason-given)",
    "storage_sop_classes": f'"{ALL_STORAGE}", "{SELECTED_IMAGES}" or a list of SOP Class UIDs',
    "max_associations": "established associations at once; beyond: rejected-transient, local-limit-exceeded",
    "max_connections": "TCP connections at once, before any A-ASSOCIATE-RQ",
    "max_connections_per_address": "TCP connections at once from one address",
    "max_pdu_bytes": "Maximum Length Received announced, and the longest PDU accepted",
    "association_request_timeout_s": "seconds a new connection has to send its A-ASSOCIATE-RQ (ARTIM)",
    "network_timeout_s": "seconds of silence on an association (and DIMSE timeout) before it is aborted",
    "max_instance_bytes": "largest data set received; a larger one aborts the association",
    "quiet_period_s": "seconds without a new instance of a study before it is processed",
}


def _uid_rows(uids: Iterable[str], *cells: str) -> list[str]:
    return [f"| {UID(uid).name} | `{uid}` | {' | '.join(cells)} |" if cells else f"| {UID(uid).name} | `{uid}` |" for uid in uids]


def _table(header: list[str], rows: list[str]) -> str:
    return "\n".join([f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *rows])


def _series_selection_rules() -> str:
    return AppSettings.load().series_selection_rules


def verification() -> str:
    rows = _uid_rows([VERIFICATION_SOP_CLASS], "–", "SCP", ", ".join(UID(ts).name for ts in DEFAULT_TRANSFER_SYNTAXES))
    return _table(["SOP Class", "UID", "SCU", "SCP", "Transfer Syntaxes"], rows)


def storage_images() -> str:
    """``storage_sop_classes: "images"``: by modality, as the app's series selection takes them."""
    accepted = set(storage_sop_classes(SELECTED_IMAGES, _series_selection_rules()))
    rows = [
        f"| {modality} | {UID(uid).name} | `{uid}` |"
        for modality, sop_classes in IMAGE_STORAGE_BY_MODALITY.items()
        for uid in sop_classes
        if uid in accepted
    ]
    return _table(["Modality", "SOP Class", "UID"], rows)


def storage_all() -> str:
    """``storage_sop_classes: "all"`` (the default): every Storage SOP Class pynetdicom knows."""
    sop_classes = sorted(storage_sop_classes(ALL_STORAGE, _series_selection_rules()), key=lambda uid: UID(uid).name)
    return _table(["SOP Class", "UID"], _uid_rows(sop_classes))


def transfer_syntaxes() -> str:
    """In the listener's order of preference: of those a presentation context proposes, the first here is accepted."""
    rows = [f"| {number} | {UID(ts).name} | `{ts}` |" for number, ts in enumerate(ACCEPTED_TRANSFER_SYNTAXES, 1)]
    return _table(["Preference", "Transfer Syntax", "UID"], rows)


def sr_scu() -> str:
    rows = _uid_rows([Comprehensive3DSRStorage], "SCU", "–", f"{UID(SR_TRANSFER_SYNTAX).name} (`{SR_TRANSFER_SYNTAX}`) only")
    return _table(["SOP Class", "UID", "SCU", "SCP", "Transfer Syntax proposed"], rows)


def _default(value: object) -> str:
    return "(required)" if value is MISSING else f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"


def association_defaults() -> str:
    defaults = {f.name: f.default for f in fields(ListenerConfig)}
    rows = [f"| `{name}` | {_default(defaults[name])} | {meaning} |" for name, meaning in ASSOCIATION_SETTINGS.items()]
    return _table(["Setting", "Default", "Meaning"], rows)


def implementation() -> str:
    return _table(["Implementation Class UID", "Implementation Version Name"],
                  [f"| `{PYNETDICOM_IMPLEMENTATION_UID}` | `{PYNETDICOM_IMPLEMENTATION_VERSION}` |"])


TABLES: dict[str, Callable[[], str]] = {
    "verification": verification,
    "storage-images": storage_images,
    "storage-all": storage_all,
    "transfer-syntaxes": transfer_syntaxes,
    "sr-scu": sr_scu,
    "association-defaults": association_defaults,
    "implementation": implementation,
}


def render(document: str) -> str:
    """``document`` with every generated table replaced by the code's; a table's markers missing is an error."""
    for name, table in TABLES.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.S)
        match = pattern.search(document)
        if match is None:
            raise ValueError(f"the document has no <!-- generated: {name} --> ... <!-- end: {name} --> block")
        document = f"{document[:match.end(1)]}{table()}\n{document[match.start(2):]}"
    return document
