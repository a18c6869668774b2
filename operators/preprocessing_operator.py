"""MONAI Deploy adapter: de-identified series in, model-ready tensors out."""

from __future__ import annotations

import logging

from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.imaging.preprocessing import SamplingPolicy, preprocess_series
from operators.run_report import RunReport, timed_stage

logger = logging.getLogger(__name__)


class PreprocessingOperator(Operator):
    """Input ``series`` (list of ``DeidentifiedSeries``); output ``preprocessed`` (list of
    ``PreprocessedSeries`` with at least one usable image). Refused images go to the run report."""

    def __init__(self, fragment: Fragment, *args, policy: SamplingPolicy, report: RunReport, **kwargs) -> None:
        self.policy = policy
        self.report = report
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("series")
        spec.output("preprocessed")

    @timed_stage("preprocess")
    def compute(self, op_input, op_output, context) -> None:
        result = []
        for series in op_input.receive("series"):
            pre = preprocess_series(
                series.study_instance_uid, series.series_instance_uid, series.datasets, self.policy, series.total_images
            )
            for ref, reason in pre.refused:
                logger.warning("Image %s frame %s refused: %s", ref.sop_instance_uid, ref.frame_number, reason)
                self.report.mark_refused(ref.sop_instance_uid, reason)
            if pre.images:
                logger.info("Series %s: %s", pre.series_instance_uid, pre.sampling)
                result.append(pre)
            else:
                self.report.add_series(
                    {"series": pre.series_instance_uid, "modality": pre.modality, "series_number": pre.series_number,
                     "status": "no usable image", "images_total": pre.total_images}
                )
        op_output.emit(result, "preprocessed")
