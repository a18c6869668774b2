"""DICOM image -> BiomedCLIP input tensor, per image (each slice of a series, each frame of a multi-frame).

Before decoding, the header is checked (``operators.intake.image_header``: transfer syntax, Image Pixel
Module, pixel data length, size caps). One frame is decoded at a time by pydicom's pixel decoders
(native, deflated, RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, HTJ2K); YBR_* colour
comes back as RGB.

Intensity: grey frames go through the PS3.4 grey-level pipeline (``operators.imaging.grey_levels``:
Modality LUT -> VOI -> presentation, per frame for enhanced multi-frame images, with a per-modality
fallback window). PALETTE COLOR is mapped through its palette (PS3.3 C.7.6.3.1.5); colour frames are
scaled by their bit depth.

Geometry as in CLIP: bicubic resize of the shorter side to 224 (antialiased when shrinking), centre
crop 224 x 224; grey replicated to 3 channels; CLIP mean/std normalisation.

Which images are preprocessed is not decided here: the series' ``SamplingPlan``
(``operators.imaging.sampling``), made once before de-identification, names them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.uid import ExplicitVRBigEndian

from operators.imaging.bicubic import resize_crop
from operators.imaging.grey_levels import frame_to_unit
from operators.imaging.sampling import SamplingPlan, image_problem

IMAGE_SIZE = 224
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PALETTE_KEYWORDS = tuple(
    f"{colour}PaletteColorLookupTable{part}" for colour in ("Red", "Green", "Blue", "Alpha") for part in ("Descriptor", "Data")
)


class UnsupportedImage(ValueError):
    """The image cannot be turned into model input; the message says why (no PHI)."""


@dataclass(frozen=True)
class ImageRef:
    """One image of a series: an instance, and a frame of it for multi-frame instances (1-based)."""

    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None = None


@dataclass
class PreprocessedSeries:
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    series_number: int | None
    pixel_values: np.ndarray  # N x 3 x 224 x 224 float32
    images: list[ImageRef]
    total_images: int
    sampling: str
    refused: list[tuple[ImageRef, str]] = field(default_factory=list)


def to_unit(ds: Dataset, frame: np.ndarray, index: int | None = None) -> np.ndarray:
    """Decoded frame ``index`` -> float32 in [0, 1], ``H x W`` (grey) or ``H x W x 3`` (colour)."""
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return frame_to_unit(ds, frame, index)
    if photometric == "PALETTE COLOR":
        frame, bits = apply_color_lut(frame, _palette_of(ds)), int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        bits = int(ds.BitsStored)
    unit = frame.astype(np.float32)
    unit *= np.float32(1.0 / (2**bits - 1))
    return np.clip(unit, 0.0, 1.0, out=unit)


def _palette_of(ds: Dataset) -> Dataset:
    """The Palette Color Lookup Table Module of ``ds`` (PS3.3 C.7.6.19) as pydicom 3.0's
    ``apply_color_lut`` reads it: that reads (non-segmented) LUT Data as little endian whatever the
    transfer syntax, so big endian LUT Data (OW) is handed over with its 16-bit words swapped."""
    if ds.file_meta.TransferSyntaxUID != ExplicitVRBigEndian or "RedPaletteColorLookupTableData" not in ds:
        return ds  # segmented LUT Data is read with the data set's endianness
    palette = Dataset()
    for keyword in PALETTE_KEYWORDS:
        if keyword in ds:
            value = ds[keyword].value
            if keyword.endswith("LookupTableData") and ds[keyword].VR == "OW":
                value = np.frombuffer(value, ">u2").astype("<u2").tobytes()
            setattr(palette, keyword, value)
    return palette


def to_model_input(unit: np.ndarray) -> np.ndarray:
    """``H x W`` or ``H x W x 3`` in [0, 1] -> CLIP-normalised ``3 x 224 x 224`` float32: the values of
    torch's ``F.interpolate(mode="bicubic", align_corners=False, antialias=scale < 1)`` then the centre
    crop (``operators.imaging.bicubic``, in numpy: no torch in the app's process)."""
    image = np.asarray(unit, dtype=np.float32)
    image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    height, width = image.shape[-2:]
    scale = IMAGE_SIZE / min(height, width)
    size = (max(IMAGE_SIZE, math.floor(height * scale + 0.5)), max(IMAGE_SIZE, math.floor(width * scale + 0.5)))
    crop = ((size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2, IMAGE_SIZE, IMAGE_SIZE)
    image = np.clip(resize_crop(image, size, crop, antialias=scale < 1), 0.0, 1.0)
    return (image - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]  # grey broadcasts to the 3 channels


def decode_frame(ds: Dataset, index: int | None) -> np.ndarray:
    """Decode one frame (``index`` 0-based, ``None`` for single-frame); YBR colour comes back as RGB.
    The header must have passed ``header_problem``."""
    try:
        # pydicom 3.0 annotates **kwargs as DecodeOptions rather than Unpack[DecodeOptions]
        frame, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=index, as_rgb=True)  # type: ignore[arg-type]
    except Exception as exc:  # decoders raise many kinds; say which and why, never values
        raise UnsupportedImage(f"pixel data could not be decoded ({_one_line(exc)})") from None
    return frame


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def model_input(ds: Dataset, index: int | None) -> np.ndarray:
    """Frame ``index`` of a checked image -> ``3 x 224 x 224``; ``UnsupportedImage`` says why not."""
    frame = decode_frame(ds, index)
    try:
        return to_model_input(to_unit(ds, frame, index))
    except Exception as exc:  # malformed LUTs and the like: refuse the image, not the series
        raise UnsupportedImage(f"pixel values could not be transformed ({_one_line(exc)})") from None


def preprocess_series(study_uid: str, series_uid: str, datasets: Sequence[Dataset], plan: SamplingPlan) -> PreprocessedSeries:
    """Preprocess the images ``plan`` names, and only those (it never selects again); images that cannot
    be used are listed with why.

    ``datasets``: ``plan.pick(series)`` of the series the plan was made from, or their de-identified
    copies, in that order.
    """
    if len(datasets) != len(plan.instances):
        raise ValueError(f"{len(datasets)} instance(s) given where the sampling plan picks {len(plan.instances)}")
    problems = [image_problem(ds) for ds in datasets]  # checked again: these may be the de-identified copies
    arrays, refs, refused = [], [], []
    for picked, index in plan.picked_images():
        ds = datasets[picked]
        ref = ImageRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID), None if index is None else index + 1)
        try:
            if problems[picked]:
                raise UnsupportedImage(problems[picked])
            arrays.append(model_input(ds, index))
            refs.append(ref)
        except UnsupportedImage as exc:
            refused.append((ref, str(exc)))
    first = datasets[0]
    pixel_values = np.stack(arrays) if arrays else np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    return PreprocessedSeries(
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        modality=str(first.get("Modality", "")),
        series_number=int(first.SeriesNumber) if first.get("SeriesNumber") not in (None, "") else None,
        pixel_values=pixel_values.astype(np.float32, copy=False),
        images=refs,
        total_images=plan.total_images,
        sampling=plan.description,
        refused=refused,
    )
