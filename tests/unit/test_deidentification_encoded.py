"""The encoded walk (``operators.deid.encoded``) writes the general path's bytes, or leaves the file to it.

The general path (pydicom reads the file, ``Deidentifier.deidentify``, ``operators.deid.writer``) is the
reference: for every file and profile the walk takes, its output must be the same file byte for byte, with the
same replaced UIDs; for every other file it must answer None (never a different file, never an exception).
Scenarios: the PHI-injected corpus (every Table E.1-1 attribute, nested sequences, private blocks, an overlay,
a curve, a VR UN), real files of each encoding, sequences and items of undefined length, a non-ASCII character
set, odd DS/IS/UI values, overlays with and without Overlay Data, and every truncation of a heavy header.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag

from operators.deid.deidentifier import TEXT_VRS, Deidentifier
from operators.deid.encoded import EncodedFile, deidentify_encoded, deidentify_file
from operators.deid.profile import DeidentificationProfile, ProfileOptions
from operators.deid.raw import plain_numbers, plain_text
from operators.deid.unvalidated import element
from operators.deid.writer import write_file
from scripts.make_sample_study import make_sample_study
from tests.support.phi_corpus import PhiCorpus, make_phi_corpus

SECRET = b"encoded walk test secret"
#: the profiles the walk takes (their actions need nothing but the element), and one it leaves to the general path
ELEMENT_WISE = {"basic": ProfileOptions(), "retain_uids": ProfileOptions(retain_uids=True)}
INSTANCE_BOUND = ProfileOptions(retain_longitudinal_modified_dates=True, clean_descriptors=True)
#: explicit VR little endian, native and encapsulated (JPEG 2000, RLE) Pixel Data
WALKED = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "JPEG2000.dcm", "emri_small_RLE.dcm", "RG3_UNCR.dcm")
#: implicit VR, big endian, deflated, and an explicit transfer syntax holding an implicit VR data set
NOT_WALKED = ("MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "SC_rgb_jpeg.dcm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> PhiCorpus:
    return make_phi_corpus(tmp_path_factory.mktemp("phi"))


def _general(deidentifier: Deidentifier, data: bytes) -> bytes:
    out = io.BytesIO()
    write_file(out, deidentifier.deidentify(pydicom.dcmread(io.BytesIO(data))))
    return out.getvalue()


def _walked(deidentifier: Deidentifier, data: bytes) -> bytes | None:
    encoded = EncodedFile.parse(data)
    result = deidentify_encoded(deidentifier, encoded) if encoded is not None else None
    return result.tobytes() if result is not None else None


def _assert_same_as_general(data: bytes, options: ProfileOptions = ELEMENT_WISE["basic"], name: str = "") -> None:
    profile = DeidentificationProfile.basic(options)
    walk, general = Deidentifier(profile, SECRET), Deidentifier(profile, SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test files' own invalid values, read by the general path
        walked = _walked(walk, data)
        assert walked is not None, f"{name}: left to the general path"
        assert walked == _general(general, data), name
    assert walk.reidentification.uids == general.reidentification.uids, name


@pytest.mark.parametrize("options", ELEMENT_WISE.values(), ids=ELEMENT_WISE.keys())
def test_the_phi_corpus_and_real_files_come_out_as_the_general_path_writes_them(corpus: PhiCorpus, options: ProfileOptions) -> None:
    for path in [*corpus.files, *(Path(get_testdata_file(name)) for name in WALKED)]:
        _assert_same_as_general(path.read_bytes(), options, path.name)


def test_the_sample_study_comes_out_as_the_general_path_writes_it(tmp_path: Path) -> None:
    for path in make_sample_study(tmp_path):
        _assert_same_as_general(path.read_bytes(), name=path.name)


@pytest.mark.parametrize("name", NOT_WALKED)
def test_other_encodings_are_left_to_the_general_path_which_deidentify_file_takes(name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    deidentifier, general = Deidentifier(DeidentificationProfile.basic(), SECRET), Deidentifier(DeidentificationProfile.basic(), SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _walked(deidentifier, data) is None
        assert deidentify_file(deidentifier, data, EncodedFile.parse(data)).tobytes() == _general(general, data)


def test_a_profile_that_needs_the_whole_instance_is_left_to_the_general_path(corpus: PhiCorpus) -> None:
    profile = DeidentificationProfile.basic(INSTANCE_BOUND)
    data = corpus.files[0].read_bytes()
    assert _walked(Deidentifier(profile, SECRET), data) is None
    assert deidentify_file(Deidentifier(profile, SECRET), data, EncodedFile.parse(data)).tobytes() == _general(Deidentifier(profile, SECRET), data)


def _file(ds: Dataset) -> bytes:
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _image() -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.file_meta
    return ds


def test_sequences_and_items_of_undefined_length_keep_their_length_form() -> None:
    ds = _image()
    ds.ReferencedImageSequence = [Dataset(), Dataset()]
    for item in ds.ReferencedImageSequence:
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
        item.is_undefined_length_sequence_item = True
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.OtherPatientIDsSequence = [Dataset()]  # removed (X) whatever its form
    ds.OtherPatientIDsSequence[0].PatientID = "PHI-ID"
    ds.AnatomicRegionSequence = [Dataset()]  # outside the table: kept, de-identified inside, an empty item
    ds["AnatomicRegionSequence"].is_undefined_length = True
    data = _file(ds)
    _assert_same_as_general(data)
    output = pydicom.dcmread(io.BytesIO(_walked(Deidentifier(DeidentificationProfile.basic(), SECRET), data) or b""))
    assert output["ReferencedImageSequence"].is_undefined_length
    assert "OtherPatientIDsSequence" not in output


def test_a_latin_1_data_set_with_accented_names_and_an_odd_value_in_every_text_vr() -> None:
    ds = _image()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Renée"
    ds.InstitutionName = " leading space"  # D of text: not plain, read by pydicom
    ds.StudyDescription = "A\\B"  # two values
    ds.OperatorsName = ["Å^B", "C^D"]
    ds.PatientComments = "trailing spaces   "
    ds.PixelSpacing = [" 0.5", "0.5 "]  # kept DS, spaces pydicom strips
    ds.SliceThickness = "1.0"
    ds.InstanceNumber = "+7"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    _assert_same_as_general(_file(ds))


def test_overlay_groups_go_with_their_overlay_data_and_otherwise_keep_all_but_the_comments() -> None:
    ds = _image()
    ds.add_new(0x60000010, "US", 4)  # an overlay plane with Overlay Data: the whole group goes
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.add_new(0x60020010, "US", 4)  # a group without Overlay Data: kept but its Overlay Comments
    ds.add_new(0x60024000, "LT", "PHI comment")
    ds.add_new(0x50000005, "US", 1)  # a curve: removed
    data = _file(ds)
    _assert_same_as_general(data)
    output = pydicom.dcmread(io.BytesIO(_walked(Deidentifier(DeidentificationProfile.basic(), SECRET), data) or b""))
    assert (0x60000010 not in output, 0x60020010 in output, 0x60024000 not in output, 0x50000005 not in output) == (True,) * 4


def test_every_truncation_of_a_heavy_header_is_refused_or_written_as_the_general_path_writes_it(corpus: PhiCorpus) -> None:
    """A cut at an element boundary is a shorter valid file (the general path's bytes); any other cut is refused
    (None), never a different file and never an exception."""
    data = min((path.read_bytes() for path in corpus.files), key=len)
    pixel_data = data.rfind(b"\xe0\x7f\x10\x00")
    deidentifier, general = Deidentifier(DeidentificationProfile.basic(), SECRET), Deidentifier(DeidentificationProfile.basic(), SECRET)
    walked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cut in range(132, pixel_data, 7):
            result = _walked(deidentifier, data[:cut])
            if result is not None:
                walked += 1
                assert result == _general(general, data[:cut]), cut
    assert walked > 0


def test_elements_out_of_order_are_left_to_the_general_path() -> None:
    data = bytearray(_file(_image()))
    modality = data.find(b"\x08\x00\x60\x00CS")  # (0008,0060) Modality, moved after (0008,0070) Manufacturer
    manufacturer = data.find(b"\x08\x00\x70\x00LO")
    first = bytes(data[modality:manufacturer])
    second_end = manufacturer + 8 + int.from_bytes(data[manufacturer + 6:manufacturer + 8], "little")
    data[modality:second_end] = data[manufacturer:second_end] + first
    assert _walked(Deidentifier(DeidentificationProfile.basic(), SECRET), bytes(data)) is None


def test_the_header_the_admission_gate_reads_is_the_files() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    header, original = EncodedFile.parse(data).header(), pydicom.dcmread(io.BytesIO(data))  # type: ignore[union-attr]
    assert (header.SOPClassUID, header.Modality, "PixelData" in header) == (original.SOPClassUID, original.Modality, True)
    assert "PatientName" not in header


#: values of every kind a text element meets: plain, padded, empty, multi-valued, with spaces inside or leading
TEXTS = (b"", b"ABC", b"ABC ", b"A B  C ", b" lead", b"A\\B", b"Doe^John^^^", b"~!@#$%^&*()_+{}|:<>?`-=[];',./",
         b"trail\x00", b"x" * 63 + b" ")


@pytest.mark.parametrize("vr", sorted(TEXT_VRS))
def test_plain_text_is_what_pydicom_reads_or_none(vr: str) -> None:
    ds = Dataset()
    for value in TEXTS:
        raw = RawDataElement(BaseTag(0x00091001), vr, len(value), value, 0, False, True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # values too long for their VR, on purpose
            read = pydicom.dataelem.convert_raw_data_element(raw, encoding=["iso8859"], ds=ds).value
        plain = plain_text(value)
        assert plain is None or plain == str(read), (vr, value)
    assert plain_text(b"ABC ") == "ABC"


@pytest.mark.parametrize("vr", ["DS", "IS"])
def test_plain_numbers_are_what_pydicom_writes_back_or_none(vr: str) -> None:
    for value in (b"0.5 ", b"1\\2 ", b"-1.25", b"1e5 ", b"+5", b"0", b"1.", b" 1", b"1  ", b"1 \\2", b"", b"1.0\\2.0"):
        ds = Dataset()
        ds._dict[BaseTag(0x00280030)] = RawDataElement(BaseTag(0x00280030), vr, len(value), value, 0, False, True)
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_data_element(out, element(ds, 0x00280030), "iso8859")
        numbers = plain_numbers(value)
        assert numbers is None or numbers == out.getvalue()[8:], (vr, value)
    assert plain_numbers(b"-1.25") == b"-1.25 "
