"""A PHI-injected DICOM corpus: real files with every PS3.15 Table E.1-1 attribute set to a unique marker.

Starting from real images (pydicom's test files, pydicom-data, deid-data), each file gets
- every single-tag attribute of Table E.1-1 (2024b and the later additions) that pydicom's dictionary
  knows, at the top level, with a unique marker value of its VR (person names: a marker in every
  component; dates, times, date-times: unique valid values; UIDs: unique valid UIDs),
- items in the sequences of the table (Other Patient IDs, Request Attributes, Referenced/Source Image…)
  holding marker-valued attributes, nested three deep through sequences the table does not list,
- Referenced/Source Image Sequences pointing at the other files of the corpus (referential integrity),
- private attributes (a vendor block with text, name and sequence markers; a Table E.3.10-1 safe
  attribute beside an unsafe one), an overlay plane and a curve with markers, a marker in the File Meta
  Information and in the preamble.

``PhiCorpus.markers`` are the strings that must not survive de-identification with the default
options, anywhere: dataset values, file bytes, logs, reports. The original Study/Series/SOP Instance
and Frame of Reference UIDs count as markers too.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.uid import CTImageStorage

from operators.deid.profile import TABLE_PATH, parse_tag

DEID_DATA = Path(__import__("deid_data").__file__).parent / "data"
#: Real images of the corpus: CT and MR (pydicom), enhanced multi-frame MR (pydicom), DX with fake PHI
#: (deid-data), CR (pydicom-data).
SOURCES = (
    get_testdata_file("CT_small.dcm"),
    get_testdata_file("MR_small.dcm"),
    get_testdata_file("emri_small.dcm"),
    str(DEID_DATA / "animals" / "cat.dcm"),
    get_testdata_file("RG3_UNCR.dcm"),
)
#: Group 0000 (command) and 0002 (file meta) attributes of the table cannot sit in a stored dataset.
NOT_IN_DATASET_GROUPS = (0x0000, 0x0002)
SAFE_PRIVATE_CREATOR, SAFE_PRIVATE_GROUP, SAFE_PRIVATE_ELEMENT = "SIEMENS MR HEADER", 0x0019, 0x0C  # B Value
SAFE_PRIVATE_VALUE = "1000"
TEXT_VRS = ("AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT", "UR")
TEXT_MARKER = re.compile(r"(PHI\d{5})([A-Z]{0,3})")
NUMERIC_TOKEN = re.compile(r"(?<![0-9.])[0-9](?:[0-9.]*[0-9])?(?![0-9])")


@dataclass
class PhiCorpus:
    files: list[Path]
    #: strings that must not appear anywhere after de-identification
    markers: set[str] = field(default_factory=set)
    #: (tag, value) of binary-valued top-level attributes whose value must not survive
    binary_markers: set[tuple[int, object]] = field(default_factory=set)
    #: the markers of date (DA, and DT date part) values, which the modified-dates option shifts
    date_markers: set[str] = field(default_factory=set)

    def found_in(self, text: str) -> set[str]:
        """The markers that occur in ``text``. Candidates are found by shape (fast on large files): a text
        marker, possibly followed by more letters, or a maximal run of digits and dots, which is a marker only
        if it equals one (a numeric marker inside a longer number, e.g. a replaced UID, is no leak)."""
        found = set()
        for match in TEXT_MARKER.finditer(text):
            found.update(match.group(1) + match.group(2)[:k] for k in range(1, len(match.group(2)) + 1))
        found.update(NUMERIC_TOKEN.findall(text))
        return found & self.markers

    def found_in_bytes(self, data: bytes) -> set[str]:
        return self.found_in(data.decode("latin-1"))

    def found_in_dataset(self, ds: Dataset) -> list[str]:
        """'keyword: marker' for every element (at any depth, file meta included) holding a marker."""
        found: list[str] = []

        def check(_: Dataset, elem: pydicom.DataElement) -> None:
            if elem.VR != "SQ":
                value = elem.value.decode("latin-1") if isinstance(elem.value, bytes) else str(elem.value)
                found.extend(f"{elem.keyword or elem.tag}: {m}" for m in sorted(self.found_in(value)))
                if isinstance(elem.value, (int, float)) and (int(elem.tag), elem.value) in self.binary_markers:
                    found.append(f"{elem.keyword or elem.tag}: {elem.value}")

        ds.walk(check)
        if hasattr(ds, "file_meta"):
            ds.file_meta.walk(check)
        return found


class _Markers:
    """Unique, VR-valid marker values, registered in the corpus as they are made."""

    def __init__(self, corpus: PhiCorpus) -> None:
        self.corpus = corpus
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def text(self) -> str:
        marker = f"PHI{self._next():05d}X"
        self.corpus.markers.add(marker)
        return marker

    def person_name(self) -> str:
        components = [f"PHI{self._next():05d}{part}" for part in ("FAM", "GIV", "MID", "PRE", "SUF")]
        self.corpus.markers.update(components)
        return "^".join(components)

    def date(self) -> str:
        value = (datetime.date(1931, 1, 1) + datetime.timedelta(days=3 * self._next())).strftime("%Y%m%d")
        self.corpus.markers.add(value)
        self.corpus.date_markers.add(value)
        return value

    def time(self) -> str:
        n = self._next()
        value = f"{n % 24:02d}{n % 60:02d}{(7 * n) % 60:02d}.{700000 + n:06d}"
        self.corpus.markers.add(value)
        return value

    def uid(self) -> str:
        value = f"1.2.826.0.1.3680043.10.543.{900000 + self._next()}"
        self.corpus.markers.add(value)
        return value

    def value(self, vr: str) -> object:
        if vr in TEXT_VRS:
            return self.text()
        if vr == "PN":
            return self.person_name()
        if vr == "DA":
            return self.date()
        if vr == "TM":
            return self.time()
        if vr == "DT":
            value = self.date() + self.time()
            self.corpus.markers.add(value)
            return value
        if vr == "UI":
            return self.uid()
        if vr == "AS":
            return "077Y"
        if vr in ("DS", "IS"):
            value = f"{770000 + self._next()}"
            self.corpus.markers.add(value)
            return value
        if vr in ("OB", "OW", "UN"):
            return self.text().encode().ljust(10, b" ")
        if vr in ("FL", "FD"):
            return 31337.0 + self._next()
        if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
            return 20000 + self._next()
        raise ValueError(vr)


def table_tags() -> list[tuple[int, str]]:
    """(tag, VR) of every single-tag Table E.1-1 row whose VR pydicom knows, outside groups 0000/0002."""
    table = json.loads(TABLE_PATH.read_text())
    result = []
    for row in table["attributes"] + table["attributes_after_2024b"]:
        tag = parse_tag(row["tag"])
        if tag is None or tag >> 16 in NOT_IN_DATASET_GROUPS:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        result.append((tag, vr.split(" or ")[0]))
    return result


def _item(markers: _Markers, keywords: tuple[str, ...]) -> Dataset:
    item = Dataset()
    for keyword in keywords:
        setattr(item, keyword, markers.value(dictionary_VR(keyword)))
    return item


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def _inject(ds: Dataset, markers: _Markers, tags: list[tuple[int, str]], neighbour: Dataset) -> None:
    identity = ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyDate", "InstitutionName")
    for tag, vr in tags:
        keyword = keyword_for_tag(tag)
        if keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            continue  # the real ones stay (they are markers too); references below must resolve
        if vr == "SQ":
            ds.add_new(tag, vr, [_item(markers, ("PersonName", "InstitutionName", "StudyDate", "ReferencedSOPInstanceUID"))])
            continue
        value = markers.value(vr)
        ds.add_new(tag, vr, value)
        if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            markers.corpus.binary_markers.add((tag, value))

    other_ids = _item(markers, ("PatientID", "IssuerOfPatientID", "TypeOfPatientID"))
    ds.OtherPatientIDsSequence = [other_ids, _item(markers, ("PatientID", "IssuerOfPatientID"))]
    ds.RequestAttributesSequence = [
        _item(markers, ("RequestedProcedureID", "AccessionNumber", "StudyInstanceUID", "ScheduledProcedureStepID",
                        "RequestedProcedureDescription", "ReasonForTheRequestedProcedure"))
    ]
    # Referenced/Source Image Sequences (X/Z/U*): kept with UIDs replaced, so they must resolve
    sop_class = str(neighbour.get("SOPClassUID", CTImageStorage))
    ds.ReferencedImageSequence = [_reference(sop_class, str(neighbour.SOPInstanceUID))]
    source = _reference(sop_class, str(neighbour.SOPInstanceUID))
    source.PurposeOfReferenceCodeSequence = [_item(markers, identity)]
    ds.SourceImageSequence = [source]
    # three levels through sequences outside the table, ending in table attributes
    deepest = _item(markers, identity)
    deepest.SourceImageSequence = [_reference(sop_class, str(neighbour.SOPInstanceUID))]
    middle = Dataset()
    middle.PurposeOfReferenceCodeSequence = [deepest]
    top = Dataset()
    top.DerivationCodeSequence = [middle]
    ds.DerivationCodeSequence = [top]

    # private attributes: a vendor block with markers (text, name, nested sequence), a safe one beside an unsafe one
    block = ds.private_block(0x0009, "PHI VENDOR PRIVATE", create=True)
    block.add_new(0x01, "LO", markers.text())
    block.add_new(0x02, "PN", markers.person_name())
    block.add_new(0x03, "SQ", [_item(markers, identity)])
    safe = ds.private_block(SAFE_PRIVATE_GROUP, SAFE_PRIVATE_CREATOR, create=True)
    safe.add_new(SAFE_PRIVATE_ELEMENT, "IS", SAFE_PRIVATE_VALUE)
    safe.add_new(0x08, "LO", markers.text())  # not in Table E.3.10-1
    for item in ds.OtherPatientIDsSequence:  # private attributes nested in items too
        item.private_block(0x0011, "PHI NESTED PRIVATE", create=True).add_new(0x01, "LO", markers.text())

    # an overlay plane and a curve (E.1-1: 60xx,3000 / 60xx,4000 / 50xx,xxxx X)
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000022, "LO", markers.text())  # Overlay Description, goes with its overlay
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.add_new(0x60004000, "LT", markers.text())
    ds.add_new(0x50000022, "LO", markers.text())

    ds.file_meta.SourceApplicationEntityTitle = markers.text()
    ds.preamble = markers.text().encode().ljust(128, b"\x00")


def make_phi_corpus(out: Path, sources: tuple[str, ...] = SOURCES) -> PhiCorpus:
    """Write one PHI-injected copy of each source into ``out``; return the files and the markers."""
    out.mkdir(parents=True, exist_ok=True)
    corpus = PhiCorpus(files=[])
    markers = _Markers(corpus)
    tags = table_tags()
    originals = [pydicom.dcmread(source) for source in sources]
    for i, ds in enumerate(originals):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if keyword in ds:
                corpus.markers.add(str(ds[keyword].value))
        _inject(ds, markers, tags, originals[(i + 1) % len(originals)])
        path = out / f"phi_{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        corpus.files.append(path)
    return corpus


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dciodvfy (dicom3tools) reports for a file."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace")
    return [line for line in result.stderr.splitlines() if line.startswith("Error")]
