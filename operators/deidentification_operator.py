"""MONAI Deploy adapter: selected series in, de-identified series out (plus the in-memory re-id map)."""

from __future__ import annotations

import logging

from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom import Dataset

from operators.deid.admission import admit
from operators.deid.deidentifier import DeidentificationProfile, Deidentifier, deidentify_series
from operators.deid.profile import ProfileOptions
from operators.imaging.sampling import SamplingPolicy
from operators.run_report import RunReport, timed_stage

logger = logging.getLogger(__name__)


class DeidentificationOperator(Operator):
    """Input ``study_selected_series_list`` (SDK ``StudySelectedSeries``); outputs ``series``
    (list of ``DeidentifiedSeries``) and ``reidentification`` (``ReidentificationMap``, for the SR
    writer only). Nothing downstream of ``series`` carries an original identifier.

    Instances the admission gate refuses (``operators.deid.admission.admit``: non-image, or possible
    burned-in PHI unless ``accept_burned_in_annotation``) are refused before de-identification and
    recorded in the run report with the reason. Each series' ``SamplingPlan`` is made here, once, from
    the original series; only the instances it picks are de-identified (less work, less PHI handled),
    and it goes on with them to preprocessing. Each de-identified instance is linked to its input file
    in the run report.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        options: ProfileOptions,
        secret: bytes | None,
        accept_burned_in_annotation: bool,
        policy: SamplingPolicy,
        report: RunReport,
        **kwargs,
    ) -> None:
        self.policy = policy
        self.profile = DeidentificationProfile.basic(options)
        self.secret = secret
        self.accept_burned_in_annotation = accept_burned_in_annotation
        self.report = report
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("series")
        spec.output("reidentification")

    @timed_stage("deidentify")
    def compute(self, op_input, op_output, context) -> None:
        deidentifier = Deidentifier(self.profile, self.secret)
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
                accepted = self._admitted(originals)
                if not accepted:
                    continue
                plan = self.policy.plan(accepted)
                deidentified = deidentify_series(deidentifier, accepted, plan)
                for original, ds in zip(plan.pick(accepted), deidentified.datasets):
                    self.report.link(str(original.SOPInstanceUID), str(ds.SOPInstanceUID))
                logger.info(
                    "De-identified series %s: %d of %d instances",
                    deidentified.series_instance_uid, len(deidentified.datasets), len(accepted),
                )
                result.append(deidentified)
        op_output.emit(result, "series")
        op_output.emit(deidentifier.reidentification, "reidentification")

    def _admitted(self, originals: list[Dataset]) -> list[Dataset]:
        """The instances that may go on; the others are marked refused (by original UID, in memory only)."""
        accepted = []
        for ds in originals:
            reason = admit(ds, accept_burned_in_annotation=self.accept_burned_in_annotation)
            if reason is None:
                accepted.append(ds)
            else:
                self.report.mark_refused(str(ds.SOPInstanceUID), reason)
                logger.warning("Instance refused before de-identification: %s", reason)
        return accepted
