"""DICOM image -> BiomedCLIP input tensor, per image (each slice of a series, each frame of a multi-frame).

Grey-level pipeline (PS3.4 Grayscale Transformations, C.11): stored values -> Modality LUT
(Rescale Slope/Intercept or Modality LUT Sequence) -> VOI (Window Center/Width with the VOI LUT
Function of PS3.3 C.11.2.1.2, else the VOI LUT Sequence, else a percentile window: 0.5th–99.5th
percentile of the image) -> [0, 1] -> MONOCHROME1 inverted so that high values are bright. Colour
images (RGB, YBR_* decoded to RGB by pydicom) are scaled by their bit depth.

Geometry as in CLIP: bicubic resize of the shorter side to 224 (antialiased when shrinking), centre
crop 224 x 224; grey replicated to 3 channels; CLIP mean/std normalisation.

Sampling policy for long series: at most ``max_images_per_series`` images, evenly spaced over the
series in its instance order (Instance Number, then frame number), always including the first and
the last. Every skipped image is counted and reported — nothing is truncated silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

IMAGE_SIZE = 224
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PERCENTILE_WINDOW = (0.5, 99.5)


class UnsupportedImage(ValueError):
    """The image cannot be turned into model input; the message says why (no PHI)."""


@dataclass(frozen=True)
class SamplingPolicy:
    max_images_per_series: int = 16

    def __post_init__(self) -> None:
        if self.max_images_per_series < 1:
            raise ValueError("max_images_per_series must be at least 1")

    def select(self, count: int) -> list[int]:
        """Indices of the images to use out of ``count``: all, or evenly spaced incl. first and last."""
        if count <= self.max_images_per_series:
            return list(range(count))
        if self.max_images_per_series == 1:
            return [count // 2]
        step = (count - 1) / (self.max_images_per_series - 1)
        return sorted({int(round(i * step)) for i in range(self.max_images_per_series)})

    def describe(self, used: int, total: int) -> str:
        if used == total:
            return f"all {total} images"
        return f"{used} of {total} images, evenly spaced (max_images_per_series={self.max_images_per_series})"


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


def window_linear(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """VOI windowing to [0, 1] (PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.2 LINEAR_EXACT, C.11.2.1.3.1 SIGMOID)."""
    values = values.astype(np.float32, copy=False)
    function = function.upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise UnsupportedImage("Window Width must be > 0 for LINEAR_EXACT")
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise UnsupportedImage("Window Width must be >= 1 for LINEAR")
    if width == 1:
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value: object) -> float:
    """First value of a possibly multi-valued attribute (several windows: the first is the default)."""
    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)  # type: ignore[arg-type]


def grey_to_unit(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored grey values of one frame -> displayed intensity in [0, 1] (high = bright)."""
    values = apply_modality_lut(stored, ds)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        unit = window_linear(values, _first(ds.WindowCenter), _first(ds.WindowWidth), ds.get("VOILUTFunction", "LINEAR"))
    elif "VOILUTSequence" in ds:
        lut = ds.VOILUTSequence[0]
        bits = int(lut.LUTDescriptor[2])
        unit = apply_voi_lut(values, ds, index=0).astype(np.float32) / float(2**bits - 1)
    else:
        low, high = np.percentile(values, PERCENTILE_WINDOW)
        unit = np.clip((values - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32, copy=False)


def to_unit(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """One decoded frame -> float32 in [0, 1], ``H x W`` (grey) or ``H x W x 3`` (colour)."""
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return grey_to_unit(ds, frame)
    if int(ds.get("SamplesPerPixel", 1)) == 3 and frame.ndim == 3:
        return (frame.astype(np.float32) / float(2 ** int(ds.BitsStored) - 1)).clip(0.0, 1.0)
    raise UnsupportedImage(f"photometric interpretation {photometric or '(absent)'} is not supported")


def to_model_input(unit: np.ndarray) -> np.ndarray:
    """``H x W`` or ``H x W x 3`` in [0, 1] -> CLIP-normalised ``3 x 224 x 224`` float32."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))
    tensor = tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
    height, width = tensor.shape[-2:]
    scale = IMAGE_SIZE / min(height, width)
    size = (max(IMAGE_SIZE, math.floor(height * scale + 0.5)), max(IMAGE_SIZE, math.floor(width * scale + 0.5)))
    tensor = F.interpolate(tensor, size=size, mode="bicubic", align_corners=False, antialias=scale < 1)
    top, left = (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
    tensor = tensor[0, :, top : top + IMAGE_SIZE, left : left + IMAGE_SIZE].clamp_(0.0, 1.0)
    image = tensor.expand(3, -1, -1).numpy() if tensor.shape[0] == 1 else tensor.numpy()
    return (image - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]


def decode_frame(ds: Dataset, index: int | None) -> np.ndarray:
    """Decode one frame (``index`` 0-based, ``None`` for single-frame); colour comes back as RGB."""
    if "PixelData" not in ds:
        raise UnsupportedImage("no Pixel Data")
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        raise UnsupportedImage("no Transfer Syntax UID in the file meta information")
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise UnsupportedImage(f"transfer syntax {syntax.name} is not supported: {exc}") from None
    if not decoder.is_available:
        raise UnsupportedImage(f"no decoder installed for transfer syntax {syntax.name}")
    try:
        frame, _ = decoder.as_array(ds, index=index, as_rgb=True)
    except Exception as exc:  # pydicom raises many kinds; say which and why, never values
        reason = " ".join(str(exc).split())  # plugins report one line each; keep the report one line
        raise UnsupportedImage(f"pixel data could not be decoded ({type(exc).__name__}: {reason})") from None
    return frame


def series_images(datasets: list[Dataset]) -> list[tuple[Dataset, int | None, ImageRef]]:
    """Every image of a series in instance order: ``(dataset, frame index or None, ImageRef)``."""
    ordered = sorted(datasets, key=lambda d: (int(d.get("InstanceNumber") or 0), str(d.SOPInstanceUID)))
    images = []
    for ds in ordered:
        frames = int(ds.get("NumberOfFrames") or 1)
        for index in range(frames) if frames > 1 else [None]:
            ref = ImageRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID), None if index is None else index + 1)
            images.append((ds, index, ref))
    return images


def preprocess_series(
    study_uid: str, series_uid: str, datasets: list[Dataset], policy: SamplingPolicy
) -> PreprocessedSeries:
    """Sample and preprocess a (de-identified) series; images that cannot be used are listed with why."""
    images = series_images(datasets)
    chosen = [images[i] for i in policy.select(len(images))]
    arrays, refs, refused = [], [], []
    for ds, index, ref in chosen:
        try:
            arrays.append(to_model_input(to_unit(ds, decode_frame(ds, index))))
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
        total_images=len(images),
        sampling=policy.describe(len(chosen), len(images)),
        refused=refused,
    )
