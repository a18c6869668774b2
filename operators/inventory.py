"""Inventory of an input folder: which files are DICOM image instances, and why the others are skipped.

Reads headers only (pixel data deferred). Non-image SOP classes (SR, RTSTRUCT, presentation states,
key object selection, waveforms, DICOMDIR…) are recognised by having no pixel data, and named by
their SOP Class, never by anything about the patient.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

logger = logging.getLogger(__name__)

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
REQUIRED_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True)
class InputFile:
    path: Path
    relative: str
    #: None for an image instance the app can try; else why the file is skipped.
    skip_reason: str | None = None
    #: Original SOP Instance UID: in memory only, used to join files with results.
    sop_instance_uid: str | None = None


def _classify(path: Path) -> tuple[str | None, str | None]:
    try:
        ds = dcmread(path, defer_size="1 KB")
    except InvalidDicomError as exc:
        return f"not a DICOM file ({exc})", None
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})", None
    except Exception as exc:  # truncated or malformed headers raise many kinds
        return f"not a readable DICOM file ({type(exc).__name__})", None
    missing = [k for k in REQUIRED_KEYWORDS if k not in ds]
    if missing:
        return f"missing required attribute(s): {', '.join(missing)}", None
    if not any(k in ds for k in PIXEL_KEYWORDS):
        return f"non-image SOP class: {UID(ds.SOPClassUID).name}", None
    return None, str(ds.SOPInstanceUID)


def scan_input(root: Path) -> list[InputFile]:
    """Every regular file under ``root`` (recursively, sorted), classified. Symbolic links are not followed."""
    root = Path(root)
    files: list[InputFile] = []
    seen: dict[str, str] = {}
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                reason, uid = "symbolic link (not followed)", None
            else:
                reason, uid = _classify(path)
            if uid is not None and uid in seen:
                reason, uid = f"duplicate SOP Instance UID (same as {seen[uid]})", None
            if uid is not None:
                seen[uid] = relative
            if reason:
                logger.warning("Skipping input file %s: %s", relative, reason)
            files.append(InputFile(path, relative, reason, uid))
    return files
