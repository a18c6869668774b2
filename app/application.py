"""The application graph:

    StudyLoader ─▶ SeriesSelector ─▶ Deidentification ─▶ Preprocessing ─▶ ZeroShotInference ─▶ SRWriter
                                            └──────────────── reidentification map ─────────────────┘
"""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from app import logging_policy
from app.settings import AppSettings
from operators.deidentification_operator import DeidentificationOperator
from operators.imaging.sampling import SamplingPolicy
from operators.inference.backends.base import BackendSpec, ImageEmbeddingBackend
from operators.inference.model_package import ModelPackage
from operators.inference_operator import ZeroShotInferenceOperator
from operators.preprocessing_operator import PreprocessingOperator
from operators.run_report import RunReport
from operators.series_selector_operator import SeriesSelectorOperator
from operators.sr.predecessor import PredecessorSR
from operators.sr.structured_report import ALGORITHM_NAME, Algorithm
from operators.sr_writer_operator import StructuredReportWriterOperator
from operators.study_loader_operator import StudyLoaderOperator

logger = logging.getLogger(__name__)


def algorithm_of(package: ModelPackage) -> Algorithm:
    manifest = package.manifest
    weights = "RANDOM-INIT (NOT FOR CLINICAL USE)" if package.is_random_init else manifest.weights.source
    return Algorithm(
        name=ALGORITHM_NAME,
        version=package.identity,
        parameters=(f"weights={weights}", f"labels_sha256={manifest.labels_sha256[:16]}"),
        random_weights=package.is_random_init,
    )


class BiomedCLIPZeroShotApp(Application):
    """DICOM study folder in (-i), one Comprehensive 3D SR per study and run_report.json out (-o),
    BiomedCLIP model package from -m."""

    def __init__(self, argv: list[str], *, settings: AppSettings, package: ModelPackage,
                 backend: BackendSpec | ImageEmbeddingBackend | None = None, predecessor: PredecessorSR | None = None) -> None:
        """``argv``: program and the SDK's -i/-o/-m, already checked (``app.cli``); the settings, the
        model package and the earlier SR (``--supersedes``) are loaded before, so that their errors come
        before anything runs. ``backend``: one already connected (a Triton server, checked before the run),
        else the settings' spec."""
        self.report = RunReport()
        self.settings = settings
        self.package = package
        self.backend = settings.backend if backend is None else backend
        self.predecessor = predecessor
        super().__init__(argv)

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        logging_policy.install()
        settings, package = self.settings, self.package
        input_path, output_path = Path(context.input_path), Path(context.output_path)

        loader = StudyLoaderOperator(
            self, CountCondition(self, 1), input_folder=input_path, report=self.report, name="study_loader"
        )
        selector = SeriesSelectorOperator(
            self, rules=settings.series_selection_rules, report=self.report, name="series_selector"
        )
        sampling = SamplingPolicy(settings.max_images_per_series)
        deid_settings = settings.deidentification
        deid = DeidentificationOperator(
            self, options=deid_settings.options, secret=deid_settings.secret, policy=sampling,
            accept_burned_in_annotation=deid_settings.accept_burned_in_annotation, report=self.report, name="deidentification",
        )
        preprocess = PreprocessingOperator(self, report=self.report, name="preprocessing")
        infer = ZeroShotInferenceOperator(
            self, package=package, backend=self.backend, batch_size=settings.batch_size, report=self.report, name="inference"
        )
        writer = StructuredReportWriterOperator(
            self, labels=package.labels, algorithm=algorithm_of(package), options=settings.structured_report,
            output_folder=output_path, report=self.report, predecessor=self.predecessor, name="sr_writer",
        )

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, deid, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(deid, preprocess, {("series", "series")})
        self.add_flow(deid, writer, {("reidentification", "reidentification")})
        self.add_flow(preprocess, infer, {("preprocessed", "preprocessed")})
        self.add_flow(infer, writer, {("classifications", "classifications")})
