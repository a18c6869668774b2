"""Keep PHI out of the logs.

The SDK's loader and series selector log original Study/Series UIDs, series descriptions and file
paths at INFO/WARNING, and highdicom logs the original UIDs of the SR's evidence at INFO. Those
records are dropped; this app's own operators log what matters with de-identified UIDs only.
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

_SILENCED_MODULES = ("dicom_data_loader_operator", "dicom_series_selector_operator")


class DropSdkIdentifierLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("highdicom") and record.levelno < logging.WARNING:
            return False
        return record.module not in _SILENCED_MODULES


#: Libraries whose log messages may quote a data set or a UID: pynetdicom warns of non-conformant UIDs
#: with the UID, pydicom's warnings quote invalid values (``warnings`` reach logging as py.warnings).
LIBRARY_LOGGERS = ("pynetdicom", "pydicom", "py.warnings")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class WithholdLibraryMessages(logging.Filter):
    """Keeps that a library logged (level, logger, where) but not what: its message may hold PHI."""

    def filter(self, record: logging.LogRecord) -> bool:
        if any(record.name == name or record.name.startswith(name + ".") for name in LIBRARY_LOGGERS):
            where = f"{record.name} ({record.module}:{record.lineno})"
            record.msg = f"{record.levelname.lower()} from {where}; message withheld (may hold identifiers)"
            record.args, record.exc_info, record.exc_text, record.stack_info = None, None, None, None
        return True


class EscapingFormatter(logging.Formatter):
    """Writes control characters of a message as ``\\xNN``: a value holding a newline cannot forge a line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", record.message)
        return super().formatMessage(record)


def install() -> None:
    """The app's logging (call after the SDK has configured it): on every root handler, the SDK's identifier
    logs dropped and library messages withheld; Python warnings (pydicom quotes invalid values in them) are
    routed through logging so that the same filter sees them."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        for policy in (DropSdkIdentifierLogs, WithholdLibraryMessages):
            if not any(isinstance(f, policy) for f in handler.filters):
                handler.addFilter(policy())
    logging.captureWarnings(True)


def install_for_listener(stream: TextIO | None = None) -> logging.Handler:
    """The listener's logging (``python -m app.listener``): INFO for its own records, WARNING and up for
    pynetdicom (its DEBUG output dumps data sets), library messages withheld, control characters escaped."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(WithholdLibraryMessages())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler
