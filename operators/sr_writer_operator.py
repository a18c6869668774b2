"""MONAI Deploy adapter: classifications + re-identification map in, one DICOM SR per study written out."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.inference.zero_shot import LabelSet
from operators.run_report import RunReport, timed_stage
from operators.sr.predecessor import PredecessorSR
from operators.sr.structured_report import Algorithm, ReportOptions, build_study_sr, warm_up, write_sr

logger = logging.getLogger(__name__)


class StructuredReportWriterOperator(Operator):
    """Inputs ``classifications`` (list of ``SeriesClassification``) and ``reidentification``
    (``ReidentificationMap``); writes ``<SR SOP Instance UID>.dcm`` files atomically to the output folder.
    ``predecessor``: an earlier SR that the SR of its study supersedes (``operators/sr/predecessor.py``)."""

    def __init__(
        self, fragment: Fragment, *args, labels: LabelSet, algorithm: Algorithm, options: ReportOptions, output_folder: Path,
        report: RunReport, predecessor: PredecessorSR | None = None, **kwargs
    ) -> None:
        self.labels = labels
        self.algorithm = algorithm
        self.options = options
        self.output_folder = Path(output_folder)
        self.report = report
        self.predecessor = predecessor
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("classifications")
        spec.input("reidentification")

    def start(self) -> None:
        with self.report.timed("write_sr_warm_up"):
            warm_up()

    @timed_stage("write_sr")
    def compute(self, op_input, op_output, context) -> None:
        classifications = op_input.receive("classifications")
        reid = op_input.receive("reidentification")
        by_study = defaultdict(list)
        for series in classifications:
            by_study[series.study_instance_uid].append(series)
        for series in by_study.values():
            sr = build_study_sr(series, self.labels, self.algorithm, reid, self.options, self.predecessor)
            path = write_sr(sr, self.output_folder)
            for s in series:
                for ref in s.images:
                    self.report.mark_used(ref.sop_instance_uid)
            self.report.add_output(path)
            logger.info("Structured report written: %s (%d series)", path, len(series))
