"""Which accepted instances the SDK loader dropped, and why.

The SDK's ``DICOMDataLoaderOperator._load_data`` (monai-deploy-app-sdk 4.0) keeps one instance per
Image Position (Patient) in a series — the one with the higher Acquisition Number, else the first
read — and drops instances it cannot parse; it only logs either. Every accepted file must still
get an outcome in the run report, so each dropped one is named here with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset, dcmread

from operators.intake.inventory import InputFile

PositionKey = tuple[str, tuple[float, ...]]


@dataclass(frozen=True)
class LoaderDrop:
    sop_instance_uid: str
    reason: str
    #: a failure (the instance could not be read) rather than the loader's one-per-position rule
    refused: bool


def _position_key(ds: Dataset) -> PositionKey | None:
    position = ds.get("ImagePositionPatient")
    if not position:
        return None
    return str(ds.SeriesInstanceUID), tuple(float(v) for v in position)


def _position_of_file(f: InputFile) -> PositionKey | None:
    try:
        return _position_key(dcmread(f.path, stop_before_pixels=True))
    except Exception:  # the loader could not parse it either
        return None


def dropped_by_loader(accepted: list[InputFile], loaded: list[Dataset]) -> list[LoaderDrop]:
    """The files of ``accepted`` whose instance is not among the ``loaded`` data sets, with why."""
    relative_of = {f.sop_instance_uid: f.relative for f in accepted}
    loaded_uids = {str(ds.SOPInstanceUID) for ds in loaded}
    kept_at = {key: relative_of.get(str(ds.SOPInstanceUID)) for ds in loaded if (key := _position_key(ds))}
    drops = []
    for f in accepted:
        uid = str(f.sop_instance_uid)
        if uid in loaded_uids:
            continue
        position = _position_of_file(f)
        kept = kept_at.get(position) if position is not None else None
        if kept is not None:
            reason = (
                f"same Image Position (Patient) as {kept} in its series: the loader keeps one instance per "
                "position (the higher Acquisition Number, else the first read)"
            )
            drops.append(LoaderDrop(uid, reason, refused=False))
        else:
            drops.append(LoaderDrop(uid, "the SDK loader could not read it", refused=True))
    return drops
