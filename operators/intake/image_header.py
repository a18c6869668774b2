"""Checks of an image's header before any pixel is decoded.

An image whose header cannot describe frames this app can decode is refused with a reason a user
can act on. Reasons name attributes and their values from the Image Pixel Module and the transfer
syntax only, never anything about the patient.

Checks: a transfer syntax with an installed pixel decoder (PS3.5 Section 10, Annex A); the Image
Pixel Module attributes (PS3.3 C.7.6.3); the length of native Pixel Data against Rows × Columns ×
Number of Frames × Samples per Pixel × Bits Allocated (PS3.5 8.1.1, 8.2); and the size caps below.

Size caps, checked on the declared dimensions before anything is decoded, so that a forged or
corrupt header cannot exhaust memory:

- ``MAX_FRAME_SAMPLES`` = 2^26: Rows × Columns × Samples per Pixel of one frame (e.g. 8192 × 8192
  grey, 4096 × 5461 colour). Frames are decoded one at a time, so this bounds the memory of
  decoding and preprocessing (one decoded frame plus one float32 copy: at most 512 MiB).
- ``MAX_FRAMES`` = 65,536 frames per instance.
- ``MAX_PIXEL_DATA_BYTES`` = 2 GiB of native (uncompressed) Pixel Data per instance: the SDK loader
  holds each instance in memory whole.
"""

from __future__ import annotations

import math

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.pixels import get_decoder
from pydicom.uid import UID

MAX_FRAME_SAMPLES = 2**26
MAX_FRAMES = 65_536
MAX_PIXEL_DATA_BYTES = 2**31
UNDEFINED_LENGTH = 0xFFFFFFFF

#: Photometric interpretations this app turns into model input, with their Samples per Pixel (PS3.3 C.7.6.3.1.2).
SUPPORTED_PHOTOMETRIC = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
}
IMAGE_PIXEL_KEYWORDS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
)


def transfer_syntax_problem(syntax: UID | None) -> str | None:
    """Why pixel data in ``syntax`` cannot be decoded here, or ``None`` if it can."""
    if not syntax:
        return "no Transfer Syntax UID in the File Meta Information (PS3.10 7.1)"
    syntax = UID(syntax)
    if not syntax.is_transfer_syntax:
        return f"unknown transfer syntax {syntax}"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"transfer syntax {syntax.name} is not supported (no pixel data decoder for it)"
    if not decoder.is_available:
        return f"no decoder installed for transfer syntax {syntax.name}"
    return None


class MalformedHeader(ValueError):
    """An Image Pixel Module value that is not what its VR promises; the message names the attribute."""


def _integer(ds: Dataset, keyword: str) -> int:
    try:
        value = ds.get(keyword)
        return int(value[0] if isinstance(value, list) else value)
    except (TypeError, ValueError):
        raise MalformedHeader(f"malformed {keyword}: not an integer") from None


def number_of_frames(ds: Dataset) -> int:
    """Number of Frames (PS3.3 C.7.6.6), 1 when absent or empty."""
    return 1 if ds.get("NumberOfFrames") in (None, "") else _integer(ds, "NumberOfFrames")


def image_pixel_problem(ds: Dataset) -> str | None:
    """Why the Image Pixel Module of ``ds`` cannot describe a decodable image, or ``None``."""
    missing = [k for k in IMAGE_PIXEL_KEYWORDS if ds.get(k) in (None, "")]
    if missing:
        return f"Image Pixel Module attribute(s) missing or empty: {', '.join(missing)} (PS3.3 C.7.6.3)"
    rows, columns, samples = _integer(ds, "Rows"), _integer(ds, "Columns"), _integer(ds, "SamplesPerPixel")
    allocated, stored = _integer(ds, "BitsAllocated"), _integer(ds, "BitsStored")
    photometric = str(ds.PhotometricInterpretation).strip()
    if rows < 1 or columns < 1:
        return f"Rows × Columns is {rows} × {columns}: the image has no pixels"
    if photometric not in SUPPORTED_PHOTOMETRIC:
        return f"photometric interpretation {photometric} is not supported"
    if samples != SUPPORTED_PHOTOMETRIC[photometric]:
        return f"Samples per Pixel {samples} does not fit photometric interpretation {photometric}"
    if allocated not in (1, 8, 16, 32) or (allocated == 1 and samples != 1):
        return f"Bits Allocated {allocated} is not supported (1 for grey, 8, 16 or 32)"
    if not 1 <= stored <= allocated:
        return f"Bits Stored {stored} does not fit Bits Allocated {allocated}"
    if _integer(ds, "PixelRepresentation") not in (0, 1):
        return f"Pixel Representation {ds.PixelRepresentation} is neither 0 (unsigned) nor 1 (signed)"
    if samples > 1 and ds.get("PlanarConfiguration") not in (None, "", 0, 1):
        return f"Planar Configuration {ds.PlanarConfiguration} is neither 0 nor 1"
    frames = number_of_frames(ds)
    if frames < 1:
        return f"Number of Frames is {frames}"
    if rows * columns * samples > MAX_FRAME_SAMPLES:
        return (
            f"declared frame size {rows} × {columns} × {samples} sample(s) exceeds the cap of "
            f"{MAX_FRAME_SAMPLES:,} samples per frame (refused before decoding)"
        )
    if frames > MAX_FRAMES:
        return f"declared Number of Frames {frames:,} exceeds the cap of {MAX_FRAMES:,} (refused before decoding)"
    return None


def native_pixel_data_length(ds: Dataset) -> int:
    """Bytes of native Pixel Data that the header declares (PS3.5 8.1.1; YBR_FULL_422: 2 samples/pixel, PS3.3 C.7.6.3.1.2)."""
    samples = 2 if str(ds.PhotometricInterpretation).strip() == "YBR_FULL_422" else _integer(ds, "SamplesPerPixel")
    bits = _integer(ds, "Rows") * _integer(ds, "Columns") * number_of_frames(ds) * samples * _integer(ds, "BitsAllocated")
    return math.ceil(bits / 8)


def native_length_problem(ds: Dataset, length: int) -> str | None:
    """Why native Pixel Data of ``length`` bytes does not fit the header, or ``None``. One byte of
    padding to an even length is allowed (PS3.5 7.1.1)."""
    expected = native_pixel_data_length(ds)
    if expected > MAX_PIXEL_DATA_BYTES:
        return f"declared Pixel Data of {expected:,} bytes exceeds the cap of {MAX_PIXEL_DATA_BYTES:,} bytes (refused before decoding)"
    if length in (expected, expected + expected % 2):
        return None
    relation = "fewer" if length < expected else "more"
    return (
        f"Pixel Data holds {length:,} bytes, {relation} than the {expected:,} that Rows × Columns × Frames × "
        f"Samples per Pixel × Bits Allocated declare"
    )


def pixel_data_length(ds: Dataset) -> int | None:
    """Length in bytes of Pixel Data as encoded (deferred values are not read), ``None`` when undefined."""
    elem = ds.get_item("PixelData", keep_deferred=True)
    if isinstance(elem, RawDataElement):
        return None if elem.length == UNDEFINED_LENGTH else elem.length
    return None if elem.is_undefined_length else len(elem.value)


def header_problem(ds: Dataset) -> str | None:
    """Every check above, for an image instance; ``None`` when its frames can be decoded."""
    try:
        return _header_problem(ds)
    except MalformedHeader as exc:
        return str(exc)


def _header_problem(ds: Dataset) -> str | None:
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return "Float Pixel Data or Double Float Pixel Data (e.g. a parametric map) is not supported"
    if "PixelData" not in ds:
        return "no Pixel Data"
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    problem = transfer_syntax_problem(syntax) or image_pixel_problem(ds)
    if problem or UID(str(syntax)).is_encapsulated:
        return problem
    length = pixel_data_length(ds)
    if length is None:
        return "native Pixel Data has an undefined length (PS3.5 A.4 allows that only for encapsulated transfer syntaxes)"
    return native_length_problem(ds, length)
