#!/usr/bin/env python3
"""De-identification benchmark and evaluation: this app's de-identifier side by side with dicognito and Kitware's
dicom-anonymizer, on the same files, in one run.

Speed: per-file wall time of read (from bytes in memory) + de-identify + write (to memory; this app with its
own writer, ``operators.deid.writer``, the peers with pydicom's ``save_as``), for
  - the sample files: the embedded sample study (7 CT) + pydicom's CT_small and MR_small,
  - the PHI-injected corpus of ``tests/support/phi_corpus.py`` (every Table E.1-1 attribute set: heavy headers).
Tools are interleaved per repeat (order rotated) so that all see the same machine state; medians reported.

Quality, for these and for pydicom ``deid`` (default recipe) and ``dcm-anonymizer`` (file API only, so not timed
side by side), on the PHI-injected corpus: injected markers left anywhere (dataset walk, file bytes), whether
Patient Identity Removed / De-identification Method Code Sequence are set, whether a Referenced Image
Sequence still resolves to the referenced file's new SOP Instance UID; and, on the real un-injected files,
new ``dciodvfy`` errors.

    .venv/bin/python -m benchmarks.deid [--repeats 15]   # writes benchmarks/deid.json, BENCHMARKS.md section
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import BinaryIO

import pydicom
from dcm_anon import UIDMapper, anonymize_file
from deid.dicom import replace_identifiers
from dicognito.anonymizer import Anonymizer
from dicomanonymizer import anonymize_dataset

from benchmarks.common import cpu_name, write_section
from operators.deid.deidentifier import DeidentificationProfile, Deidentifier
from operators.deid.encoded import EncodedFile, deidentify_encoded, deidentify_file
from operators.deid.writer import write_file
from scripts.make_sample_study import make_sample_study
from tests.support.phi_corpus import SOURCES, dciodvfy_errors, make_phi_corpus

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- deid:begin -->", "<!-- deid:end -->"
#: file bytes in -> de-identified file bytes out
Tool = Callable[[bytes], bytes]
#: path in -> de-identified file bytes out
FileTool = Callable[[Path], bytes]
GENERAL_PATH = "this app, general path"


def with_pydicom(deidentify: Callable[[pydicom.Dataset], pydicom.Dataset],
                 write: Callable[[BinaryIO, pydicom.Dataset], None]) -> Tool:
    """A dataset de-identifier as a file tool: pydicom reads the file, ``write`` writes the result."""
    def tool(data: bytes) -> bytes:
        ds = deidentify(pydicom.dcmread(io.BytesIO(data)))
        out = io.BytesIO()
        write(out, ds)
        return out.getvalue()
    return tool


def save_as(fp: BinaryIO, ds: pydicom.Dataset) -> None:
    ds.save_as(fp, enforce_file_format=True)


def tools() -> dict[str, Tool]:
    """This app as ``scripts/deidentify.py`` runs it (the encoded walk, ``operators.deid.encoded``), its general path
    (pydicom reads, ``Deidentifier``, ``operators.deid.writer``), and the peers as their users run them (pydicom
    reads, the peer, pydicom's ``save_as``)."""
    ours = Deidentifier(DeidentificationProfile.basic(), b"benchmark secret")
    cognito = Anonymizer(seed="benchmark secret")

    def dicognito(ds: pydicom.Dataset) -> pydicom.Dataset:
        cognito.anonymize(ds)
        return ds

    def dicom_anonymizer(ds: pydicom.Dataset) -> pydicom.Dataset:
        anonymize_dataset(ds, delete_private_tags=True)
        return ds

    return {"this app": lambda data: deidentify_file(ours, data, EncodedFile.parse(data)).tobytes(),
            GENERAL_PATH: with_pydicom(Deidentifier(DeidentificationProfile.basic(), b"benchmark secret").deidentify, write_file),
            f"dicognito {version('dicognito')}": with_pydicom(dicognito, save_as),
            f"dicom-anonymizer {version('dicom-anonymizer')}": with_pydicom(dicom_anonymizer, save_as)}


def file_tools(folder: Path) -> dict[str, FileTool]:
    """Every evaluated library as a user calls it, with its defaults: the timed ones, plus pydicom ``deid``
    (default recipe) and ``dcm-anonymizer`` (file API only), evaluated for quality."""
    named: dict[str, FileTool] = {name: (lambda path, tool=tool: tool(path.read_bytes())) for name, tool in tools().items()}

    def deid(path: Path) -> bytes:
        (ds,) = replace_identifiers(dicom_files=[str(path)])
        out = io.BytesIO()
        ds.save_as(out)  # its default recipe removes the SOP UIDs the File Meta needs: not a valid file
        return out.getvalue()

    def dcm_anon(path: Path) -> bytes:
        target = folder / "dcm-anon" / path.name
        anonymize_file(path, target, UIDMapper(salt="benchmark secret"))
        return target.read_bytes()

    named[f"deid {version('deid')} (default recipe)"] = deid
    named[f"dcm-anonymizer {version('dcm-anonymizer')}"] = dcm_anon
    return named


def time_phases(files: list[bytes], repeats: int) -> dict[str, float]:
    """This app's median ms per file for each phase of the encoded walk: index (``EncodedFile.parse``), de-identify
    (``deidentify_encoded``), join (the output's chunks into one ``bytes``)."""
    deidentifier = Deidentifier(DeidentificationProfile.basic(), b"benchmark secret")
    samples: dict[str, list[float]] = {"index": [], "de-identify": [], "join": []}
    for _ in range(repeats):
        for data in files:
            start = time.perf_counter()
            encoded = EncodedFile.parse(data)
            indexed = time.perf_counter()
            deidentified = deidentify_encoded(deidentifier, encoded) if encoded is not None else None
            done = time.perf_counter()
            if deidentified is None:
                raise SystemExit("a file of the PHI-injected corpus was left to the general path")
            deidentified.tobytes()
            samples["index"].append((indexed - start) * 1000)
            samples["de-identify"].append((done - indexed) * 1000)
            samples["join"].append((time.perf_counter() - done) * 1000)
    return {phase: round(statistics.median(values), 2) for phase, values in samples.items()}


def time_tools(files: list[bytes], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per file for each tool, interleaved: wall time, and CPU time of this process (which the
    other work of a loaded machine inflates far less)."""
    named = tools()
    samples: dict[str, list[float]] = {name: [] for name in named}
    cpu: dict[str, list[float]] = {name: [] for name in named}
    order = list(named)
    for _ in range(repeats):
        order = order[1:] + order[:1]
        for name in order:
            for data in files:
                start, start_cpu = time.perf_counter(), time.process_time()
                named[name](data)
                samples[name].append((time.perf_counter() - start) * 1000)
                cpu[name].append((time.process_time() - start_cpu) * 1000)
    return ({name: round(statistics.median(values), 2) for name, values in samples.items()},
            {name: round(statistics.median(values), 2) for name, values in cpu.items()})


def evaluate(folder: Path) -> dict[str, dict]:
    """Leaks and record-keeping on the PHI corpus; new dciodvfy errors on the real files."""
    corpus = make_phi_corpus(folder / "phi")
    real = [Path(p) for p in SOURCES]
    result = {}
    for name, tool in file_tools(folder).items():
        written = [tool(path) for path in corpus.files]
        outputs = [pydicom.dcmread(io.BytesIO(data)) for data in written]
        leaks = set()
        for path, ds, data in zip(corpus.files, outputs, written):
            leaks |= {f"{path.name}:{m}" for m in corpus.found_in_dataset(ds)}
            leaks |= {f"{path.name}:{m}" for m in corpus.found_in_bytes(data)}
        new_uids = [str(ds.get("SOPInstanceUID", "")) for ds in outputs]
        references = [str(ds.ReferencedImageSequence[0].get("ReferencedSOPInstanceUID")) if ds.get("ReferencedImageSequence") else None for ds in outputs]
        new_errors = 0
        for path in real:
            out = folder / f"{name.split()[0]}-{path.name}"
            out.write_bytes(tool(path))
            new_errors += len([e for e in dciodvfy_errors(out) if e not in dciodvfy_errors(path)])
        result[name] = {
            "markers_injected": len(corpus.markers),
            "distinct_markers_left": len({leak.split(":", 1)[1] for leak in leaks}),
            "marker_occurrences_left_per_file": round(len(leaks) / len(corpus.files), 1),
            "sop_instance_uid_kept_valid": all(uid.startswith(("1.", "2.")) for uid in new_uids),
            "patient_identity_removed": all(ds.get("PatientIdentityRemoved") == "YES" for ds in outputs),
            "method_code_sequence": all("DeidentificationMethodCodeSequence" in ds for ds in outputs),
            "references_resolve": all(references[i] == new_uids[(i + 1) % len(outputs)] for i in range(len(outputs))),
            "new_dciodvfy_errors_on_real_files": new_errors,
            "real_files": [p.name for p in real],
        }
    return result


def write_markdown(results: dict) -> None:
    speed, quality = results["ms_per_file"], results["quality"]
    first = next(iter(quality.values()))
    lines = [
        BEGIN,
        "## De-identification (PS3.15 Annex E) vs dicognito and dicom-anonymizer",
        "",
        f"`{results['command']}` on {results['cpu']} ({results['load']}); one run, tools interleaved, "
        f"median of {results['repeats']} repeats × files; read from memory + de-identify + write to memory; wall time, "
        "and the CPU time of the process (less inflated by a loaded machine's other work).",
        "",
        f"| tool | ms/file, sample files ({results['files']['sample']}) | files/s | ms/file, PHI-injected corpus "
        f"({results['files']['phi']}) | CPU ms/file, PHI-injected corpus | markers left (of {first['markers_injected']}) | "
        f"new dciodvfy errors ({len(first['real_files'])} real files) | Patient Identity Removed + method codes | references resolve |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, q in quality.items():
        sample, phi, phi_cpu = speed["sample"].get(name), speed["phi"].get(name), results["cpu_ms_per_file"]["phi"].get(name)
        lines.append(
            f"| {name} | {sample or '–'} | {f'{1000 / sample:.0f}' if sample else '–'} | {phi or '–'} | {phi_cpu or '–'} | "
            f"{q['distinct_markers_left']} | {q['new_dciodvfy_errors_on_real_files']} | "
            f"{'yes' if q['patient_identity_removed'] and q['method_code_sequence'] else 'no'} | {'yes' if q['references_resolve'] else 'no'} |"
        )
    phases = results["this_app_phases_ms_per_file_phi"]
    lines += [
        "",
        "This app per phase on the PHI-injected corpus (medians, ms/file, timed apart in the same run): "
        + ", ".join(f"{phase} {ms}" for phase, ms in phases.items())
        + " (`operators/deid/encoded.py`: index the file's elements, de-identify them into chunks of output, join the chunks). "
        "\"this app\" is `scripts/deidentify.py`'s path: files in Explicit VR Little Endian are de-identified as they are "
        "encoded, without a pydicom dataset, into the bytes the general path writes (tested byte for byte); other files "
        "take the general path (pydicom reads, `Deidentifier`, `operators/deid/writer.py`), shown on its own line. The "
        "peers: pydicom reads, the peer, pydicom's `save_as`.",
        "",
        "Raw numbers: `benchmarks/deid.json`. What the markers are and what each tool gets wrong: `docs/deidentification.md`.",
        END,
    ]
    write_section("\n".join(lines), BEGIN, END)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the peers warn on the injected attributes; irrelevant to the numbers
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sample = sorted(make_sample_study(folder / "sample")) + [Path(p) for p in SOURCES[:2]]
        phi = make_phi_corpus(folder / "phi_timing").files
        load_before = os.getloadavg()
        (sample_wall, sample_cpu), (phi_wall, phi_cpu) = (time_tools([p.read_bytes() for p in files], args.repeats) for files in (sample, phi))
        phases = time_phases([p.read_bytes() for p in phi], args.repeats)
        load_after = os.getloadavg()
        quality = evaluate(folder)
    results = {
        "command": "python -m benchmarks.deid" + (f" --repeats {args.repeats}" if args.repeats != 15 else ""),
        "cpu": f"{cpu_name()} ({os.cpu_count()} cores)",
        "load": f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        "repeats": args.repeats,
        "files": {"sample": len(sample), "phi": len(phi)},
        "ms_per_file": {"sample": sample_wall, "phi": phi_wall},
        "cpu_ms_per_file": {"sample": sample_cpu, "phi": phi_cpu},
        "this_app_phases_ms_per_file_phi": phases,
        "quality": quality,
    }
    (ROOT / "benchmarks").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "deid.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
