"""Which images of a series the model sees: the sampling policy, and the plan it makes once per series.

The images of a series are its instances in instance order (Instance Number, then SOP Instance UID)
and, within a multi-frame instance, its frames in frame order (PS3.3 C.7.6.6); an instance whose header
cannot be decoded counts as one image, so that it is refused once, whatever frames it declares.

Policy for long series: at most ``max_images_per_series`` images, evenly spaced over the series in
that order, always including the first and the last. Every image left out is counted (the plan's
``total_images`` and ``description``): nothing is truncated silently.

The plan is made once, from the original series, before de-identification: it picks the instances to
de-identify and tells preprocessing which images of them to decode. It crosses the de-identification
boundary, so it holds positions and indices only, never an identifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydicom import Dataset

from operators.intake.image_header import header_problem, number_of_frames

T = TypeVar("T")


@dataclass(frozen=True)
class ImagePosition:
    """Where an image sits in a series: the position of its instance in the series' instance list (as
    the plan was given it), and its frame index (0-based; ``None`` for a single-frame instance)."""

    instance: int
    frame: int | None = None


def image_problem(ds: Dataset) -> str | None:
    """Why the frames of ``ds`` cannot be decoded (``header_problem``, malformed values included), or ``None``."""
    try:
        return header_problem(ds)
    except (TypeError, ValueError) as exc:  # malformed attribute values
        return f"malformed image header ({type(exc).__name__}: {' '.join(str(exc).split())})"


def frame_indices(ds: Dataset) -> list[int | None]:
    """How the images of an instance whose header decodes are named: its frame indices (0-based), or ``[None]``
    for a single-frame instance."""
    frames = number_of_frames(ds)
    return list(range(frames)) if frames > 1 else [None]


def series_images(datasets: Sequence[Dataset]) -> list[tuple[ImagePosition, str | None]]:
    """Every image of a series in instance order, with its instance's header problem (or ``None``)."""

    def key(position: int) -> tuple[int, str]:
        ds = datasets[position]
        return int(ds.get("InstanceNumber") or 0), str(ds.SOPInstanceUID)

    images: list[tuple[ImagePosition, str | None]] = []
    for position in sorted(range(len(datasets)), key=key):
        problem = image_problem(datasets[position])
        for frame in [None] if problem else frame_indices(datasets[position]):
            images.append((ImagePosition(position, frame), problem))
    return images


@dataclass(frozen=True)
class SamplingPlan:
    """The images of one series to preprocess, decided once (``SamplingPolicy.plan``).

    ``images`` in series order; ``total_images`` counts every image of the series; ``description`` says
    how many were taken and why (for the run report and the SR's algorithm parameters).
    """

    images: tuple[ImagePosition, ...]
    total_images: int
    description: str

    @property
    def instances(self) -> tuple[int, ...]:
        """Positions of the instances that hold the planned images, ascending, each once."""
        return tuple(sorted({image.instance for image in self.images}))

    def pick(self, series: Sequence[T]) -> list[T]:
        """The instances of ``series`` (the list the plan was made from) that hold the planned images."""
        return [series[position] for position in self.instances]

    def picked_images(self) -> list[tuple[int, int | None]]:
        """Each planned image, in series order, as (index of its instance in ``pick(series)``, frame index)."""
        index_of = {position: index for index, position in enumerate(self.instances)}
        return [(index_of[image.instance], image.frame) for image in self.images]


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

    def plan(self, datasets: Sequence[Dataset]) -> SamplingPlan:
        """The plan for the series of ``datasets`` (its instances, in any order)."""
        images = [position for position, _ in series_images(datasets)]
        chosen = tuple(images[i] for i in self.select(len(images)))
        return SamplingPlan(chosen, len(images), self.describe(len(chosen), len(images)))
