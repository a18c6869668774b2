"""The DICOM Structured Report of a study's zero-shot results (highdicom ``Comprehensive3DSR``).

Content follows TID 1500 (Measurement Report): a device observer context (TID 1004), procedure
reported "Imaging procedure", and per series one TID 1501 Measurements and Qualitative Evaluations
group holding

- the finding type: the label set's task concept (e.g. 99BMCLIP BODYREGION),
- one TID 300 numeric measurement per label: concept = the label's code, value = the series
  probability, unit ``1`` (UCUM, no units), method = 99BMCLIP ZSPROB "Zero-shot softmax probability",
- a qualitative evaluation: task concept = the top label's code,
- TID 4019 algorithm identification: "BiomedCLIP", the model package version and weights identity,
  and parameters (backend, weights, label set, sampling),
- a reference to every source image (and frame) the model used.

The SR is re-identified into the ORIGINAL study (Study Instance UID, patient module, accession)
through the in-memory ``ReidentificationMap``, in a new series; Verification Flag UNVERIFIED and
Preliminary Flag PRELIMINARY, since no person has reviewed it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from operators.atomic import write_atomically
from operators.deid.deidentifier import ReidentificationMap
from operators.inference.classification import SeriesClassification
from operators.inference.zero_shot import ZERO_SHOT_PROBABILITY, LabelSet

MANUFACTURER = "BiomedCLIP MAP (research use only)"
#: A fixed UID identifies this application as the observing device across all its reports.
DEVICE_OBSERVER_UID = generate_uid(entropy_srcs=["BiomedCLIP zero-shot MONAI Deploy application"])
SR_SERIES_NUMBER = 9901
NO_UNITS = codes.UCUM.NoUnits


@dataclass(frozen=True)
class Algorithm:
    """What TID 4019 records: the algorithm's name, version/identity and parameters."""

    name: str
    version: str
    parameters: tuple[str, ...]
    random_weights: bool

    def identification(self, backend: str, sampling: str) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=self.name,
            version=self.version,
            parameters=[f"backend={backend}", f"sampling={sampling}", *self.parameters],
        )


#: Type 2 Patient and General Study attributes (PS3.3 C.7.1.1, C.7.2.1): the SR must have them, empty
#: where the source lacked them.
TYPE2_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


def _original_reference(reid: ReidentificationMap, series: SeriesClassification, sop_class: str, sop_uid: str) -> Dataset:
    """A minimal dataset standing for an original source instance (for the evidence sequence)."""
    ds = copy.deepcopy(reid.original_study(series.study_instance_uid))
    for keyword in TYPE2_STUDY_KEYWORDS:
        if keyword not in ds:
            setattr(ds, keyword, None)
    ds.SeriesInstanceUID = reid.original_uid(series.series_instance_uid)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = reid.original_uid(sop_uid)
    ds.Modality = series.modality
    return ds


def _measurement_group(
    series: SeriesClassification, labels: LabelSet, algorithm: Algorithm, reid: ReidentificationMap
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm_id = algorithm.identification(series.backend, series.sampling)
    measurements = [
        hd.sr.Measurement(
            name=label.code,
            value=float(probability),
            unit=NO_UNITS,
            method=ZERO_SHOT_PROBABILITY,
            algorithm_id=algorithm_id,
        )
        for label, probability in zip(labels.labels, series.aggregate)
    ]
    sources = [
        hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=ref.sop_class_uid,
            referenced_sop_instance_uid=reid.original_uid(ref.sop_instance_uid),
            referenced_frame_numbers=[ref.frame_number] if ref.frame_number else None,
        )
        for ref in series.images
    ]
    number = series.series_number if series.series_number is not None else "?"
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"Series {number} ({series.modality}) zero-shot classification"
        ),
        finding_type=labels.task,
        algorithm_id=algorithm_id,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=labels.task, value=labels.labels[series.top_index].code)
        ],
        source_images=sources,
    )


def build_study_sr(
    series: Sequence[SeriesClassification], labels: LabelSet, algorithm: Algorithm, reid: ReidentificationMap
) -> hd.sr.Comprehensive3DSR:
    """One Comprehensive 3D SR for the series of one (de-identified) study, filed into the original study."""
    if not series:
        raise ValueError("an SR needs at least one classified series")
    if len({s.study_instance_uid for s in series}) != 1:
        raise ValueError("all series of one SR must belong to one study")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_OBSERVER_UID, name="BiomedCLIP zero-shot", manufacturer_name=MANUFACTURER, model_name=algorithm.name
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=[_measurement_group(s, labels, algorithm, reid) for s in series],
    )
    evidence = [
        _original_reference(reid, s, ref.sop_class_uid, ref.sop_instance_uid)
        for s in series
        for ref in {r.sop_instance_uid: r for r in s.images}.values()
    ]
    description = "BiomedCLIP zero-shot, UNVERIFIED"
    if algorithm.random_weights:
        description = "RANDOM WEIGHTS test output, NOT CLINICAL"
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=description,
    )


def write_sr(sr: Dataset, output_folder: Path) -> Path:
    """Write the SR atomically as ``<SOP Instance UID>.dcm`` (a new UID: no identifier of the input)."""
    return write_atomically(Path(output_folder) / f"{sr.SOPInstanceUID}.dcm", lambda f: sr.save_as(f, enforce_file_format=True))


def warm_up(labels: LabelSet, algorithm: Algorithm) -> None:
    """Build (and discard) one SR of a synthetic study, so that highdicom loads the standard's module
    tables (~0.6 s, once per process) at start-up, beside the model, not inside the first study."""
    import numpy as np

    from operators.imaging.preprocessing import ImageRef

    study, series, image = generate_uid(), generate_uid(), generate_uid()
    reid = ReidentificationMap(uids={study: study, series: series, image: image}, studies={study: Dataset()})
    reid.studies[study].StudyInstanceUID = study
    probabilities = np.full((1, len(labels.labels)), 1.0 / len(labels.labels))
    classification = SeriesClassification(
        study, series, "OT", 1, [ImageRef("1.2.840.10008.5.1.4.1.1.7", image)], 1, "warm-up",
        probabilities, probabilities[0], "warm-up",
    )
    build_study_sr([classification], labels, algorithm, reid)
