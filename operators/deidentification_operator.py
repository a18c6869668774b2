"""MONAI Deploy adapter: selected series in, de-identified series out (plus the in-memory re-id map)."""

from __future__ import annotations

import logging

from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.deidentification import Deidentifier, DeidentificationProfile, deidentify_series
from operators.run_report import RunReport, timed_stage

logger = logging.getLogger(__name__)


class DeidentificationOperator(Operator):
    """Input ``study_selected_series_list`` (SDK ``StudySelectedSeries``); outputs ``series``
    (list of ``DeidentifiedSeries``) and ``reidentification`` (``ReidentificationMap``, for the SR
    writer only). Nothing downstream of ``series`` carries an original identifier.
    """

    def __init__(self, fragment: Fragment, *args, report: RunReport, secret: bytes | None, **kwargs) -> None:
        self.report = report
        self.profile = DeidentificationProfile.basic()
        self.secret = secret
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("series")
        spec.output("reidentification")

    @timed_stage("deidentify")
    def compute(self, op_input, op_output, context) -> None:
        deidentifier = Deidentifier(self.profile, self.secret)
        self.report.reidentification = deidentifier.reidentification
        seen: set[str] = set()
        result = []
        for study in op_input.receive("study_selected_series_list") or []:
            for selected in study.selected_series:
                series = selected.series
                if series.SeriesInstanceUID in seen:  # matched by several selection rules
                    continue
                seen.add(series.SeriesInstanceUID)
                originals = [instance.get_native_sop_instance() for instance in series.get_sop_instances()]
                self.report.mark_selected((str(ds.SOPInstanceUID) for ds in originals), "not sampled (series sampling policy)")
                deidentified = deidentify_series(deidentifier, originals)
                logger.info("De-identified series %s: %d instances", deidentified.series_instance_uid, len(originals))
                result.append(deidentified)
        op_output.emit(result, "series")
        op_output.emit(deidentifier.reidentification, "reidentification")
