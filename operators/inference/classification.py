"""Zero-shot classification of preprocessed series: per-image probabilities and the series aggregate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from operators.imaging.preprocessing import ImageRef, PreprocessedSeries
from operators.inference.backends.base import ImageEmbeddingBackend, embed_in_batches
from operators.inference.zero_shot import ZeroShotHead, aggregate_series


@dataclass(frozen=True)
class SeriesClassification:
    study_instance_uid: str  # de-identified
    series_instance_uid: str  # de-identified
    modality: str
    series_number: int | None
    images: list[ImageRef]  # de-identified references, one per row of per_image
    total_images: int
    sampling: str
    per_image: np.ndarray  # N x L
    aggregate: np.ndarray  # L
    backend: str

    @property
    def top_index(self) -> int:
        return int(np.argmax(self.aggregate))


def classify_series(
    series: PreprocessedSeries, backend: ImageEmbeddingBackend, head: ZeroShotHead, batch_size: int
) -> SeriesClassification:
    per_image = head.probabilities(embed_in_batches(backend, series.pixel_values, batch_size))
    return SeriesClassification(
        study_instance_uid=series.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        modality=series.modality,
        series_number=series.series_number,
        images=list(series.images),
        total_images=series.total_images,
        sampling=series.sampling,
        per_image=per_image,
        aggregate=aggregate_series(per_image),
        backend=backend.name,
    )
