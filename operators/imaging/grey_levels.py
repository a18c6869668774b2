"""Grey-level pipeline of one frame: stored values -> displayed intensity in [0, 1] (1 = brightest).

PS3.4 Annex N.2 (Grayscale Transformations): Modality LUT -> VOI LUT -> Presentation LUT.

- Modality LUT (PS3.3 C.11.1): Rescale Slope/Intercept, or the Modality LUT Sequence.
- VOI (PS3.3 C.11.2): the first Window Center/Width, with the VOI LUT Function (LINEAR, LINEAR_EXACT,
  SIGMOID; C.11.2.1.2, C.11.2.1.3); else the first VOI LUT Sequence item; else, or when the window is
  invalid (width below 1 for LINEAR), the modality's fallback window (``FALLBACK_WINDOWS``).
- Presentation (PS3.3 C.11.6): MONOCHROME1, and MONOCHROME2 with Presentation LUT Shape INVERSE,
  are inverted so that high values are bright.

Per-frame parameters of enhanced multi-frame images (PS3.3 C.7.6.16): the Pixel Value
Transformation and Frame VOI LUT functional groups of the frame, else the shared ones, else the
top-level attributes.

Memory: integer frames of 8 or 16 bits allocated go through a lookup table computed over every
possible stored value (256 or 65,536 entries), so a frame costs exactly one float32 array of its
size; the fallback window's percentiles come from a histogram of stored values. Other frames
(32 bits allocated) are computed directly in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence


@dataclass(frozen=True)
class FixedWindow:
    """A window in modality units (e.g. Hounsfield units for CT)."""

    center: float
    width: float

    def describe(self) -> str:
        return f"window center {self.center:g}, width {self.width:g}"


@dataclass(frozen=True)
class PercentileWindow:
    """A window from the ``low``-th to the ``high``-th percentile of the frame's modality values,
    Pixel Padding Value excluded (PS3.3 C.7.5.1.1.2)."""

    low: float
    high: float

    def describe(self) -> str:
        return f"{self.low:g}th to {self.high:g}th percentile of the frame"


#: Window used when an image has none (or an invalid one), per Modality; ``None`` key = any other.
FALLBACK_WINDOWS: dict[str | None, FixedWindow | PercentileWindow] = {
    "CT": FixedWindow(40.0, 400.0),  # soft tissue, in HU
    "PT": PercentileWindow(0.0, 99.5),  # no activity stays black
    "NM": PercentileWindow(0.0, 99.5),
    None: PercentileWindow(0.5, 99.5),
}


def window_linear(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """VOI windowing to [0, 1] (PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.2 LINEAR_EXACT, C.11.2.1.3.1 SIGMOID)."""
    values = values.astype(np.float32, copy=False)
    function = function.upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width == 1:
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value: object) -> float:
    """First value of a possibly multi-valued attribute (several windows: the first is the default)."""
    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)  # type: ignore[arg-type]


def _window_is_valid(width: float, function: str) -> bool:
    return width >= 1 if function == "LINEAR" else width > 0


@dataclass(frozen=True)
class GreyTransform:
    """The grey-level transformations of one frame."""

    slope: float
    intercept: float
    modality_lut: Dataset | None  # holds a Modality LUT Sequence
    window: tuple[float, float, str] | None  # center, width, VOI LUT Function
    voi_lut: Dataset | None  # holds a VOI LUT Sequence
    fallback: FixedWindow | PercentileWindow
    padding: tuple[int, int] | None  # stored values excluded from percentiles (inclusive range)
    inverted: bool

    @classmethod
    def of_frame(cls, ds: Dataset, index: int | None) -> GreyTransform:
        """The transformations of frame ``index`` (0-based; ``None`` for a single-frame image)."""
        rescale = _functional_group(ds, index, "PixelValueTransformationSequence")
        voi = _functional_group(ds, index, "FrameVOILUTSequence")
        window = None
        if "WindowCenter" in voi and "WindowWidth" in voi:
            function = str(voi.get("VOILUTFunction") or "LINEAR").strip().upper()
            center, width = _first(voi.WindowCenter), _first(voi.WindowWidth)
            window = (center, width, function) if _window_is_valid(width, function) else None
        photometric = str(ds.PhotometricInterpretation).strip()
        shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
        return cls(
            slope=float(rescale.get("RescaleSlope") or 1.0),
            intercept=float(rescale.get("RescaleIntercept") or 0.0),
            modality_lut=_lut_holder(ds, ds, "ModalityLUTSequence"),
            window=window,
            voi_lut=_lut_holder(ds, voi, "VOILUTSequence"),
            fallback=FALLBACK_WINDOWS.get(str(ds.get("Modality", "")).upper(), FALLBACK_WINDOWS[None]),
            padding=_padding_range(ds),
            inverted=photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE"),
        )

    @property
    def needs_histogram(self) -> bool:
        return self.window is None and self.voi_lut is None and isinstance(self.fallback, PercentileWindow)

    def modality_values(self, stored: np.ndarray) -> np.ndarray:
        """Modality LUT (PS3.3 C.11.1.1.1): a LUT takes precedence over rescale."""
        if self.modality_lut is not None:
            return apply_modality_lut(stored, self.modality_lut).astype(np.float32, copy=False)
        if self.slope == 1.0 and self.intercept == 0.0:
            return stored.astype(np.float32, copy=False)
        return stored.astype(np.float32) * np.float32(self.slope) + np.float32(self.intercept)

    def to_unit(self, stored: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """Stored values -> [0, 1] float32. ``counts``: how often each entry of ``stored`` occurs in the
        frame, when ``stored`` is a table of every possible value rather than the frame itself."""
        values = self.modality_values(stored)
        if self.window is not None:
            unit = window_linear(values, *self.window)
        elif self.voi_lut is not None:
            bits = int(self.voi_lut.VOILUTSequence[0].LUTDescriptor[2])
            unit = apply_voi_lut(np.rint(values).astype(np.int64), self.voi_lut, index=0).astype(np.float32) / float(2**bits - 1)
        else:
            unit = self._fallback(stored, values, counts)
        if self.inverted:
            unit = 1.0 - unit
        return unit.astype(np.float32, copy=False)

    def _fallback(self, stored: np.ndarray, values: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
        if isinstance(self.fallback, FixedWindow):
            return window_linear(values, self.fallback.center, self.fallback.width)
        padding = np.zeros(stored.shape, bool) if self.padding is None else (stored >= self.padding[0]) & (stored <= self.padding[1])
        wanted = (self.fallback.low, self.fallback.high)
        if counts is None:  # ``stored`` is the frame itself
            sample = values[~padding] if (~padding).any() else values
            low, high = (float(v) for v in np.percentile(sample, wanted))
        else:
            weights = np.where(padding, 0, counts) if (counts[~padding] > 0).any() else counts
            low, high = weighted_percentiles(values, weights, wanted)
        return np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, percentiles: tuple[float, ...]) -> list[float]:
    """Percentiles of ``values`` each repeated ``weights`` times, as ``np.percentile``'s default
    (linear interpolation between the closest ranks) would give on the expanded array."""
    order = np.argsort(values, kind="stable")
    sorted_values, cumulative = values[order], np.cumsum(weights[order])
    total = int(cumulative[-1])
    result = []
    for q in percentiles:
        rank = q / 100.0 * (total - 1)
        below, above = int(np.floor(rank)), int(np.ceil(rank))
        low = float(sorted_values[np.searchsorted(cumulative, below, side="right")])
        high = float(sorted_values[np.searchsorted(cumulative, above, side="right")])
        result.append(low + (rank - below) * (high - low))
    return result


def frame_to_unit(ds: Dataset, frame: np.ndarray, index: int | None) -> np.ndarray:
    """One decoded grey frame -> float32 ``H x W`` in [0, 1] (high = bright)."""
    transform = GreyTransform.of_frame(ds, index)
    if frame.dtype.kind in "iu" and frame.dtype.itemsize <= 2:
        code_type = np.uint8 if frame.dtype.itemsize == 1 else np.uint16
        codes = frame.view(code_type)  # the bit pattern indexes the table; signed values wrap as in it
        stored = np.arange(np.iinfo(code_type).max + 1, dtype=code_type).view(frame.dtype)
        counts = np.bincount(codes.ravel(), minlength=stored.size) if transform.needs_histogram else None
        return transform.to_unit(stored, counts)[codes]
    return transform.to_unit(frame)


def _functional_group(ds: Dataset, index: int | None, sequence: str) -> Dataset:
    """The item of functional group ``sequence`` that applies to frame ``index`` (per-frame first,
    then shared, PS3.3 C.7.6.16.1), or ``ds`` itself when neither has it."""
    if index is not None:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame and index < len(per_frame) and per_frame[index].get(sequence):
            return per_frame[index][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and shared[0].get(sequence):
        return shared[0][sequence][0]
    return ds


def _lut_holder(ds: Dataset, source: Dataset, sequence: str) -> Dataset | None:
    """A dataset holding ``source``'s LUT ``sequence`` with what pydicom needs to read it (the
    transfer syntax for OW LUT Data, Pixel Representation for the first mapped value)."""
    if not source.get(sequence):
        return None
    holder = Dataset()
    holder.file_meta = ds.file_meta
    holder.PixelRepresentation = ds.PixelRepresentation
    setattr(holder, sequence, Sequence([source[sequence][0]]))
    return holder


def _padding_range(ds: Dataset) -> tuple[int, int] | None:
    """Pixel Padding Value [to Pixel Padding Range Limit] (PS3.3 C.7.5.1.1.2), in stored values."""
    if ds.get("PixelPaddingValue") is None:
        return None
    first = int(ds.PixelPaddingValue)
    last = int(ds.get("PixelPaddingRangeLimit", first))
    return min(first, last), max(first, last)
