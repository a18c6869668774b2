"""Every file of pydicom's test files, pydicom-data and deid-data through the app's input path:
classified into the expected 3×224×224 inputs, or refused / skipped with the asserted reason.
Twins of one image in other transfer syntaxes decode to the same pixels and the same inputs, and
docs/input-coverage.md holds the table these outcomes generate."""

from __future__ import annotations

import copy
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import HTJ2K, UID, HTJ2KLossless

from operators.imaging.preprocessing import decode_frame, model_input, preprocess_series
from operators.imaging.sampling import SamplingPolicy
from operators.intake.image_header import number_of_frames
from operators.intake.inventory import classify_file
from tests.support.input_coverage import CLASSIFIED, REFUSED, SKIPPED, Outcome, all_outcomes, documented_table, table

NOT_DICOM = "not a DICOM file (no 'DICM' prefix after a 128-byte preamble; PS3.10 7.1)"
WITHOUT_PART10 = "without the Part 10 header (128-byte preamble, 'DICM', File Meta Information; PS3.10 7.1)"
DICOMDIR = "non-image SOP class: Media Storage Directory Storage"
NO_STUDY_SERIES = "missing required attribute(s): StudyInstanceUID, SeriesInstanceUID"
NO_UIDS = "missing required attribute(s): SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID"
UNDECODABLE = "pixel data could not be decoded (RuntimeError: Unable to decode as exceptions were raised by all available plugins: "

#: every file that is not classified, with its status and reason ("…" ends a reason's start).
NOT_CLASSIFIED: dict[str, tuple[str, str]] = {
    "pydicom/ExplVR_BigEndNoMeta.dcm": (SKIPPED, f"non-image SOP class: RT Ion Plan Storage, {WITHOUT_PART10}"),
    "pydicom/ExplVR_LitEndNoMeta.dcm": (SKIPPED, f"non-image SOP class: RT Ion Plan Storage, {WITHOUT_PART10}"),
    "pydicom/JPEG-lossy.dcm": (REFUSED, UNDECODABLE + "pylibjpeg: libjpeg error code '-1038' returned from Decode(): A misplaced marker…"),
    "pydicom/JPEG2000-embedded-sequence-delimiter.dcm": (REFUSED, UNDECODABLE + "pylibjpeg: Error decoding the J2K data: failed to read the header…"),
    "pydicom/JPEGLSNearLossless_08.dcm": (REFUSED, NO_STUDY_SERIES),
    "pydicom/JPEGLSNearLossless_16.dcm": (REFUSED, NO_STUDY_SERIES),
    "pydicom/MR_small_padded.dcm": (
        REFUSED,
        "Pixel Data holds 8,320 bytes, more than the 8,192 that Rows × Columns × Frames × Samples per Pixel × Bits Allocated declare",
    ),
    "pydicom/MR_truncated.dcm": (REFUSED, "truncated file: it ends inside PixelData (8,130 of 8,192 bytes present)"),
    "pydicom/README.txt": (SKIPPED, NOT_DICOM),
    "pydicom/SC_rgb_jls_lossy_line.dcm": (REFUSED, NO_STUDY_SERIES),
    "pydicom/SC_rgb_jls_lossy_sample.dcm": (REFUSED, NO_STUDY_SERIES),
    "pydicom/UN_sequence.dcm": (REFUSED, "no Pixel Data in an instance of CT Image Storage"),
    "pydicom/badVR.dcm": (REFUSED, "malformed NumberOfFrames: not an integer"),
    "pydicom/crayons.icc": (SKIPPED, NOT_DICOM),
    "pydicom/dicomdirtests/DICOMDIR": (SKIPPED, DICOMDIR),
    "pydicom/dicomdirtests/DICOMDIR-bigEnd": (SKIPPED, DICOMDIR),
    "pydicom/dicomdirtests/DICOMDIR-empty.dcm": (SKIPPED, DICOMDIR),
    "pydicom/dicomdirtests/DICOMDIR-implicit": (SKIPPED, DICOMDIR),
    "pydicom/dicomdirtests/DICOMDIR-nooffset": (SKIPPED, DICOMDIR),
    "pydicom/dicomdirtests/DICOMDIR-nopatient": (SKIPPED, DICOMDIR),
    "pydicom/dicomdirtests/DICOMDIR-reordered": (SKIPPED, DICOMDIR),
    "pydicom/dicomdirtests/README.txt": (SKIPPED, NOT_DICOM),
    "pydicom/dicomdirtests/TINY_ALPHA/DICOMDIR": (SKIPPED, DICOMDIR),
    "pydicom/dicomdirtests/TINY_ALPHA/README": (SKIPPED, NOT_DICOM),
    "pydicom/empty_charset_LEI.dcm": (SKIPPED, "non-image SOP class: (no SOP Class UID)"),
    "pydicom/meta_missing_tsyntax.dcm": (REFUSED, NO_UIDS),
    "pydicom/nested_priv_SQ.dcm": (REFUSED, NO_UIDS),
    "pydicom/no_meta.dcm": (SKIPPED, NOT_DICOM),
    "pydicom/no_meta_group_length.dcm": (REFUSED, "no Pixel Data in an instance of RT Image Storage"),
    "pydicom/priv_SQ.dcm": (REFUSED, "no Pixel Data in an instance of MR Image Storage"),
    "pydicom/reportsi.dcm": (SKIPPED, "non-image SOP class: Basic Text SR Storage"),
    "pydicom/reportsi_with_empty_number_tags.dcm": (SKIPPED, "non-image SOP class: Basic Text SR Storage"),
    "pydicom/rtplan.dcm": (SKIPPED, "non-image SOP class: RT Plan Storage"),
    "pydicom/rtplan.dump": (SKIPPED, NOT_DICOM),
    "pydicom/rtplan_truncated.dcm": (REFUSED, "truncated file: it ends inside BeamSequence (711 of 976 bytes present)"),
    "pydicom/rtstruct.dcm": (SKIPPED, f"non-image SOP class: RT Structure Set Storage, {WITHOUT_PART10}"),
    "pydicom/rtstruct.dump": (SKIPPED, NOT_DICOM),
    "pydicom/test-SR.dcm": (SKIPPED, "non-image SOP class: Comprehensive SR Storage"),
    "pydicom/test1.json": (SKIPPED, NOT_DICOM),
    "pydicom/test_PN.json": (SKIPPED, NOT_DICOM),
    "pydicom/waveform_ecg.dcm": (SKIPPED, "non-image SOP class: 12-lead ECG Waveform Storage"),
    "pydicom/zipMR.gz": (SKIPPED, NOT_DICOM),
    "pydicom-data/OT-PAL-8-face.dcm": (REFUSED, f"DICOM data set {WITHOUT_PART10}: its transfer syntax is not declared"),
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": (
        REFUSED,
        "truncated or corrupt file: the data set cannot be read past byte 2,352 of 40,316",
    ),
    "deid-data/README.md": (SKIPPED, NOT_DICOM),
}
#: pydicom's DICOMDIR test tree: CT instances whose Pixel Data was stripped to keep the package small
STRIPPED_CT = ("pydicom/dicomdirtests/TINY_ALPHA/", (REFUSED, "no Pixel Data in an instance of CT Image Storage"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    return all_outcomes(tmp_path_factory.mktemp("unzipped"))


def _expected(key: str) -> tuple[str, str] | None:
    if key in NOT_CLASSIFIED:
        return NOT_CLASSIFIED[key]
    return STRIPPED_CT[1] if key.startswith(STRIPPED_CT[0]) and "/IM0000" in key else None


def _reason_matches(expected: str, reason: str) -> bool:
    return reason.startswith(expected[:-1]) if expected.endswith("…") else reason == expected


def test_every_file_is_classified_or_refused_with_the_expected_reason(outcomes: list[Outcome]) -> None:
    wrong = []
    for o in outcomes:
        key = f"{o.file.corpus}/{o.file.name}"
        expected = _expected(key)
        if expected is None:
            # an image: every sampled frame (at most 16, evenly spaced) becomes a clean 3x224x224 input
            if (o.status, o.images, o.problems) != (CLASSIFIED, min(o.frames, 16), ()):
                wrong.append(f"{key}: {o.status} {o.images} of {o.frames} frames {o.problems} {o.reason}")
        elif o.status != expected[0] or not _reason_matches(expected[1], o.reason):
            wrong.append(f"{key}: {o.status} {o.reason!r}, expected {expected}")
    assert not wrong, "\n".join(wrong)
    keys = {f"{o.file.corpus}/{o.file.name}" for o in outcomes}
    assert set(NOT_CLASSIFIED) <= keys, "a file named here is no longer in the packages"
    assert sum(o.status == CLASSIFIED for o in outcomes) >= 160
    assert {"deid-data/ultrasounds/RGB_CINE.zip:RGB_CINE.dcm", "deid-data/ultrasounds/GREYSCALE_CINE.zip:GREYSCALE_CINE.dcm"} <= keys


def test_docs_table_is_generated_from_these_outcomes(outcomes: list[Outcome]) -> None:
    assert documented_table() == table(outcomes), "docs/input-coverage.md is stale: run python -m tests.support.input_coverage"


# (reference, twin): the same image in another transfer syntax, byte order or planar configuration
LOSSLESS_TWINS = [
    *(("MR_small.dcm", f"MR_small_{s}.dcm") for s in ("RLE", "bigendian", "expb", "implicit", "jp2klossless", "jpeg_ls_lossless")),
    *(("emri_small.dcm", f"emri_small_{s}.dcm") for s in ("RLE", "big_endian", "jpeg_2k_lossless", "jpeg_ls_lossless")),
    *((f"{s}_UNCR.dcm", f"{s}_J2KR.dcm") for s in ("693", "MR2", "RG1", "RG3", "US1")),
    # *_UNCI is the JPEG 2000 lossy image as its makers decompressed it
    *((f"{s}_UNCI.dcm", f"{s}_J2KI.dcm") for s in ("693", "MR2", "RG1", "RG3", "US1")),
    *((f"SC_rgb{s}.dcm", f"SC_rgb_expb{s}.dcm") for s in ("", "_2frame", "_16bit", "_16bit_2frame", "_32bit", "_32bit_2frame")),
    *((f"SC_rgb{s}.dcm", f"SC_rgb_rle{s}.dcm") for s in ("", "_2frame", "_16bit", "_16bit_2frame", "_32bit", "_32bit_2frame")),
    ("SC_rgb.dcm", "SC_rgb_jpeg_gdcm.dcm"),  # JPEG lossless
    ("SC_rgb_gdcm2k_uncompressed.dcm", "SC_rgb_gdcm_KY.dcm"),
    ("SC_rgb_small_odd.dcm", "SC_rgb_small_odd_big_endian.dcm"),
    ("JPEG2000_UNC.dcm", "JPEG2000.dcm"),
    ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"),  # PALETTE COLOR, big endian LUT Data
    ("OBXXXX1A.dcm", "OBXXXX1A_rle.dcm"),
    ("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm"),
    ("OBXXXX1A_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"),
    ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"),  # segmented palette
    ("color-px.dcm", "color-pl.dcm"),  # planar configuration 0 and 1
    ("SC_ybr_full_uncompressed.dcm", "SC_rgb_dcmtk_ebcyn2_dcmd.dcm"),  # YBR_FULL native vs RGB
    ("SC_rgb_dcmtk_ebcyn2_dcmd.dcm", "SC_rgb_dcmtk_+eb+cy+n2.dcm"),
    ("SC_rgb_dcmtk_ebcys2_dcmd.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm"),
    ("SC_rgb_dcmtk_ebcys4_dcmd.dcm", "SC_rgb_dcmtk_+eb+cy+s4.dcm"),
    ("liver.dcm", "liver_expb.dcm"),  # 1 bit allocated
    ("rtdose.dcm", "rtdose_rle.dcm"),  # 32 bits allocated
    ("rtdose.dcm", "rtdose_expb.dcm"),
]
# JPEG baseline (lossy) files and their decompression by dcmtk: JPEG decoders differ in IDCT rounding
LOSSY_TWINS = [
    ("SC_rgb_dcmtk_ebcr_dcmd.dcm", "SC_rgb_dcmtk_+eb+cr.dcm"),
    ("SC_rgb_dcmtk_ebcyn1_dcmd.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm"),
    ("SC_rgb_dcmtk_ebcynp_dcmd.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"),  # YBR_FULL_422
    ("SC_rgb_jpeg_dcmd.dcm", "SC_rgb_jpeg.dcm"),
    ("SC_rgb_jpeg_dcmd.dcm", "SC_jpeg_no_color_transform.dcm"),
]


def _frames(ds: pydicom.Dataset) -> list[int | None]:
    count = number_of_frames(ds)
    return [None] if count == 1 else list(range(count))


@pytest.mark.parametrize(("reference", "twin"), LOSSLESS_TWINS + LOSSY_TWINS, ids=lambda name: name)
def test_twins_decode_to_the_same_pixels_and_model_inputs(reference: str, twin: str) -> None:
    a, b = pydicom.dcmread(get_testdata_file(reference)), pydicom.dcmread(get_testdata_file(twin))
    encoding = ("PhotometricInterpretation", "PlanarConfiguration")
    assert a.file_meta.TransferSyntaxUID != b.file_meta.TransferSyntaxUID or any(a.get(k) != b.get(k) for k in encoding)
    assert _frames(a) == _frames(b)
    tolerance = 0 if (reference, twin) in LOSSLESS_TWINS else 2  # grey levels
    for index in _frames(a):
        pixels_a, pixels_b = decode_frame(a, index), decode_frame(b, index)
        assert pixels_a.shape == pixels_b.shape
        assert np.abs(pixels_a.astype(np.int64) - pixels_b.astype(np.int64)).max() <= tolerance
        difference = np.abs(model_input(a, index) - model_input(b, index))
        assert difference.max() <= (1e-6 if tolerance == 0 else 0.1)


@pytest.mark.parametrize(("syntax", "options", "tolerance"), [(HTJ2KLossless, {}, 0), (HTJ2K, {"reversible": False}, 4)])
def test_htj2k_twin_made_by_openjph_is_read_by_the_installed_decoder(
    tmp_path: Path, syntax: UID, options: dict[str, bool], tolerance: int
) -> None:
    # no HTJ2K file ships with the three packages: encode one (imagecodecs' OpenJPH) from a 512 x 512 CT
    reference = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    twin = copy.deepcopy(reference)
    twin.PixelData = encapsulate([imagecodecs.htj2k_encode(reference.pixel_array, **options)])
    twin["PixelData"].VR, twin["PixelData"].is_undefined_length = "OB", True
    twin.file_meta.TransferSyntaxUID = syntax
    twin.save_as(tmp_path / "htj2k.dcm", enforce_file_format=True)

    assert classify_file(tmp_path / "htj2k.dcm").reason is None
    read = pydicom.dcmread(tmp_path / "htj2k.dcm")
    series = preprocess_series("1.2", "1.2.3", [read], SamplingPolicy(16).plan([read]))
    assert len(series.images) == 1 and not series.refused
    assert np.abs(decode_frame(read, None).astype(np.int64) - reference.pixel_array).max() <= tolerance
    assert np.abs(series.pixel_values[0] - model_input(reference, None)).max() <= (1e-6 if tolerance == 0 else 0.05)
