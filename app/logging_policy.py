"""Keep PHI out of the logs.

The SDK's loader and series selector log original Study/Series UIDs, series descriptions and file
paths at INFO/WARNING, and highdicom logs the original UIDs of the SR's evidence at INFO. Those
records are dropped; this app's own operators log what matters with de-identified UIDs only.
"""

from __future__ import annotations

import logging

_SILENCED_MODULES = ("dicom_data_loader_operator", "dicom_series_selector_operator")


class DropSdkIdentifierLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("highdicom") and record.levelno < logging.WARNING:
            return False
        return record.module not in _SILENCED_MODULES


def install() -> None:
    """Attach the filter to every root handler (call after the SDK has configured logging)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, DropSdkIdentifierLogs) for f in handler.filters):
            handler.addFilter(DropSdkIdentifierLogs())
