"""The warm model: the package and its backend loaded once per server process, and one image in,
label probabilities out.

A DICOM upload goes the app's own way: the intake inventory's header checks (not DICOM, truncated,
damaged, unsupported; ``operators.intake.inventory.classify_file``), admission (``operators.deid.admission``:
non-image SOP classes, burned-in PHI risk, per ``app/config/app.json``), the sampling policy with one
image (a multi-frame image gives its middle frame, as ``SamplingPolicy.select`` picks it) and the
preprocessing of the app (``operators.imaging.preprocessing``). A file the app would refuse is refused
here with the same reason. PNG and JPEG: ``app.web.pictures``.

The backend comes from ``create_backend`` with the app's ``inference`` settings, so whatever the
registry offers (another backend, a remote inference server) serves here too.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom import dcmread

from app.settings import AppSettings
from app.web.pictures import picture_to_unit
from operators.deid.admission import admit
from operators.imaging.preprocessing import CLIP_MEAN, CLIP_STD, UnsupportedImage, preprocess_series, to_model_input
from operators.imaging.sampling import SamplingPolicy
from operators.inference.backends.base import BACKEND_NAMES, PRECISIONS, BackendSpec, ImageEmbeddingBackend
from operators.inference.backends.registry import BACKENDS, create_backend
from operators.inference.model_package import ModelPackage
from operators.inference.zero_shot import l2_normalise
from operators.intake.inventory import classify_file

logger = logging.getLogger(__name__)

PNG_SIGNATURE, JPEG_SIGNATURE = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
RANDOM_WEIGHTS_WARNING = "the model package has RANDOM weights: these probabilities are NOT findings"
#: The reference of "compare backends": the exact graph.
REFERENCE = BackendSpec("onnxruntime", "fp32")


class InputRefused(ValueError):
    """The upload cannot be classified; the message is the reason, one line without PHI."""


@dataclass(frozen=True)
class ModelInput:
    kind: str  # DICOM, PNG or JPEG
    pixel_values: np.ndarray  # 3 x 224 x 224, CLIP-normalised
    frame: int | None  # 1-based frame of a multi-frame DICOM image
    frames: int
    seconds: float  # checks, decoding and preprocessing

    def as_seen(self) -> np.ndarray:
        """The model's input as an 8-bit RGB picture (224 x 224 x 3): after windowing, resize and crop."""
        unit = self.pixel_values * CLIP_STD[:, None, None] + CLIP_MEAN[:, None, None]
        return (np.clip(unit.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # L
    features: np.ndarray  # D, as the backend returned them
    backend: str
    seconds: float


def read_input(data: bytes, settings: AppSettings) -> ModelInput:
    started = time.perf_counter()
    if data.startswith(PNG_SIGNATURE) or data.startswith(JPEG_SIGNATURE):
        try:
            kind, unit = picture_to_unit(data)
            pixels = to_model_input(unit)
        except UnsupportedImage as exc:
            raise InputRefused(str(exc)) from None
        return ModelInput(kind, pixels, None, 1, time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="biomedclip-web-") as folder:  # the inventory reads files
        path = Path(folder) / "upload.dcm"
        path.write_bytes(data)
        checked = classify_file(path)
        if checked.reason:
            raise InputRefused(checked.reason)
        ds = dcmread(path)
    refusal = admit(ds, accept_burned_in_annotation=settings.deidentification.accept_burned_in_annotation)
    if refusal:
        raise InputRefused(refusal)
    plan = SamplingPolicy(1).plan([ds])
    series = preprocess_series("", "", [ds], plan)
    if series.refused:
        raise InputRefused(series.refused[0][1])
    frame = series.images[0].frame_number
    return ModelInput("DICOM", series.pixel_values[0], frame, series.total_images, time.perf_counter() - started)


class WarmModel:
    """One package, its serving backend, and (loaded on first use) the other backends to compare."""

    def __init__(self, package: ModelPackage, settings: AppSettings, backend: ImageEmbeddingBackend,
                 triton_server: str | None = None) -> None:
        self.package, self.settings, self.backend, self.triton_server = package, settings, backend, triton_server
        self._others: dict[BackendSpec, ImageEmbeddingBackend | str] = {}
        self._others_lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: Path, settings: AppSettings | None = None, triton_server: str | None = None) -> WarmModel:
        """``triton_server``: the image encoder runs on that Triton server, as the app's ``-t`` (the settings'
        backend only where ``inference.triton_fallback`` allows it)."""
        settings = settings or AppSettings.load()
        package = ModelPackage.load(model_dir)
        spec = replace(settings.backend, triton_server=triton_server) if triton_server else settings.backend
        backend = create_backend(spec, package)
        logger.info("Model package %s loaded; backend %s", package.root.name, backend.name)
        return cls(package, settings, backend, triton_server)

    @property
    def random_weights_warning(self) -> str | None:
        return RANDOM_WEIGHTS_WARNING if self.package.is_random_init else None

    def predict(self, model_input: ModelInput, backend: ImageEmbeddingBackend | None = None) -> Prediction:
        backend = backend or self.backend
        started = time.perf_counter()
        features = backend.embed(model_input.pixel_values[None])
        probabilities = self.package.head.probabilities(features)[0]
        return Prediction(probabilities, features[0], backend.name, time.perf_counter() - started)

    def backends_to_compare(self) -> dict[BackendSpec, ImageEmbeddingBackend | str]:
        """Every backend and precision of the registry, loaded once; a string says why one cannot run here."""
        with self._others_lock:
            if not self._others:
                cuda = _cuda_available()
                # the Triton backend needs a server: compared only where the model is served by one
                specs = [BackendSpec(name, precision) for name in BACKEND_NAMES if name != "triton" for precision in PRECISIONS]
                if self.triton_server:
                    specs.append(BackendSpec("triton", triton_server=self.triton_server))
                for spec in specs:
                    if BACKENDS[spec.backend].needs_gpu(spec) and not cuda:  # the registry's rule: not run on the CPU
                        self._others[spec] = "needs a CUDA GPU"
                        continue
                    try:
                        self._others[spec] = create_backend(spec, self.package)
                    except Exception as exc:  # unavailable here: no GPU, no runtime, no artefact for that precision
                        why = " ".join(str(exc).split()).replace(str(self.package.root), self.package.root.name)  # no server paths
                        self._others[spec] = f"{type(exc).__name__}: {why}"
            return dict(self._others)

    def compare(self, model_input: ModelInput) -> list[tuple[BackendSpec, Prediction | str, float | None]]:
        """(spec, prediction or why not, cosine of its image embedding with the fp32 reference's); those that ran first."""
        backends = self.backends_to_compare()
        reference = backends.get(REFERENCE)
        if isinstance(reference, str) or reference is None:
            raise RuntimeError(f"the fp32 reference backend cannot run: {reference}")
        expected = l2_normalise(self.predict(model_input, reference).features)
        rows: list[tuple[BackendSpec, Prediction | str, float | None]] = []
        for spec, backend in backends.items():
            if isinstance(backend, str):
                rows.append((spec, backend, None))
                continue
            prediction = self.predict(model_input, backend)
            rows.append((spec, prediction, float(l2_normalise(prediction.features) @ expected)))
        return sorted(rows, key=lambda row: isinstance(row[1], str))


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
