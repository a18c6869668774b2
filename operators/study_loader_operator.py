"""The SDK's DICOM loader, reading only the files the input inventory accepted."""

from __future__ import annotations

from pathlib import Path

from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

from operators.inventory import scan_input
from operators.run_report import RunReport, timed_stage


class StudyLoaderOperator(DICOMDataLoaderOperator):
    """``DICOMDataLoaderOperator`` fed by ``scan_input``: every skipped file is in the run report
    with its reason, and files the SDK cannot read never reach it (it would log their full paths).

    Output ``dicom_study_list``: list of the SDK's ``DICOMStudy``; empty when nothing is usable.
    """

    def __init__(self, fragment, *args, report: RunReport, **kwargs) -> None:
        self.report = report
        super().__init__(fragment, *args, must_load=False, **kwargs)

    @timed_stage("load")
    def load_data_to_studies(self, input_path: Path):
        files = scan_input(Path(input_path))
        self.report.add_inventory(files)
        return self._load_data([str(f.path) for f in files if f.skip_reason is None])
