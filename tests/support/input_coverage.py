"""Outcome of every file of pydicom's test files, pydicom-data and deid-data (its zipped cines
included) through the app's input path: the inventory's header checks (``classify_file``), then
sampling, decoding and preprocessing (``preprocess_series``, default policy of 16 images).

Each file is classified on its own: the duplicate-UID rule is a property of a folder, and these
packages ship twins of one instance in several transfer syntaxes.

    .venv/bin/python -m tests.support.input_coverage     # rewrites the table in docs/input-coverage.md
"""

from __future__ import annotations

import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import data_store
import deid_data
import numpy as np
import pydicom
from pydicom.pixels import get_decoder
from pydicom.uid import UID, AllTransferSyntaxes

from operators.imaging.preprocessing import CLIP_MEAN, CLIP_STD, preprocess_series
from operators.imaging.sampling import SamplingPolicy
from operators.intake.image_header import transfer_syntax_problem
from operators.intake.inventory import classify_file

ROOT = Path(__file__).resolve().parents[2]

CORPORA = {
    "pydicom": Path(pydicom.__file__).parent / "data" / "test_files",
    "pydicom-data": Path(data_store.__file__).parent / "data",
    "deid-data": Path(deid_data.__file__).parent / "data",
}
POLICY = SamplingPolicy(16)
DOC = ROOT / "docs" / "input-coverage.md"
BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"
CLASSIFIED, REFUSED, SKIPPED = "classified", "refused", "skipped"


@dataclass(frozen=True)
class CorpusFile:
    corpus: str
    name: str  # relative to the corpus; a zip member as "archive.zip:member"
    path: Path


@dataclass(frozen=True)
class Outcome:
    file: CorpusFile
    status: str  # classified, refused or skipped
    reason: str  # why refused or skipped; for classified files, the sampling
    images: int  # model inputs produced (3 x 224 x 224 each)
    description: str  # transfer syntax, photometric interpretation, bits, frames
    frames: int = 1
    problems: tuple[str, ...] = ()  # what is wrong with the model inputs (``input_problems``)


def input_problems(pixel_values: np.ndarray, grey: bool) -> tuple[str, ...]:
    """What is wrong with a batch of model inputs: shape, non-finite values, intensities outside
    [0, 1] before CLIP normalisation, grey images whose 3 channels differ."""
    if pixel_values.shape[1:] != (3, 224, 224) or pixel_values.dtype != np.float32:
        return (f"inputs are {pixel_values.dtype} {pixel_values.shape}",)
    problems = []
    if not np.isfinite(pixel_values).all():
        problems.append("non-finite values")
    unit = pixel_values * CLIP_STD[:, None, None] + CLIP_MEAN[:, None, None]
    if unit.min() < -1e-5 or unit.max() > 1 + 1e-5:
        problems.append(f"intensities {unit.min():.4f}..{unit.max():.4f} outside [0, 1]")
    if grey and not (np.abs(unit[:, 0] - unit[:, 1]).max() < 1e-5 and np.abs(unit[:, 0] - unit[:, 2]).max() < 1e-5):
        problems.append("grey image with unequal channels")
    return tuple(problems)


def corpus_files(unzip_to: Path) -> Iterator[CorpusFile]:
    """Every file of the three packages, zip members extracted under ``unzip_to``; no Python sources."""
    for corpus, root in CORPORA.items():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            if path.suffix in (".py", ".pyc"):
                continue
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as archive:
                    for member in archive.namelist():
                        yield CorpusFile(corpus, f"{relative}:{member}", Path(archive.extract(member, unzip_to / relative)))
            else:
                yield CorpusFile(corpus, relative, path)


def describe(path: Path) -> str:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        parts = [
            syntax.name if syntax else "no transfer syntax",
            str(ds.get("PhotometricInterpretation", "")),
            f"{ds.get('BitsStored', '?')}/{ds.get('BitsAllocated', '?')} bits" if "BitsAllocated" in ds else "",
            f"{ds.NumberOfFrames} frames" if ds.get("NumberOfFrames") not in (None, "", 1, "1") else "",
        ]
        return ", ".join(p for p in parts if p)
    except Exception:
        return ""


def outcome_of(file: CorpusFile) -> Outcome:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about quirks it tolerates; outcomes say what matters
        return _outcome_of(file)


def _outcome_of(file: CorpusFile) -> Outcome:
    classification = classify_file(file.path)
    description = describe(file.path)
    if classification.reason:
        status = REFUSED if classification.refused else SKIPPED
        return Outcome(file, status, classification.reason, 0, description)
    ds = pydicom.dcmread(file.path)
    series = preprocess_series(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), [ds], POLICY.plan([ds]))
    if not series.images:
        return Outcome(file, REFUSED, series.refused[0][1], 0, description)
    grey = str(ds.PhotometricInterpretation).startswith("MONOCHROME")
    problems = input_problems(series.pixel_values, grey) + tuple(reason for _, reason in series.refused)
    return Outcome(file, CLASSIFIED, series.sampling, len(series.images), description, series.total_images, problems)


def all_outcomes(unzip_to: Path) -> list[Outcome]:
    return [outcome_of(f) for f in corpus_files(unzip_to)]


def syntax_lines() -> list[str]:
    """Every transfer syntax pydicom knows: the decoder plugins installed for it, or why none."""
    lines = ["| transfer syntax | UID | pixel data decoders installed |", "|---|---|---|"]
    for syntax in sorted(map(UID, set(AllTransferSyntaxes))):
        problem = transfer_syntax_problem(syntax)
        decoders = problem or ", ".join(get_decoder(syntax).available_plugins) or "pydicom (native)"
        lines.append(f"| {syntax.name} | `{syntax}` | {decoders} |")
    return lines


def table(outcomes: list[Outcome]) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in (CLASSIFIED, REFUSED, SKIPPED)}
    lines = [
        BEGIN,
        "### Transfer syntaxes",
        "",
        *syntax_lines(),
        "",
        "### Every file of pydicom's test files, pydicom-data and deid-data",
        "",
        f"{len(outcomes)} files: {counts[CLASSIFIED]} classified, {counts[REFUSED]} refused, {counts[SKIPPED]} skipped.",
        "",
        "| package | file | encoding | outcome | 3×224×224 inputs | reason / sampling |",
        "|---|---|---|---|---:|---|",
    ]
    for o in outcomes:
        reason = o.reason.replace("|", "\\|")
        lines.append(f"| {o.file.corpus} | `{o.file.name}` | {o.description} | {o.status} | {o.images} | {reason} |")
    lines.append(END)
    return "\n".join(lines)


def rewrite_doc(section: str) -> None:
    text = DOC.read_text()
    DOC.write_text(text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :])


def documented_table() -> str:
    text = DOC.read_text()
    return text[text.index(BEGIN) : text.index(END) + len(END)]


def main() -> int:
    with tempfile.TemporaryDirectory() as unzip_to:
        section = table(all_outcomes(Path(unzip_to)))
    rewrite_doc(section)
    print(f"{DOC}: {next(line for line in section.splitlines() if line.endswith('skipped.'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
