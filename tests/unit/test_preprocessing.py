"""Grey-level pipeline, colour and geometry against hand-computed values (PS3.3 C.11, C.7.6.16; CLIP preprocessing)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

from operators.imaging.grey_levels import GreyTransform, frame_to_unit, weighted_percentiles, window_linear
from operators.imaging.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    PreprocessedSeries,
    preprocess_series,
    to_model_input,
    to_unit,
)
from operators.imaging.sampling import SamplingPolicy


def _grey_image(pixels: np.ndarray, photometric: str = "MONOCHROME2", **attributes: object) -> Dataset:
    """A native grey image of ``pixels`` (their dtype sets Bits Allocated and Pixel Representation)."""
    pixels = np.asarray(pixels)
    if pixels.dtype.itemsize == 8:  # Python ints or floats: a 16-bit unsigned image
        pixels = pixels.astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _preprocess(datasets: list[Dataset], max_images: int) -> PreprocessedSeries:
    """A series as the app preprocesses it: planned once, then the picked instances decoded as planned."""
    plan = SamplingPolicy(max_images).plan(datasets)
    return preprocess_series("1.2", "1.2.3", plan.pick(datasets), plan)


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


def test_multi_frame_frames_are_images_with_frame_numbers() -> None:
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))  # 10-frame MR
    series = _preprocess([ds], 4)
    assert series.pixel_values.shape == (4, 3, 224, 224)
    assert [ref.frame_number for ref in series.images] == [1, 4, 7, 10]
    assert series.total_images == 10


def test_undecodable_image_is_refused_with_a_reason_and_the_rest_goes_on() -> None:
    good = _grey_image(np.ones((8, 8)), WindowCenter=1, WindowWidth=2, InstanceNumber=1)
    bad = _grey_image(np.ones((8, 8)), InstanceNumber=2)
    bad.PhotometricInterpretation = "YBR_PARTIAL_420"
    corrupt = _grey_image(np.ones((8, 8)), InstanceNumber=3)
    corrupt.file_meta.TransferSyntaxUID = RLELossless
    corrupt.PixelData = encapsulate([b"\x01\x00\x00\x00" + bytes(60)])  # RLE header naming 1 segment at offset 0
    series = _preprocess([good, bad, corrupt], 16)
    assert len(series.images) == 1
    (bad_ref, bad_reason), (corrupt_ref, corrupt_reason) = series.refused
    assert bad_ref.sop_instance_uid == bad.SOPInstanceUID
    assert bad_reason == "photometric interpretation YBR_PARTIAL_420 is not supported"
    assert corrupt_ref.sop_instance_uid == corrupt.SOPInstanceUID
    assert corrupt_reason.startswith("pixel data could not be decoded (")
    del good.PixelData
    empty = _preprocess([good], 16)
    assert empty.pixel_values.shape == (0, 3, 224, 224)
    assert [reason for _, reason in empty.refused] == ["no Pixel Data"]


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def test_enhanced_multi_frame_rescale_and_window_come_from_the_functional_groups_per_frame() -> None:
    # PS3.3 C.7.6.16: shared Pixel Value Transformation (HU = stored - 1024); per-frame Frame VOI LUT.
    stored = np.full((2, 4, 4), 1064, dtype=np.uint16)  # 40 HU everywhere
    ds = _grey_image(stored, WindowCenter=9999, WindowWidth=1)  # top-level window must lose to the groups
    ds.SharedFunctionalGroupsSequence = Sequence(
        [_item(PixelValueTransformationSequence=Sequence([_item(RescaleSlope=1, RescaleIntercept=-1024, RescaleType="HU")]))]
    )
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [
            _item(FrameVOILUTSequence=Sequence([_item(WindowCenter=40, WindowWidth=400)])),  # 40 HU -> mid grey
            _item(FrameVOILUTSequence=Sequence([_item(WindowCenter=-600, WindowWidth=1500)])),  # lung: 40 HU bright
        ]
    )
    frames = ds.pixel_array
    first, second = to_unit(ds, frames[0], 0), to_unit(ds, frames[1], 1)
    assert first == pytest.approx(np.full((4, 4), (40 - 39.5) / 399 + 0.5), abs=1e-6)
    assert second == pytest.approx(np.full((4, 4), (40 + 600.5) / 1499 + 0.5), abs=1e-6)


def test_lookup_table_path_equals_direct_computation_for_signed_16_bit() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(-2048, 2048, size=(64, 48)).astype(np.int16)
    ds = _grey_image(pixels, RescaleSlope=0.5, RescaleIntercept=10.0)
    ds.BitsStored, ds.HighBit = 12, 11
    decoded = ds.pixel_array
    assert decoded.dtype == np.int16
    table = frame_to_unit(ds, decoded, None)  # through the 65,536-entry table
    direct = GreyTransform.of_frame(ds, None).to_unit(decoded.astype(np.int32))  # 32-bit: computed directly
    assert table.dtype == np.float32 and table.shape == (64, 48)
    assert table == pytest.approx(direct, abs=1e-6)
    low, high = np.percentile(decoded * 0.5 + 10.0, [0.5, 99.5])
    assert table == pytest.approx(np.clip((decoded * 0.5 + 10.0 - low) / (high - low), 0, 1), abs=1e-5)


def test_weighted_percentiles_equal_numpy_on_the_expanded_values() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=50)
    weights = rng.integers(0, 20, size=50)
    expanded = np.repeat(values, weights)
    for q in (0.0, 0.5, 37.0, 99.5, 100.0):
        assert weighted_percentiles(values, weights, (q,))[0] == pytest.approx(np.percentile(expanded, q), abs=1e-12)


def test_pixel_padding_value_is_left_out_of_the_percentile_window() -> None:
    pixels = np.zeros((10, 10), dtype=np.uint16)
    pixels[:, 5:] = np.arange(50, dtype=np.uint16).reshape(10, 5) + 100  # 100..149; left half is padding 0
    ds = _grey_image(pixels, Modality="MR", PixelPaddingValue=0)
    unit = to_unit(ds, ds.pixel_array)
    low, high = np.percentile(np.arange(100, 150), [0.5, 99.5])
    assert unit[0, 5] == pytest.approx(0.0) and unit[9, 9] == pytest.approx(1.0)
    assert unit[4, 7] == pytest.approx((pixels[4, 7] - low) / (high - low), abs=1e-6)


def test_ct_without_window_gets_the_soft_tissue_window_and_an_invalid_window_is_replaced() -> None:
    hu = np.array([[-1024, 40], [240, 1000]], dtype=np.int16)
    for attributes in ({}, {"WindowCenter": 40, "WindowWidth": 0}):
        ds = _grey_image(hu, Modality="CT", **attributes)
        unit = to_unit(ds, ds.pixel_array)
        assert unit == pytest.approx(np.array([[0.0, (40 - 39.5) / 399 + 0.5], [1.0, 1.0]]), abs=1e-6)


def test_presentation_lut_shape_inverse_inverts_monochrome2() -> None:
    pixels = np.array([[0, 100], [200, 300]])
    plain = to_unit(_grey_image(pixels, WindowCenter=150.5, WindowWidth=301), pixels)
    inverse = to_unit(_grey_image(pixels, WindowCenter=150.5, WindowWidth=301, PresentationLUTShape="INVERSE"), pixels)
    assert inverse == pytest.approx(1.0 - plain, abs=1e-6)


def test_modality_lut_and_voi_lut_sequences_are_applied() -> None:
    # pydicom-data mlut_18: Modality LUT Sequence; vlut_04: VOI LUT Sequence (PS3.3 C.11.1, C.11.2)
    for name, sequence in (("mlut_18.dcm", "ModalityLUTSequence"), ("vlut_04.dcm", "VOILUTSequence")):
        ds = pydicom.dcmread(get_testdata_file(name))
        assert sequence in ds
        frame = ds.pixel_array
        unit = to_unit(ds, frame)
        if sequence == "VOILUTSequence":
            from pydicom.pixels import apply_voi_lut

            bits = ds.VOILUTSequence[0].LUTDescriptor[2]
            expected = apply_voi_lut(frame, ds, prefer_lut=True) / (2**bits - 1)
            assert unit == pytest.approx(expected.astype(np.float32), abs=1e-6)
        assert 0.0 <= unit.min() < unit.max() <= 1.0


def test_palette_color_goes_through_its_palette() -> None:
    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    rgb = apply_color_lut(ds.pixel_array, ds)
    bits = ds.RedPaletteColorLookupTableDescriptor[2]
    unit = to_unit(ds, ds.pixel_array)
    assert unit.shape == (*ds.pixel_array.shape, 3)
    assert unit == pytest.approx(rgb / (2**bits - 1), abs=1e-6)
    series = _preprocess([ds], 16)
    assert series.pixel_values.shape == (1, 3, 224, 224) and not series.refused


def test_signed_8_bit_and_32_bit_allocated_grey_images() -> None:
    signed8 = np.array([[-128, 0], [64, 127]], dtype=np.int8)
    unit8 = to_unit(ds8 := _grey_image(signed8, WindowCenter=0, WindowWidth=256), ds8.pixel_array)
    assert unit8 == pytest.approx(np.array([[0.0, 0.5 / 255 + 0.5], [64.5 / 255 + 0.5, 1.0]]), abs=1e-6)
    wide = np.array([[0, 70000], [140000, 280000]], dtype=np.uint32)  # 32 bits allocated: computed directly
    ds32 = _grey_image(wide, WindowCenter=140000.5, WindowWidth=280001)
    assert to_unit(ds32, ds32.pixel_array) == pytest.approx(np.array([[0.0, 0.25], [0.5, 1.0]]), abs=1e-5)


def test_enhanced_ct_file_uses_its_shared_functional_groups() -> None:
    # pydicom-data eCT_Supplemental: Enhanced CT, 2 frames; rescale and window only in the shared groups
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    assert "WindowCenter" not in ds and "RescaleIntercept" not in ds
    shared = ds.SharedFunctionalGroupsSequence[0]
    rescale, voi = shared.PixelValueTransformationSequence[0], shared.FrameVOILUTSequence[0]
    for index in (0, 1):
        stored = ds.pixel_array[index]
        hu = stored * float(rescale.RescaleSlope) + float(rescale.RescaleIntercept)
        expected = window_linear(hu, float(voi.WindowCenter), float(voi.WindowWidth))
        assert to_unit(ds, stored, index) == pytest.approx(expected, abs=1e-5)


def test_xa_cine_frames_are_sampled_like_slices_and_each_is_its_own_frame() -> None:
    frames = np.stack([np.full((32, 40), 10 * i, dtype=np.uint16) for i in range(20)])  # frame i holds 10 i
    ds = _grey_image(frames, Modality="XA", WindowCenter=95.5, WindowWidth=191)  # 0 -> black, 190 -> white
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"  # X-Ray Angiographic Image Storage
    series = _preprocess([ds], 4)
    assert [ref.frame_number for ref in series.images] == [1, 7, 14, 20]
    grey = series.pixel_values[:, 0, 112, 112] * CLIP_STD[0] + CLIP_MEAN[0]
    assert grey == pytest.approx([0.0, 60 / 190, 130 / 190, 1.0], abs=1e-5)
