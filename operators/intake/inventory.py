"""Inventory of an input folder: which files are DICOM image instances the app can try, and why the
others are not used.

Reads headers only (values over 1 KB, such as Pixel Data, are skipped, not read), so that damaged,
truncated, unsupported or oversized images are refused before the SDK loader reads them whole or a
decoder touches them (checks: ``operators.intake.image_header``). Non-image SOP classes (SR, RTSTRUCT,
presentation states, key object selection, waveforms, DICOMDIR…) are recognised by having no pixel
data, and named by their SOP Class, never by anything about the patient.

Every file gets one outcome:
- accepted: an image instance to load (``skip_reason`` None);
- skipped, not a failure (``refused`` False): outside what the app reads — not DICOM, a non-image
  SOP class, a second copy of an instance already accepted, a symbolic link loop, a FIFO;
- refused, a failure (``refused`` True): an image, or a file that may have been one, that cannot be
  used — empty, unreadable, truncated, without the Part 10 header, damaged or unsupported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from operators.intake.image_header import UNDEFINED_LENGTH, header_problem
from operators.intake.input_tree import walk_input

logger = logging.getLogger(__name__)

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
REQUIRED_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: values longer than this are not read by the inventory
DEFER_SIZE = 1024
PART10_HEADER = "Part 10 header (128-byte preamble, 'DICM', File Meta Information; PS3.10 7.1)"


@dataclass(frozen=True)
class InputFile:
    path: Path
    relative: str
    #: None for an image instance the app can try; else why the file is not used.
    skip_reason: str | None = None
    #: Original SOP Instance UID: in memory only, used to join files with results.
    sop_instance_uid: str | None = None
    #: The skipped file is an image (or may have been one) that could not be used: a failure.
    refused: bool = False


@dataclass(frozen=True)
class Classification:
    """What the inventory makes of one file: ``reason`` None for an image instance to load."""

    reason: str | None = None
    sop_instance_uid: str | None = None
    refused: bool = False


def _refuse(reason: str) -> Classification:
    return Classification(reason, refused=True)


def classify_file(path: Path) -> Classification:
    """Classify one regular file by its header (the duplicate rule needs the whole folder: ``scan_input``)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return _refuse("empty file (0 bytes)")
        with open(path, "rb") as fp:
            ds = dcmread(fp, defer_size=DEFER_SIZE)
            parse_end = fp.tell()
    except InvalidDicomError:
        return _without_part10_header(path)
    except OSError as exc:
        return _refuse(f"unreadable ({exc.strerror or type(exc).__name__})")
    except Exception as exc:  # malformed headers raise many kinds; their messages may quote values
        return _refuse(f"not a readable DICOM file ({type(exc).__name__} while parsing the header)")
    try:
        return _classify_dataset(ds, size, parse_end)
    except Exception as exc:  # a malformed value met outside the Image Pixel Module checks
        return _refuse(f"malformed header ({type(exc).__name__})")


def _classify_dataset(ds: Dataset, size: int, parse_end: int) -> Classification:
    deflated = ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    # a deflated data set is parsed from the inflated stream: its positions are not file offsets
    truncated = None if deflated else _truncation(ds, size, parse_end)
    if truncated:
        return _refuse(truncated)
    sop_class = UID(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID") or "")
    if not any(k in ds for k in PIXEL_KEYWORDS):
        if "Image Storage" in sop_class.name:
            return _refuse(f"no Pixel Data in an instance of {sop_class.name}")
        return Classification(f"non-image SOP class: {sop_class.name or '(no SOP Class UID)'}")
    missing = [k for k in REQUIRED_KEYWORDS if not ds.get(k)]
    if missing:
        return _refuse(f"missing required attribute(s): {', '.join(missing)}")
    problem = header_problem(ds)
    if problem:
        return _refuse(problem)
    return Classification(sop_instance_uid=str(ds.SOPInstanceUID))


def _truncation(ds: Dataset, size: int, parse_end: int) -> str | None:
    """Why the file looks cut short, or ``None``. pydicom reads truncated files without error: an
    element whose value runs past the end of the file is read short, skipped if deferred, or — for
    an undefined length (encapsulated Pixel Data) — dropped with the parse stopping before the end."""
    for tag in ds.keys():
        elem = ds.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement) or elem.length in (0, UNDEFINED_LENGTH):
            continue
        present = len(elem.value) if elem.value is not None else max(0, size - elem.value_tell)
        if present < elem.length:
            name = keyword_for_tag(elem.tag) or str(elem.tag)
            return f"truncated file: it ends inside {name} ({present:,} of {elem.length:,} bytes present)"
    if parse_end < size:
        return f"truncated or corrupt file: the data set cannot be read past byte {parse_end:,} of {size:,}"
    return None


def _without_part10_header(path: Path) -> Classification:
    """No 'DICM' prefix: a raw DICOM data set (written without the Part 10 header), or not DICOM."""
    try:
        ds = dcmread(path, force=True, defer_size=DEFER_SIZE)
        sop_class, is_image = UID(ds.get("SOPClassUID") or ""), any(k in ds for k in PIXEL_KEYWORDS)
    except Exception:  # random bytes parsed as DICOM fail in many ways
        sop_class, is_image = UID(""), False
    if sop_class and is_image:
        return _refuse(f"DICOM data set without the {PART10_HEADER}: its transfer syntax is not declared")
    if sop_class:
        return Classification(f"non-image SOP class: {sop_class.name}, without the {PART10_HEADER}")
    return Classification("not a DICOM file (no 'DICM' prefix after a 128-byte preamble; PS3.10 7.1)")


def scan_input(root: Path) -> list[InputFile]:
    """Every entry under ``root`` (recursively, sorted, symbolic links followed once), classified."""
    files: list[InputFile] = []
    seen: dict[str, str] = {}
    for entry in walk_input(Path(root)):
        outcome = Classification(entry.problem, refused=entry.refused) if entry.problem else classify_file(entry.path)
        uid = outcome.sop_instance_uid
        if uid is not None and uid in seen:
            outcome = Classification(f"duplicate SOP Instance UID (same as {seen[uid]})")
        elif uid is not None:
            seen[uid] = entry.relative
        if outcome.reason:
            verb = "Refused" if outcome.refused else "Skipping"
            logger.warning("%s input file %s: %s", verb, entry.relative, outcome.reason)
        files.append(InputFile(entry.path, entry.relative, outcome.reason, outcome.sop_instance_uid, outcome.refused))
    return files
