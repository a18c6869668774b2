"""A generated corpus of bad inputs: one entry per case of issue 4, each with the outcome the run
report must give it (status and reason).

Every image case derives from pydicom's ``CT_small.dcm`` (128 × 128 CT, explicit VR little endian)
or ``MR_small_jp2klossless.dcm`` (JPEG 2000), each with its own SOP Instance UID, so no case hides
behind the duplicate rule. ``write_malformed_corpus(folder)`` writes the files; cases that need
what the machine may lack (a FIFO, dropping root's file-permission override) say so.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.uid import MPEG2MPML, generate_uid

CT = get_testdata_file("CT_small.dcm")
J2K = get_testdata_file("MR_small_jp2klossless.dcm")


@dataclass(frozen=True)
class Expected:
    status: str  # run report status: "refused" or "skipped"
    reason: str  # the reason, or its start when it ends with "…"

    def matches(self, reason: str) -> bool:
        return reason.startswith(self.reason[:-1]) if self.reason.endswith("…") else reason == self.reason


def _dataset(source: str = CT, **attributes: object) -> Dataset:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write(ds: Dataset) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(_encoded(ds))


def _truncated(source: str, keep: float) -> Callable[[Path], None]:
    data = _encoded(_dataset(source))
    return lambda path: path.write_bytes(data[: int(len(data) * keep)])


def _without_part10_header(path: Path) -> None:
    ds = _dataset()
    buffer = io.BytesIO()
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    path.write_bytes(buffer.getvalue())


def _without_pixel_data() -> Dataset:
    ds = _dataset()
    del ds.PixelData
    return ds


def _pixel_data_resized(delta: int) -> Dataset:
    ds = _dataset()
    ds.PixelData = ds.PixelData[:delta] if delta < 0 else ds.PixelData + bytes(delta)
    return ds


def _unsupported_syntax() -> Dataset:
    ds = _dataset()
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # video: no pixel decoder in pydicom
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    return ds


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _unreadable(path: Path) -> None:
    _write(_dataset())(path)
    path.chmod(0)


#: file name -> (writer, expected outcome). Names say the case.
CASES: dict[str, tuple[Callable[[Path], None], Expected]] = {
    "truncated_native.dcm": (
        _truncated(CT, 0.6),
        Expected("refused", "truncated file: it ends inside PixelData (…"),
    ),
    "truncated_jpeg2000.dcm": (
        _truncated(J2K, 0.8),
        Expected("refused", "truncated or corrupt file: the data set cannot be read past byte …"),
    ),
    "no_preamble.dcm": (
        _without_part10_header,
        Expected(
            "refused",
            "DICOM data set without the Part 10 header (128-byte preamble, 'DICM', File Meta Information; "
            "PS3.10 7.1): its transfer syntax is not declared",
        ),
    ),
    "not_dicom.txt": (
        lambda path: path.write_text("study notes, not DICOM\n"),
        Expected("skipped", "not a DICOM file (no 'DICM' prefix after a 128-byte preamble; PS3.10 7.1)"),
    ),
    "no_pixel_data.dcm": (_write(_without_pixel_data()), Expected("refused", "no Pixel Data in an instance of CT Image Storage")),
    "zero_rows.dcm": (_write(_dataset(Rows=0)), Expected("refused", "Rows × Columns is 0 × 128: the image has no pixels")),
    "zero_columns.dcm": (_write(_dataset(Columns=0)), Expected("refused", "Rows × Columns is 128 × 0: the image has no pixels")),
    "pixel_data_short.dcm": (
        _write(_pixel_data_resized(-1000)),
        Expected(
            "refused",
            "Pixel Data holds 31,768 bytes, fewer than the 32,768 that Rows × Columns × Frames × Samples per "
            "Pixel × Bits Allocated declare",
        ),
    ),
    "pixel_data_long.dcm": (
        _write(_pixel_data_resized(4096)),
        Expected(
            "refused",
            "Pixel Data holds 36,864 bytes, more than the 32,768 that Rows × Columns × Frames × Samples per "
            "Pixel × Bits Allocated declare",
        ),
    ),
    "bits_stored_over_allocated.dcm": (
        _write(_dataset(BitsStored=17, HighBit=16)),
        Expected("refused", "Bits Stored 17 does not fit Bits Allocated 16"),
    ),
    "unsupported_photometric.dcm": (
        _write(_dataset(PhotometricInterpretation="YBR_PARTIAL_420")),
        Expected("refused", "photometric interpretation YBR_PARTIAL_420 is not supported"),
    ),
    "unsupported_transfer_syntax.dcm": (
        _write(_unsupported_syntax()),
        Expected("refused", "transfer syntax MPEG2 Main Profile / Main Level is not supported (no pixel data decoder for it)"),
    ),
    "declared_too_large.dcm": (
        _write(_dataset(Rows=65535, Columns=65535)),
        Expected(
            "refused",
            "declared frame size 65535 × 65535 × 1 sample(s) exceeds the cap of 67,108,864 samples per frame "
            "(refused before decoding)",
        ),
    ),
    "declared_too_many_frames.dcm": (
        _write(_dataset(NumberOfFrames=1_000_000)),
        Expected("refused", "declared Number of Frames 1,000,000 exceeds the cap of 65,536 (refused before decoding)"),
    ),
    "empty.dcm": (lambda path: path.write_bytes(b""), Expected("refused", "empty file (0 bytes)")),
    "fifo.dcm": (_fifo, Expected("skipped", "not a regular file (FIFO, socket or device; not opened)")),
    "unreadable.dcm": (_unreadable, Expected("refused", "unreadable (Permission denied)")),
    "loop": (
        lambda path: path.symlink_to(".", target_is_directory=True),
        Expected("skipped", "symbolic link loop: links to a folder already scanned (not followed)"),
    ),
    "self_link.dcm": (lambda path: path.symlink_to(path.name), Expected("skipped", "symbolic link loop (not followed)")),
    "broken_link.dcm": (
        lambda path: path.symlink_to("does-not-exist.dcm"),
        Expected("refused", "broken symbolic link (its target does not exist)"),
    ),
}


def report_key(name: str) -> str:
    """The run report's name for a case written as ``name`` (folders end with "/")."""
    return name + "/" if name == "loop" else name


def write_malformed_corpus(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, Expected]:
    """Write every case (but ``exclude``) into ``folder``; returns run-report name -> expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (write, outcome) in CASES.items():
        if name in exclude:
            continue
        write(folder / name)
        expected[report_key(name)] = outcome
    return expected
