"""A DICOMweb subset (PS3.18): STOW-RS into the listener's ingestion path, WADO-RS and QIDO-RS of the SRs.

- ``POST /dicomweb/studies`` (STOW-RS, 10.5): ``multipart/related; type="application/dicom"``, one
  instance per part. The response (``application/dicom+json``, 10.5.3) lists the stored instances in
  Referenced SOP Sequence and the refused ones in Failed SOP Sequence with their Failure Reason
  (PS3.4 Table B.2-1 codes) and the reason in words in Transaction Status Comment (0008,0418). Status
  200 all stored, 202 some, 409 none. Each arrival's job: ``Link: </api/v1/jobs/ID>; rel="monitor"``.
- ``GET /dicomweb/studies/{study}/instances`` (QIDO-RS, 10.6): the SRs written for the study.
- ``GET /dicomweb/studies/{study}/series/{series}/instances/{instance}`` (WADO-RS, 10.4): one SR,
  ``multipart/related; type="application/dicom"``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydicom import Dataset

from app.listener.instance_uids import names_a_file
from app.web.ingest import Refused, Stored, StoredSR, StowIngest
from app.web.multipart_related import MalformedMultipart, join_parts, media_type, split_parts
from app.web.problems import Problem

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
DICOM, DICOM_JSON, MULTIPART_RELATED = "application/dicom", "application/dicom+json", "multipart/related"


def _instances(body: bytes, content_type: str) -> list[bytes]:
    kind, params = media_type(content_type)
    if kind != MULTIPART_RELATED or params.get("type", "").lower() != DICOM or not params.get("boundary"):
        raise Problem(415, f'STOW-RS takes {MULTIPART_RELATED}; type="{DICOM}"; boundary=…, not {kind or "(no Content-Type)"}')
    try:
        parts = split_parts(body, params["boundary"])
    except MalformedMultipart as exc:
        raise Problem(400, f"malformed multipart body: {exc}") from None
    if not parts:
        raise Problem(400, "the multipart body holds no instance")
    wrong = [n for n, (headers, _) in enumerate(parts, 1) if media_type(headers.get("content-type", DICOM))[0] != DICOM]
    if wrong:
        raise Problem(415, f"part {wrong[0]} is not {DICOM}")
    return [content for _, content in parts]


def _stow_response(outcomes: list[Stored | Refused], base: str) -> JSONResponse:
    response = Dataset()
    stored = [o for o in outcomes if isinstance(o, Stored)]
    refused = [o for o in outcomes if isinstance(o, Refused)]
    if stored:
        response.ReferencedSOPSequence = [_item(o.sop_class, o.sop_instance) for o in stored]
    if refused:
        response.FailedSOPSequence = [_item(o.sop_class, o.sop_instance, FailureReason=o.status, TransactionStatusComment=o.reason)
                                      for o in refused]
    status = 200 if not refused else 202 if stored else 409
    jobs = sorted({o.arrival for o in stored})
    headers = {"Link": ", ".join(f'<{base}/api/v1/jobs/{job}>; rel="monitor"' for job in jobs)} if jobs else {}
    return JSONResponse(response.to_json_dict(), status_code=status, media_type=DICOM_JSON, headers=headers)


def _item(sop_class: str, sop_instance: str, **values: object) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


@router.post("/studies", summary="STOW-RS: store instances (multipart/related; type=\"application/dicom\")",
             responses={200: {"description": "all stored"}, 202: {"description": "some refused (Failed SOP Sequence)"},
                        409: {"description": "none stored"}, 415: {"description": "not multipart/related of application/dicom"}})
async def store_instances(request: Request) -> Response:
    instances = _instances(await request.body(), request.headers.get("content-type", ""))
    ingest: StowIngest = request.app.state.ingest()
    metrics = request.app.state.metrics
    outcomes = [await run_in_threadpool(ingest.store, instance) for instance in instances]
    for outcome in outcomes:
        metrics.stow_instances.labels("stored" if isinstance(outcome, Stored) else "refused").inc()
    return _stow_response(outcomes, str(request.base_url).rstrip("/"))


def _checked(*uids: str) -> None:
    if not all(names_a_file(uid) for uid in uids):
        raise Problem(400, "a UID in the path is malformed (digits and dots, at most 64 characters; PS3.5 9.1)")


def _srs(request: Request, study: str) -> list[StoredSR]:
    return list(request.app.state.ingest().stored_srs(study))


@router.get("/studies/{study}/instances", summary="QIDO-RS: the SRs stored for a study")
def search_instances(request: Request, study: str) -> JSONResponse:
    _checked(study)
    base = str(request.base_url).rstrip("/")
    matches = []
    for sr in _srs(request, study):
        found = Dataset()
        found.SOPClassUID, found.SOPInstanceUID, found.Modality = sr.sop_class, sr.sop_instance, sr.modality
        found.StudyInstanceUID, found.SeriesInstanceUID = sr.study, sr.series
        found.RetrieveURL = f"{base}/dicomweb/studies/{sr.study}/series/{sr.series}/instances/{sr.sop_instance}"
        matches.append(found.to_json_dict())
    return JSONResponse(matches, media_type=DICOM_JSON)


@router.get("/studies/{study}/series/{series}/instances/{instance}", summary="WADO-RS: one stored SR",
            responses={404: {"description": "no such instance"}, 406: {"description": "not acceptable"}})
def retrieve_instance(request: Request, study: str, series: str, instance: str) -> Response:
    _checked(study, series, instance)
    accept = request.headers.get("accept", "*/*")
    if not any(media_type(a)[0] in (MULTIPART_RELATED, "*/*", "multipart/*") for a in accept.split(",")):
        raise Problem(406, f'WADO-RS answers {MULTIPART_RELATED}; type="{DICOM}" only')
    found = next((sr for sr in _srs(request, study) if sr.series == series and sr.sop_instance == instance), None)
    if found is None:
        raise Problem(404, "no such instance")
    body, boundary = join_parts([found.path.read_bytes()], DICOM)
    return Response(body, media_type=f'{MULTIPART_RELATED}; type="{DICOM}"; boundary={boundary}')
