"""The earlier SR a new one supersedes (``python app --supersedes EARLIER_SR``).

When more of a study arrives after its SR was sent (the listener's partial-study policy,
``docs/listener.md``), the whole study is run again and its new SR replaces the earlier one: it goes
into the earlier SR's series (same Series Instance UID and Series Number, the next Instance Number)
with a new SOP Instance UID, and its Predecessor Documents Sequence (0040,A360) references the earlier
SR by Study, Series and SOP Instance UID (PS3.3 C.17.2 SR Document General Module, with the
Hierarchical SOP Instance Reference Macro, Table C.17-3), so a PACS shows one result and its history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

#: The attributes read from the earlier SR: what the new SR references and continues.
_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "Modality")


class PredecessorError(ValueError):
    """The file given as the earlier SR cannot be one; the message names the file and why (no UID)."""


@dataclass(frozen=True)
class PredecessorSR:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: int
    instance_number: int

    @classmethod
    def read(cls, path: Path) -> PredecessorSR:
        """The earlier SR's references, read from its file; ``PredecessorError`` if it is not an SR."""
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=list(_KEYWORDS))
        except OSError as exc:
            raise PredecessorError(f"{path}: cannot read the earlier SR ({exc.strerror})") from None
        except (InvalidDicomError, ValueError, TypeError, AttributeError):
            raise PredecessorError(f"{path}: the earlier SR is not a DICOM file") from None
        missing = [k for k in _KEYWORDS if not ds.get(k)]
        if missing:
            raise PredecessorError(f"{path}: the earlier SR lacks {', '.join(missing)}")
        if ds.Modality != "SR":
            raise PredecessorError(f"{path}: the earlier SR is not a Structured Report (Modality {ds.Modality!r})")
        return cls(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                   int(ds.SeriesNumber), int(ds.InstanceNumber))

    def reference(self) -> Dataset:
        """What highdicom's ``previous_versions`` takes to build the Predecessor Documents Sequence."""
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = self.sop_class_uid, self.sop_instance_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study_instance_uid, self.series_instance_uid
        return ds
