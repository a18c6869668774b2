"""The JSON API, ``/api/v1``: classify one image, and the state of a DICOMweb study job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from pydantic import BaseModel, Field

from app.web.classifier import InputRefused, read_input
from app.web.problems import Problem

router = APIRouter(prefix="/api/v1", tags=["api"])


class LabelProbability(BaseModel):
    label: str
    code: str = Field(description="code value, coding scheme and meaning (SNOMED CT or 99BMCLIP)")
    probability: float


class Timings(BaseModel):
    read_seconds: float = Field(description="checks, decoding and preprocessing")
    inference_seconds: float = Field(description="image embedding and the zero-shot head")
    total_seconds: float


class Classification(BaseModel):
    input: str = Field(description="DICOM, PNG or JPEG")
    frame: int | None = Field(description="the frame classified, for a multi-frame DICOM image (1-based)")
    frames: int
    top_label: str
    probabilities: list[LabelProbability]
    backend: str
    model: str
    timings: Timings
    warning: str | None = Field(description="set when the model package has random weights")


class Job(BaseModel):
    id: str
    state: str = Field(description="receiving, complete, processed, failed or discarded (docs/listener.md)")
    instances: int
    attempts: int
    srs: list[str] = Field(description="SOP Instance UIDs of the SRs written (retrieve them by WADO-RS)")
    reason: str | None


@router.post("/classify", response_model=Classification, summary="Classify one DICOM, PNG or JPEG image",
             responses={413: {"description": "over the size limit"}, 422: {"description": "refused input, with the reason"},
                        503: {"description": "the model is still loading"}})
def classify(request: Request, file: Annotated[UploadFile, File(description="one DICOM (Part 10), PNG or JPEG file")]) -> Classification:
    state = request.app.state
    model, metrics = state.model(), state.metrics
    data = file.file.read()
    try:
        model_input = read_input(data, model.settings)
    except InputRefused as exc:
        metrics.classifications.labels("refused").inc()
        raise Problem(422, f"{_upload_name(file)}: refused: {exc}") from None
    prediction = model.predict(model_input)
    metrics.classifications.labels("classified").inc()
    metrics.inference.observe(prediction.seconds)
    labels = model.package.labels.labels
    top = int(prediction.probabilities.argmax())
    return Classification(
        input=model_input.kind, frame=model_input.frame, frames=model_input.frames, top_label=labels[top].name,
        probabilities=[LabelProbability(label=label.name, code=f"({label.code.value}, {label.code.scheme_designator}, "
                                        f"\"{label.code.meaning}\")", probability=float(p))
                       for label, p in zip(labels, prediction.probabilities)],
        backend=prediction.backend, model=model.package.identity,
        timings=Timings(read_seconds=model_input.seconds, inference_seconds=prediction.seconds,
                        total_seconds=model_input.seconds + prediction.seconds),
        warning=model.random_weights_warning,
    )


def _upload_name(file: UploadFile) -> str:
    """The form field, not the client's file name: a file name may hold a patient's name."""
    return f"upload ({file.size if file.size is not None else '?'} bytes)"


@router.get("/jobs/{job_id}", response_model=Job, summary="A DICOMweb study job (one STOW-RS arrival)",
            responses={404: {"description": "no such job"}})
def job(request: Request, job_id: str) -> Job:
    arrival = request.app.state.ingest().arrival(job_id)
    if arrival is None:
        raise Problem(404, "no such job")
    failed = next((r.get("reason") for r in arrival.records if r["event"] == "job_failed"), None)
    return Job(id=arrival.id, state=arrival.state, instances=arrival.instances, attempts=arrival.job_attempts,
               srs=[sr.removesuffix(".dcm") for sr in arrival.srs], reason=failed)
