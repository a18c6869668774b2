"""Grey-level pipeline and geometry against hand-computed values (PS3.3 C.11, CLIP preprocessing)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from operators.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    SamplingPolicy,
    preprocess_series,
    to_model_input,
    to_unit,
    window_linear,
)


def _grey_image(pixels: np.ndarray, photometric: str = "MONOCHROME2", **attributes: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_linear_window_matches_ps3_3_formula() -> None:
    # c=40, w=400: y = (x - 39.5) / 399 + 0.5, clipped to [0, 1]; y = 0 at and below x = -160
    values = np.array([-200.0, -160.0, -159.5, 39.5, 40.0, 239.0, 500.0])
    expected = np.array([0.0, 0.0, 0.5 / 399, 0.5, 0.5 + 0.5 / 399, 1.0, 1.0])
    assert window_linear(values, 40, 400) == pytest.approx(expected, abs=1e-6)


def test_rescale_then_window() -> None:
    # stored 1000 with slope 2, intercept -1024 -> 976 HU; window centred there -> mid grey
    ds = _grey_image(np.array([[1000, 0], [2000, 1000]]), RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=976.5, WindowWidth=101)
    unit = to_unit(ds, ds.pixel_array)
    assert unit[0, 0] == pytest.approx(0.5)
    assert unit[0, 1] == 0.0  # -1024 HU, far below the window
    assert unit[1, 0] == 1.0  # 2976 HU, far above


def test_monochrome1_is_inverted_after_windowing() -> None:
    pixels = np.array([[0, 100], [200, 300]])
    mono2 = to_unit(_grey_image(pixels, WindowCenter=150.5, WindowWidth=301), pixels)
    mono1 = to_unit(_grey_image(pixels, "MONOCHROME1", WindowCenter=150.5, WindowWidth=301), pixels)
    assert mono2 == pytest.approx(np.array([[0.0, 1 / 3], [2 / 3, 1.0]]), abs=1e-6)
    assert mono1 == pytest.approx(1.0 - mono2, abs=1e-6)


def test_without_window_the_percentile_window_is_used() -> None:
    pixels = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    unit = to_unit(_grey_image(pixels), pixels)
    low, high = np.percentile(pixels, [0.5, 99.5])
    assert unit.min() == 0.0 and unit.max() == 1.0
    assert unit[12, 20] == pytest.approx((500 - low) / (high - low), abs=1e-6)


def test_model_input_is_clip_normalised_3_channel_224_centre_crop() -> None:
    grey = np.full((100, 300), 0.5, dtype=np.float32)
    grey[:, :100] = 0.0  # left third black: the centre crop of the 224 x 672 resize drops it
    x = to_model_input(grey)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert x[:, 112, 112] == pytest.approx((0.5 - CLIP_MEAN) / CLIP_STD, abs=1e-5)
    # beyond the bicubic kernel's reach of the black edge (2 source px = ~5 output px) all is mid grey
    assert x[:, :, 8:] == pytest.approx(np.broadcast_to(((0.5 - CLIP_MEAN) / CLIP_STD)[:, None, None], (3, 224, 216)), abs=1e-5)
    assert x[0, :, 0].mean() < x[0, :, 8].mean()  # the edge of the dropped black third


def test_sampling_policy_evenly_spaced_with_first_and_last() -> None:
    policy = SamplingPolicy(16)
    chosen = policy.select(200)
    assert len(chosen) == 16 and chosen[0] == 0 and chosen[-1] == 199
    assert max(np.diff(chosen)) - min(np.diff(chosen)) <= 1
    assert policy.select(7) == list(range(7))
    assert policy.describe(16, 200) == "16 of 200 images, evenly spaced (max_images_per_series=16)"


def test_multi_frame_frames_are_images_with_frame_numbers() -> None:
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))  # 10-frame MR
    series = preprocess_series("1.2", "1.2.3", [ds], SamplingPolicy(4))
    assert series.pixel_values.shape == (4, 3, 224, 224)
    assert [ref.frame_number for ref in series.images] == [1, 4, 7, 10]
    assert series.total_images == 10


def test_undecodable_image_is_refused_with_a_reason_and_the_rest_goes_on() -> None:
    good = _grey_image(np.ones((8, 8)), WindowCenter=1, WindowWidth=2, InstanceNumber=1)
    bad = _grey_image(np.ones((8, 8)), InstanceNumber=2)
    bad.PhotometricInterpretation = "PALETTE COLOR"
    series = preprocess_series("1.2", "1.2.3", [good, bad], SamplingPolicy(16))
    assert len(series.images) == 1
    (ref, reason), = series.refused
    assert ref.sop_instance_uid == bad.SOPInstanceUID
    assert reason == "photometric interpretation PALETTE COLOR is not supported"
    del good.PixelData
    empty = preprocess_series("1.2", "1.2.3", [good], SamplingPolicy(16))
    assert empty.pixel_values.shape == (0, 3, 224, 224)
    assert [reason for _, reason in empty.refused] == ["no Pixel Data"]
