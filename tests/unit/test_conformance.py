"""docs/conformance.md states what the code negotiates: its generated tables equal the code's, and the
SOP classes and transfer syntaxes in them are exactly what the listener's Storage SCP supports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.listener.config import SELECTED_IMAGES, Destination, ListenerConfig
from app.listener.conformance import render
from app.listener.scp import VERIFICATION_SOP_CLASS, StorageSCP
from tests.conftest import ROOT

DOCUMENT = ROOT / "docs" / "conformance.md"


def _block(document: str, name: str) -> str:
    return re.search(rf"<!-- generated: {name} -->\n(.*?)<!-- end: {name} -->", document, re.S)[1]


def _uids(table: str) -> list[str]:
    """The UIDs of a generated table: the cells written `1.2.840…`."""
    return re.findall(r"`(1\.2\.840\.10008\.[0-9.]+)`", table)


def _supported(tmp_path: Path, **settings: object) -> dict[str, list[str]]:
    config = ListenerConfig(spool_dir=tmp_path, output_dir=tmp_path, model_dir=tmp_path, allowed_calling_ae_titles=("PACS",),
                            destination=Destination.parse("PACS@127.0.0.1:104"), **settings)
    scp = StorageSCP(config, spool=None)  # type: ignore[arg-type]  # the spool is used only once it listens
    return {str(c.abstract_syntax): [str(ts) for ts in c.transfer_syntax] for c in scp.ae.supported_contexts}


def test_the_documents_tables_are_the_codes() -> None:
    document = DOCUMENT.read_text()
    assert render(document) == document, "docs/conformance.md is out of date: run python scripts/conformance_tables.py"


def test_a_table_that_differs_from_the_code_is_caught() -> None:
    document = DOCUMENT.read_text()
    without_a_row = document.replace("| 18 | RLE Lossless | `1.2.840.10008.1.2.5` |\n", "")
    assert without_a_row != document
    assert render(without_a_row) == document, "render restores the row the code has"
    with pytest.raises(ValueError, match="generated: storage-all"):
        render(document.replace("<!-- end: storage-all -->", ""))


def test_the_tables_list_exactly_what_the_storage_scp_negotiates(tmp_path: Path) -> None:
    document = DOCUMENT.read_text()
    transfer_syntaxes = _uids(_block(document, "transfer-syntaxes"))
    storage_all = set(_uids(_block(document, "storage-all")))

    supported = _supported(tmp_path)
    assert set(supported) == storage_all | {VERIFICATION_SOP_CLASS}
    assert all(supported[sop_class] == transfer_syntaxes for sop_class in storage_all), "in the documented order of preference"
    assert _uids(_block(document, "verification")) == [VERIFICATION_SOP_CLASS]

    images = set(_uids(_block(document, "storage-images")))
    assert set(_supported(tmp_path, storage_sop_classes=SELECTED_IMAGES)) == images | {VERIFICATION_SOP_CLASS}
    assert images < storage_all
