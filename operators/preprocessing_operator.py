"""MONAI Deploy adapter: de-identified series in, model-ready tensors out."""

from __future__ import annotations

import logging

from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.imaging.preprocessing import preprocess_series
from operators.run_report import NO_USABLE_IMAGE, RunReport, SeriesRow, timed_stage

logger = logging.getLogger(__name__)


class PreprocessingOperator(Operator):
    """Input ``series`` (list of ``DeidentifiedSeries``); output ``preprocessed`` (list of
    ``PreprocessedSeries`` with at least one usable image). Each series' images are those of the
    sampling plan it comes with. Refused images go to the run report."""

    def __init__(self, fragment: Fragment, *args, report: RunReport, **kwargs) -> None:
        self.report = report
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("series")
        spec.output("preprocessed")

    @timed_stage("preprocess")
    def compute(self, op_input, op_output, context) -> None:
        result = []
        for series in op_input.receive("series"):
            pre = preprocess_series(series.study_instance_uid, series.series_instance_uid, series.datasets, series.plan)
            for ref, reason in pre.refused:
                logger.warning("Image %s frame %s refused: %s", ref.sop_instance_uid, ref.frame_number, reason)
                self.report.mark_refused(ref.sop_instance_uid, reason)
            if pre.images:
                logger.info("Series %s: %s", pre.series_instance_uid, pre.sampling)
                result.append(pre)
            else:
                self.report.add_series(
                    SeriesRow(pre.series_instance_uid, pre.modality, pre.series_number, NO_USABLE_IMAGE, pre.total_images)
                )
        op_output.emit(result, "preprocessed")
