"""The DICOM Structured Report of a study's zero-shot results (highdicom ``Comprehensive3DSR``).

Template: TID 1500 Measurement Report (PS3.16), the template for an algorithm's measurements and
qualitative evaluations of images: it has per-group tracking, source image references and algorithm
identification (TID 4019). TID 2000 (Basic Diagnostic Imaging Report) has no place for an
algorithm's identity or numeric results; the CAD templates (TID 4000 mammography, TID 4100 chest)
are tied to one modality and finding type.

Content: a device observer context (TID 1004), procedure reported "Imaging procedure", and per series
one TID 1501 Measurements and Qualitative Evaluations group holding, in this order

- the tracking identifier ("Series N (MOD) zero-shot classification") and UID,
- the finding type: the label set's task concept (e.g. 99BMCLIP BODYREGION),
- TID 4019 algorithm identification, once: "BiomedCLIP", the model package version, and parameters
  (backend, sampling, weights, label set, the confidence thresholds),
- a reference to every source image (and frame) the model used,
- one TID 300 numeric measurement per label: concept = the label's code, value = the series
  probability rounded to 3 decimals, unit ``1`` (UCUM, no units), method = 99BMCLIP ZSPROB,
- the margin of the top label over the runner-up (99BMCLIP ZSMARGIN, 3 decimals, unit ``1``),
- a qualitative evaluation: task concept = the top label's code when its probability and its margin
  reach the thresholds (``structured_report`` in app.json), else 99BMCLIP NOCONF "No confident finding".

The private scheme 99BMCLIP is declared in the Coding Scheme Identification Sequence (``codes.py``).
The SR is re-identified into the ORIGINAL study (Study Instance UID, patient module, accession)
through the in-memory ``ReidentificationMap``, in a new series whose UIDs are under the site's root
(``uids.py``); Verification Flag UNVERIFIED and Preliminary Flag PRELIMINARY, since no person has
reviewed it. An SR can supersede an earlier one of the same study (``predecessor.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian

from operators.atomic import write_atomically
from operators.deid.deidentifier import ReidentificationMap
from operators.inference.classification import SeriesClassification
from operators.inference.zero_shot import LOCAL_SCHEME, ZERO_SHOT_PROBABILITY, Label, LabelSet
from operators.sr.codes import NO_CONFIDENT_FINDING, PROBABILITY_MARGIN, coding_scheme_identification
from operators.sr.predecessor import PredecessorSR
from operators.sr.uids import UIDRoot

MANUFACTURER = "BiomedCLIP MAP (research use only)"
#: TID 4019 Algorithm Name of every measurement group (``python -m app.smoke_test`` looks for it).
ALGORITHM_NAME = "BiomedCLIP"
#: Named, so that one UID under the site's root identifies this application as the observing device
#: across all its reports.
DEVICE_OBSERVER_NAME = "BiomedCLIP zero-shot MONAI Deploy application"
SR_SERIES_NUMBER = 9901
#: The SR's transfer syntax, in its file and when the listener sends it (docs/conformance.md).
SR_TRANSFER_SYNTAX = ExplicitVRLittleEndian
#: Specific Character Set (0008,0005) of an SR with text outside the default repertoire (ISO-IR 6),
#: i.e. a name copied from the original study: UTF-8 can hold what any source character set can.
UTF8 = "ISO_IR 192"
#: VRs whose values may hold characters of the Specific Character Set (PS3.5 §6.1.2.3).
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
NO_UNITS = codes.UCUM.NoUnits
#: Probabilities and margins are written to 3 decimals: the model's calibration supports no more, and
#: 14 digits hide the value from a reader.
DECIMALS = 3


@dataclass(frozen=True)
class ReportOptions:
    """The ``structured_report`` settings: the UID root, and when the top label counts as a confident
    finding (its probability and its margin over the runner-up both at least these)."""

    uid_root: UIDRoot = UIDRoot()
    min_top_probability: float = 0.5
    min_margin: float = 0.1

    def parameters(self) -> tuple[str, ...]:
        """The thresholds as TID 4019 Algorithm Parameters, so that a reader of the SR knows them."""
        return (f"min_top_probability={self.min_top_probability}", f"min_margin={self.min_margin}")


@dataclass(frozen=True)
class Algorithm:
    """What TID 4019 records: the algorithm's name, version/identity and parameters."""

    name: str
    version: str
    parameters: tuple[str, ...]
    random_weights: bool

    def identification(self, backend: str, sampling: str, options: ReportOptions) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=self.name,
            version=self.version,
            parameters=[f"backend={backend}", f"sampling={sampling}", *self.parameters, *options.parameters()],
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


def _probability(name: hd.sr.CodedConcept | Code, value: float, method: Code | None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=round(float(value), DECIMALS), unit=NO_UNITS, method=method)


def _measurement_group(
    series: SeriesClassification, labels: LabelSet, algorithm: Algorithm, reid: ReidentificationMap, options: ReportOptions
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    first, second = np.sort(series.aggregate)[::-1][:2]
    margin = float(first - second)
    confident = first >= options.min_top_probability and margin >= options.min_margin
    measurements = [
        _probability(label.code, probability, ZERO_SHOT_PROBABILITY)
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
    finding = labels.labels[series.top_index].code if confident else NO_CONFIDENT_FINDING
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=options.uid_root.new(), identifier=f"Series {number} ({series.modality}) zero-shot classification"
        ),
        finding_type=labels.task,
        algorithm_id=algorithm.identification(series.backend, series.sampling, options),
        measurements=[*measurements, _probability(PROBABILITY_MARGIN, margin, None)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=labels.task, value=finding)],
        source_images=sources,
    )


def build_study_sr(
    series: Sequence[SeriesClassification], labels: LabelSet, algorithm: Algorithm, reid: ReidentificationMap,
    options: ReportOptions, predecessor: PredecessorSR | None = None,
) -> hd.sr.Comprehensive3DSR:
    """One Comprehensive 3D SR for the series of one (de-identified) study, filed into the original study.
    With ``predecessor`` (an earlier SR of the same original study; ignored for another study), the SR
    supersedes it: same series, next instance number, Predecessor Documents Sequence (``predecessor.py``)."""
    if not series:
        raise ValueError("an SR needs at least one classified series")
    if len({s.study_instance_uid for s in series}) != 1:
        raise ValueError("all series of one SR must belong to one study")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=options.uid_root.named(DEVICE_OBSERVER_NAME), name="BiomedCLIP zero-shot", manufacturer_name=MANUFACTURER,
            model_name=algorithm.name,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=[_measurement_group(s, labels, algorithm, reid, options) for s in series],
    )
    evidence = [
        _original_reference(reid, s, ref.sop_class_uid, ref.sop_instance_uid)
        for s in series
        for ref in {r.sop_instance_uid: r for r in s.images}.values()
    ]
    description = "BiomedCLIP zero-shot, UNVERIFIED"
    if algorithm.random_weights:
        description = "RANDOM WEIGHTS test output, NOT CLINICAL"
    if predecessor is not None and predecessor.study_instance_uid != evidence[0].StudyInstanceUID:
        predecessor = None
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=predecessor.series_instance_uid if predecessor else options.uid_root.new(),
        series_number=predecessor.series_number if predecessor else SR_SERIES_NUMBER,
        sop_instance_uid=options.uid_root.new(),
        instance_number=predecessor.instance_number + 1 if predecessor else 1,
        previous_versions=[predecessor.reference()] if predecessor else None,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=description,
        transfer_syntax_uid=SR_TRANSFER_SYNTAX,
    )
    sr.CodingSchemeIdentificationSequence = [coding_scheme_identification()]
    if not all(str(element.value).isascii() for element in sr.iterall() if element.VR in TEXT_VRS):
        sr.SpecificCharacterSet = UTF8  # else written without it, a name like "Müller" would be undeclared bytes, "山田" "??"
    return sr


def write_sr(sr: Dataset, output_folder: Path) -> Path:
    """Write the SR atomically as ``<SOP Instance UID>.dcm`` (a new UID: no identifier of the input)."""
    return write_atomically(Path(output_folder) / f"{sr.SOPInstanceUID}.dcm", lambda f: sr.save_as(f, enforce_file_format=True))


@cache
def warm_up() -> None:
    """Build (and discard) one SR of a synthetic study, so that highdicom loads the standard's module
    tables (~0.6 s, once per process) at start-up, beside the model, not inside the first study. Once
    per process: a job forked from a warmed process (the listener's, ``app/warm_start.py``) skips it."""
    from operators.imaging.preprocessing import ImageRef

    options = ReportOptions()
    code = Code("WARMUP", LOCAL_SCHEME, "warm-up")
    labels = LabelSet(code, (Label("a", code, ("a",)), Label("b", code, ("b",))))
    algorithm = Algorithm(ALGORITHM_NAME, "warm-up", (), random_weights=True)
    study, series, image = options.uid_root.new(), options.uid_root.new(), options.uid_root.new()
    reid = ReidentificationMap(uids={study: study, series: series, image: image}, studies={study: Dataset()})
    reid.studies[study].StudyInstanceUID = study
    probabilities = np.full((1, len(labels.labels)), 1.0 / len(labels.labels))
    classification = SeriesClassification(
        study, series, "OT", 1, [ImageRef("1.2.840.10008.5.1.4.1.1.7", image)], 1, "warm-up",
        probabilities, probabilities[0], "warm-up",
    )
    build_study_sr([classification], labels, algorithm, reid, options)
