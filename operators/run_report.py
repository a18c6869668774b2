"""``run_report.json``: per input file what happened to it, per series what was inferred, and the SRs written.

File statuses: ``used`` (an image the model saw); ``not used`` (series not selected, image not
sampled, or another instance at the same position kept); ``skipped`` (not for this app: not DICOM,
a non-image SOP class, a duplicate); ``refused`` (an image, or a file that may have been one, that
could not be used: a failure, with the reason).

Only de-identified identifiers appear in it (pseudonymous series UIDs); files are named by their
path relative to the input folder. Stages before de-identification name instances by their original
SOP Instance UIDs, later ones by their de-identified UIDs: the de-identification operator links the two
(``RunReport.link``) as each instance is de-identified, so the report never holds the re-identification
map.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from operators.atomic import write_atomically
from operators.intake.inventory import InputFile

USED = "used"
SKIPPED = "skipped"
NOT_USED = "not used"
REFUSED = "refused"
#: The report's file name in the output folder (the listener reads its summary too).
REPORT_NAME = "run_report.json"

#: Run statuses (the top-level ``status``): every study with a usable image got its SR and no file was
#: refused; SRs written but some files refused; no SR, or the run stopped on an error (``error`` says why).
COMPLETED = "completed"
COMPLETED_WITH_REFUSALS = "completed with refusals"
FAILED = "failed"

#: Series statuses.
INFERRED = "inferred"
NO_USABLE_IMAGE = "no usable image"


@dataclass(frozen=True)
class ImageRow:
    """One image the model saw: its de-identified SOP Instance UID, frame number (1-based; ``None`` for
    a single-frame instance) and probabilities by label name."""

    sop_instance_uid: str
    frame: int | None
    probabilities: dict[str, float]


@dataclass(frozen=True)
class SeriesRow:
    """One row of ``series``: a selected series and what became of it. The fields from
    ``images_inferred`` on belong to inferred series only; left ``None``, they are not written."""

    series: str  # de-identified Series Instance UID
    modality: str
    series_number: int | None
    status: str
    images_total: int
    images_inferred: int | None = None
    sampling: str | None = None
    backend: str | None = None
    top_label: str | None = None
    probabilities: dict[str, float] | None = None
    images: list[ImageRow] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as written: every field without a default, the others where set."""
        row = asdict(self)
        return {f.name: row[f.name] for f in fields(self) if f.default is MISSING or row[f.name] is not None}


@dataclass
class RunReport:
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: list[SeriesRow] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    #: wall seconds per stage (operator compute), summed over calls
    timings: dict[str, float] = field(default_factory=dict)
    #: ``python app --priority``: routine, or urgent (an urgent study's Triton requests go first)
    priority: str = "routine"
    #: SOP Instance UID -> relative path: original UIDs from the inventory, de-identified ones as they are
    #: linked; in memory only, never written.
    _file_of_instance: dict[str, str] = field(default_factory=dict, repr=False)
    #: why the run stopped, one line without PHI (``fail``); ``None`` while it has not
    _failure: str | None = field(default=None, repr=False)

    def add_inventory(self, files: Iterable[InputFile]) -> None:
        for f in files:
            if f.skip_reason:
                self.files[f.relative] = {"status": REFUSED if f.refused else SKIPPED, "reason": f.skip_reason}
            else:
                self.files[f.relative] = {"status": NOT_USED, "reason": "series not selected by the selection rules"}
                self._file_of_instance[str(f.sop_instance_uid)] = f.relative

    def link(self, original_sop_uid: str, deidentified_sop_uid: str) -> None:
        """Let later stages name the input file of ``original_sop_uid`` by its de-identified UID."""
        relative = self._file_of_instance.get(original_sop_uid)
        if relative is not None:
            self._file_of_instance[deidentified_sop_uid] = relative

    def _set(self, sop_uid: str, status: str, reason: str | None) -> None:
        """``sop_uid`` is an original UID, or a de-identified one that was linked."""
        relative = self._file_of_instance.get(sop_uid)
        if relative is not None:
            self.files[relative] = {"status": status, "reason": reason} if reason else {"status": status}

    def mark_selected(self, sop_uids: Iterable[str], reason: str) -> None:
        """Instances of a selected series start as 'not used' with ``reason`` (e.g. the sampling policy)."""
        for uid in sop_uids:
            self._set(uid, NOT_USED, reason)

    def mark_not_used(self, sop_uid: str, reason: str) -> None:
        self._set(sop_uid, NOT_USED, reason)

    def mark_refused(self, sop_uid: str, reason: str) -> None:
        self._set(sop_uid, REFUSED, reason)

    def mark_used(self, sop_uid: str) -> None:
        self._set(sop_uid, USED, None)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def add_series(self, row: SeriesRow) -> None:
        self.series.append(row)

    def add_output(self, path: Path) -> None:
        self.outputs.append(str(path))

    def summary(self) -> dict[str, int]:
        counts = {USED: 0, SKIPPED: 0, NOT_USED: 0, REFUSED: 0}
        for entry in self.files.values():
            counts[entry["status"]] += 1
        return {
            "files": len(self.files),
            "used": counts[USED],
            "skipped": counts[SKIPPED],
            "not_used": counts[NOT_USED],
            "refused": counts[REFUSED],
            "series_inferred": len(self.series),
            "structured_reports": len(self.outputs),
        }

    def fail(self, error: str) -> None:
        """The run stopped on ``error`` (one line, no PHI: the caller's own message, never an exception's
        text that may quote a header)."""
        self._failure = error

    @property
    def error(self) -> str | None:
        """Why the run failed: the error it stopped on, or that no input file was usable; ``None`` otherwise."""
        if self._failure is not None:
            return self._failure
        s = self.summary()
        if s["structured_reports"] == 0:
            return (f"no usable image in the input: {s['files']} file(s), {s['skipped']} skipped, "
                    f"{s['refused']} refused, {s['not_used']} not selected")
        return None

    @property
    def status(self) -> str:
        if self.error is not None:
            return FAILED
        return COMPLETED_WITH_REFUSALS if self.summary()["refused"] else COMPLETED

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "priority": self.priority,
            "summary": self.summary(),
            "files": self.files,
            "series": [row.as_dict() for row in self.series],
            "outputs": self.outputs,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def write(self, path: Path) -> Path:
        text = json.dumps(self.as_dict(), indent=2) + "\n"
        return write_atomically(path, lambda f: f.write(text.encode()))


F = TypeVar("F", bound=Callable[..., Any])


def timed_stage(stage: str) -> Callable[[F], F]:
    """Decorate an operator method so its wall time adds to ``self.report.timings[stage]``."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            with self.report.timed(stage):
                return method(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
