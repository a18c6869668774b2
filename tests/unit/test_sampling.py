"""The sampling plan: made once per series (before de-identification), deterministic, holding positions
only; preprocessing decodes exactly the images it names."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from operators.deid.deidentifier import DeidentificationProfile, Deidentifier, deidentify_series
from operators.imaging.preprocessing import CLIP_MEAN, CLIP_STD, preprocess_series
from operators.imaging.sampling import ImagePosition, SamplingPlan, SamplingPolicy

#: Window Center/Width mapping stored value v to grey v / 400 (PS3.3 C.11.2.1.2.1): each preprocessed
#: image tells which frame it came from.
WINDOW_CENTER, WINDOW_WIDTH = 200.5, 401


def _image(instance_number: int, values: list[int], uid: str | None = None) -> Dataset:
    """A native 16-bit grey instance with one 8 x 8 frame per value in ``values`` (one value: single-frame)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid or generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.PatientID, ds.Modality, ds.InstanceNumber = "PATIENT-0001", "CT", instance_number
    ds.Rows = ds.Columns = 8
    if len(values) > 1:
        ds.NumberOfFrames = len(values)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.WindowCenter, ds.WindowWidth = WINDOW_CENTER, WINDOW_WIDTH
    ds.PixelData = np.stack([np.full((8, 8), v, np.uint16) for v in values]).tobytes()
    return ds


def _shuffled(datasets: list[Dataset], seed: int = 0) -> list[Dataset]:
    shuffled = list(datasets)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def _planned(plan: SamplingPlan, series: list[Dataset]) -> list[tuple[int, int | None]]:
    """The planned images as (Instance Number, frame index): what they are, whatever the list order."""
    return [(int(series[image.instance].InstanceNumber), image.frame) for image in plan.images]


def _grey_levels(pixel_values: np.ndarray) -> list[int]:
    """The stored value each preprocessed image came from (inverse of the window and the CLIP normalisation)."""
    grey = pixel_values[:, 0, 4, 4] * CLIP_STD[0] + CLIP_MEAN[0]
    return [int(round(g * 400)) for g in grey]


def test_long_single_frame_series_is_planned_evenly_by_instance_number_whatever_the_list_order() -> None:
    series = _shuffled([_image(n, [n]) for n in range(1, 41)])
    plan = SamplingPolicy(5).plan(series)
    assert _planned(plan, series) == [(1, None), (11, None), (21, None), (30, None), (40, None)]
    assert plan.total_images == 40
    assert plan.description == "5 of 40 images, evenly spaced (max_images_per_series=5)"
    assert plan == SamplingPolicy(5).plan(series), "the same series gives the same plan"
    reordered = _shuffled(series, seed=1)
    assert _planned(SamplingPolicy(5).plan(reordered), reordered) == _planned(plan, series)
    assert plan.pick(series) == [ds for ds in series if ds.InstanceNumber in (1, 11, 21, 30, 40)], "in list order"


def test_short_series_is_planned_whole() -> None:
    series = [_image(n, [n]) for n in (3, 1, 2)]
    plan = SamplingPolicy(16).plan(series)
    assert plan.images == (ImagePosition(1), ImagePosition(2), ImagePosition(0))
    assert plan.instances == (0, 1, 2) and plan.pick(series) == series
    assert (plan.total_images, plan.description) == (3, "all 3 images")


def test_multi_frame_series_plans_frames_across_instances_and_picks_only_their_instances() -> None:
    # four 10-frame instances given in reverse instance order: 40 images, frame f of instance n holds 10 (n - 1) + f
    series = [_image(n, [10 * (n - 1) + f for f in range(10)]) for n in (4, 3, 2, 1)]
    plan = SamplingPolicy(3).plan(series)
    assert _planned(plan, series) == [(1, 0), (3, 0), (4, 9)]  # images 0, 20 and 39 of 40
    assert plan.instances == (0, 1, 3) and [int(ds.InstanceNumber) for ds in plan.pick(series)] == [4, 3, 1]
    assert plan.picked_images() == [(2, 0), (1, 0), (0, 9)]
    assert (plan.total_images, plan.description) == (40, "3 of 40 images, evenly spaced (max_images_per_series=3)")


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ([_image(n, [n]) for n in range(1, 8)], [(4, None)]),  # 7 slices: the middle one
        ([_image(1, list(range(10)))], [(1, 5)]),  # 10 frames: frame index 10 // 2
    ],
)
def test_max_one_image_takes_the_middle_one(series: list[Dataset], expected: list[tuple[int, int | None]]) -> None:
    plan = SamplingPolicy(1).plan(series)
    assert _planned(plan, series) == expected
    assert plan.description.startswith("1 of ")


def test_an_instance_with_a_header_problem_is_one_image_whatever_frames_it_declares() -> None:
    broken = _image(2, list(range(5)))
    del broken.PixelData
    plan = SamplingPolicy(16).plan([_image(1, [0]), broken])
    assert plan.images == (ImagePosition(0), ImagePosition(1)) and plan.total_images == 2


def test_the_plan_holds_positions_only() -> None:
    series = [_image(n, [n, n]) for n in range(1, 30)]
    plan = SamplingPolicy(4).plan(series)
    values = [value for image in plan.images for value in dataclasses.astuple(image)]
    assert all(isinstance(value, int) or value is None for value in values)
    text = repr(plan)
    assert not any(identifier in text for ds in series for identifier in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.PatientID))


def test_preprocessing_decodes_exactly_the_planned_images_of_the_deidentified_copies() -> None:
    # instances 2 and 3 share an Instance Number: the order between them is that of their ORIGINAL UIDs,
    # decided by the plan; the de-identified UIDs (keyed hashes) may sort the other way
    series = [_image(1, [10, 11, 12]), _image(2, [20, 21, 22], uid="1.2.9"), _image(2, [30, 31, 32], uid="1.2.10"),
              _image(4, [40, 41, 42])]
    plan = SamplingPolicy(4).plan(series)
    # images 0, 4, 7, 11 of 12; "1.2.10" sorts before "1.2.9"
    assert [(image.instance, image.frame) for image in plan.images] == [(0, 0), (2, 1), (1, 1), (3, 2)]
    deidentifier = Deidentifier(DeidentificationProfile.basic(), b"secret")
    deidentified = deidentify_series(deidentifier, series, plan)
    assert len(deidentified.datasets) == 4 and deidentified.plan is plan
    first, second = (str(deidentified.datasets[i].SOPInstanceUID) for i in (2, 1))
    assert first > second, "with this secret, sorting the de-identified copies would swap the tied instances"

    pre = preprocess_series(deidentified.study_instance_uid, deidentified.series_instance_uid, deidentified.datasets, plan)
    assert _grey_levels(pre.pixel_values) == [10, 31, 21, 42], "the planned images, in plan order"
    assert [ref.frame_number for ref in pre.images] == [1, 2, 2, 3]
    originals = [deidentifier.reidentification.original_uid(ref.sop_instance_uid) for ref in pre.images]
    assert originals == [series[0].SOPInstanceUID, "1.2.10", "1.2.9", series[3].SOPInstanceUID]
    assert (pre.total_images, pre.sampling) == (12, plan.description)


def test_preprocessing_refuses_datasets_that_are_not_the_picked_instances() -> None:
    series = [_image(n, [n]) for n in range(1, 11)]
    plan = SamplingPolicy(3).plan(series)
    with pytest.raises(ValueError, match="10 instance"):
        preprocess_series("1.2", "1.2.3", series, plan)


def test_sampling_policy_evenly_spaced_with_first_and_last() -> None:
    policy = SamplingPolicy(16)
    chosen = policy.select(200)
    assert len(chosen) == 16 and chosen[0] == 0 and chosen[-1] == 199
    assert max(np.diff(chosen)) - min(np.diff(chosen)) <= 1
    assert policy.select(7) == list(range(7))
    assert policy.describe(16, 200) == "16 of 200 images, evenly spaced (max_images_per_series=16)"
    with pytest.raises(ValueError):
        SamplingPolicy(0)
