"""The SDK's DICOM loader, reading only the files the input inventory accepted."""

from __future__ import annotations

from pathlib import Path

from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

from operators.intake.inventory import InputFile, scan_input
from operators.intake.loader_reconciliation import dropped_by_loader
from operators.run_report import RunReport, timed_stage


class StudyLoaderOperator(DICOMDataLoaderOperator):
    """``DICOMDataLoaderOperator`` fed by ``scan_input``: every skipped file is in the run report
    with its reason, and files the SDK cannot read never reach it (it would log their full paths).
    Instances the SDK drops (one instance per Image Position (Patient) in a series) get a reason too.

    Output ``dicom_study_list``: list of the SDK's ``DICOMStudy``; empty when nothing is usable.
    """

    def __init__(self, fragment, *args, report: RunReport, **kwargs) -> None:
        self.report = report
        super().__init__(fragment, *args, must_load=False, **kwargs)

    @timed_stage("load")
    def load_data_to_studies(self, input_path: Path):
        files = scan_input(Path(input_path))
        self.report.add_inventory(files)
        accepted: list[InputFile] = [f for f in files if f.skip_reason is None]
        studies = self._load_data([str(f.path) for f in accepted])
        loaded = [
            instance.get_native_sop_instance()
            for study in studies
            for series in study.get_all_series()
            for instance in series.get_sop_instances()
        ]
        for drop in dropped_by_loader(accepted, loaded):
            if drop.refused:
                self.report.mark_refused(drop.sop_instance_uid, drop.reason)
            else:
                self.report.mark_not_used(drop.sop_instance_uid, drop.reason)
        return studies
