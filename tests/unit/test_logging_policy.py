"""The app's logging policy: a library message that may quote an identifier never reaches the log."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from app import logging_policy
from operators.intake.inventory import classify_file

INVALID_UID = "1.2.840.0099.7"  # a component with a leading zero: pydicom warns, quoting the value


@pytest.fixture
def app_log() -> Iterator[io.StringIO]:
    """The root handler the SDK would have configured, with the app's policy installed on it."""
    root, stream = logging.getLogger(), io.StringIO()
    handler = logging.StreamHandler(stream)
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers, root.level = [handler], logging.INFO
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            logging_policy.install()
            yield stream
    finally:
        logging.captureWarnings(False)
        root.handlers, root.level = saved_handlers, saved_level


def test_intake_of_an_invalid_uid_logs_that_pydicom_warned_but_not_the_uid(app_log: io.StringIO, tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds["StudyInstanceUID"] = pydicom.DataElement(0x0020000D, "UI", INVALID_UID, validation_mode=pydicom.config.IGNORE)
    path = tmp_path / "ct.dcm"
    with pydicom.config.disable_value_validation():
        ds.save_as(path, enforce_file_format=True)

    classify_file(path)

    said = app_log.getvalue()
    assert "message withheld" in said, "pydicom's warning should still be visible as an event"
    assert INVALID_UID not in said
