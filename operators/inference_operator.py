"""MONAI Deploy adapter: preprocessed series in, zero-shot classifications out."""

from __future__ import annotations

import logging

from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.inference.backends.base import BackendSpec, ImageEmbeddingBackend
from operators.inference.backends.registry import create_backend
from operators.inference.classification import SeriesClassification, classify_series
from operators.inference.model_package import ModelPackage
from operators.run_report import INFERRED, ImageRow, RunReport, SeriesRow, timed_stage

logger = logging.getLogger(__name__)


class ZeroShotInferenceOperator(Operator):
    """Input ``preprocessed`` (list of ``PreprocessedSeries``); output ``classifications`` (list of
    ``SeriesClassification``). The backend (``operators.inference.backends``) is created once at start; the
    operator does not depend on which one it is."""

    def __init__(
        self, fragment: Fragment, *args, package: ModelPackage, backend: BackendSpec | ImageEmbeddingBackend, batch_size: int,
        report: RunReport, **kwargs
    ) -> None:
        self.package = package
        self.backend_spec = backend  # a spec, or a backend already connected (a Triton server checked before the run)
        self.batch_size = batch_size
        self.report = report
        self.backend: ImageEmbeddingBackend | None = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("preprocessed")
        spec.output("classifications")

    def start(self) -> None:
        spec = self.backend_spec
        self.backend = backend = create_backend(spec, self.package) if isinstance(spec, BackendSpec) else spec
        logger.info("Inference backend: %s", backend.name)

    @timed_stage("infer")
    def compute(self, op_input, op_output, context) -> None:
        if self.backend is None:
            raise RuntimeError("the inference operator computed before start()")
        labels = self.package.labels
        result = []
        for series in op_input.receive("preprocessed"):
            classified = classify_series(series, self.backend, self.package.head, self.batch_size)
            logger.info("Series %s: top label %s", classified.series_instance_uid, labels.names[classified.top_index])
            self.report.add_series(_series_row(classified, labels.names))
            result.append(classified)
        op_output.emit(result, "classifications")


def _series_row(classified: SeriesClassification, names: list[str]) -> SeriesRow:
    """The run report's row of an inferred series: probabilities by label name, per series and per image."""
    return SeriesRow(
        series=classified.series_instance_uid,
        modality=classified.modality,
        series_number=classified.series_number,
        status=INFERRED,
        images_total=classified.total_images,
        images_inferred=len(classified.images),
        sampling=classified.sampling,
        backend=classified.backend,
        top_label=names[classified.top_index],
        probabilities=dict(zip(names, map(float, classified.aggregate))),
        images=[
            ImageRow(ref.sop_instance_uid, ref.frame_number, dict(zip(names, map(float, row))))
            for ref, row in zip(classified.images, classified.per_image)
        ],
    )
