"""Outcome of every file of pydicom's test files, pydicom-data and deid-data (its zipped cines
included) through the app's input path: the inventory's header checks (``classify_file``), then
sampling, decoding and preprocessing (``preprocess_series``, default policy of 16 images).

Each file is classified on its own: the duplicate-UID rule is a property of a folder, and these
packages ship twins of one instance in several transfer syntaxes.

    .venv/bin/python -m tests.input_coverage     # rewrites the table in docs/input-coverage.md
"""

from __future__ import annotations

import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import data_store
import deid_data
import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from operators.inventory import classify_file  # noqa: E402
from operators.preprocessing import SamplingPolicy, preprocess_series  # noqa: E402

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
    classification = classify_file(file.path)
    description = describe(file.path)
    if classification.reason:
        status = REFUSED if classification.refused else SKIPPED
        return Outcome(file, status, classification.reason, 0, description)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about quirks it tolerates; outcomes say what matters
        ds = pydicom.dcmread(file.path)
        series = preprocess_series(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), [ds], POLICY)
    if not series.images:
        return Outcome(file, REFUSED, series.refused[0][1], 0, description)
    return Outcome(file, CLASSIFIED, series.sampling, len(series.images), description)


def all_outcomes(unzip_to: Path) -> list[Outcome]:
    return [outcome_of(f) for f in corpus_files(unzip_to)]


def table(outcomes: list[Outcome]) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in (CLASSIFIED, REFUSED, SKIPPED)}
    lines = [
        BEGIN,
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
    print(f"{DOC}: {section.splitlines()[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
