"""The SDK's series selector, timed for the run report."""

from __future__ import annotations

from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

from operators.run_report import RunReport, timed_stage


class SeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """``DICOMSeriesSelectorOperator`` (JSON rules, all matched series) with its time in the run report."""

    def __init__(self, fragment, *args, rules: str, report: RunReport, **kwargs) -> None:
        self.report = report
        super().__init__(fragment, *args, rules=rules, all_matched=True, **kwargs)

    @timed_stage("select")
    def filter(self, *args, **kwargs):
        return super().filter(*args, **kwargs)
