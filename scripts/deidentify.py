#!/usr/bin/env python3
"""De-identify every DICOM image file under IN_DIR into OUT_DIR with exactly the rules the app uses
(DICOM PS3.15 Annex E Basic Profile + the options in the app's config), and print a summary.

    .venv/bin/python scripts/deidentify.py IN_DIR OUT_DIR [--config app/config/app.json]

Outputs: ``OUT_DIR/<study UID>/<series UID>/<SOP Instance UID>.dcm`` under the replaced UIDs, written
atomically; the input is never modified. Files are taken as the app takes them: the app's intake
inventory (``operators.intake.inventory.scan_input``: the same walk, symbolic links followed once, and
the same header checks — not DICOM, empty, truncated, missing UIDs, undecodable, duplicate…) and then
its admission gate (``operators.deid.admission.admit``: non-image SOP classes, possible burned-in PHI
unless the config accepts it). Every file not written is listed with the app's reason, by its path
relative to IN_DIR. UIDs are keyed by the secret in the environment variable the config names;
without it a random key is drawn, so the same input gives other UIDs on the next run. Nothing else is
written: the re-identification map stays in memory and is discarded.

Exit status: 0 when every file was processed (written or refused), 2 on bad arguments or config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import cast

from pydicom import dcmread

from app.settings import DeidentificationSettings, SettingsError, config_path
from operators.atomic import write_atomically
from operators.deid.admission import admit
from operators.deid.deidentifier import DeidentificationProfile, Deidentifier
from operators.deid.encoded import DeidentifiedFile, EncodedFile, deidentify_file
from operators.intake import inventory


@dataclass
class FolderResult:
    written: list[Path] = field(default_factory=list)
    #: relative input path -> reason
    refused: dict[str, str] = field(default_factory=dict)


def deidentify_folder(input_dir: Path, output_dir: Path, settings: DeidentificationSettings) -> FolderResult:
    """De-identify every file under ``input_dir`` that the app's inventory accepts and ``admit`` admits."""
    input_dir, output_dir = input_dir.resolve(), output_dir.resolve()
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise ValueError(f"{output_dir}: the output folder must not be inside the input folder")
    deidentifier = Deidentifier(DeidentificationProfile.basic(settings.options), settings.secret)
    result = FolderResult()
    for entry in inventory.scan_input(input_dir):  # the whole list before anything is written
        try:
            outcome = entry.skip_reason or _deidentified(entry.path, deidentifier, settings.accept_burned_in_annotation)
        except Exception as exc:  # one bad file must not stop the others; the message may quote values
            outcome = f"de-identification failed ({type(exc).__name__})"
        if isinstance(outcome, str):
            result.refused[entry.relative] = outcome
        else:
            result.written.append(_write(outcome, output_dir))
    return result


def _deidentified(path: Path, deidentifier: Deidentifier, accept_burned_in_annotation: bool) -> DeidentifiedFile | str:
    """The de-identified copy of an image the inventory accepted, or why the admission gate refuses it. Its bytes
    are walked as they are encoded where they can be (``operators.deid.encoded``), else read by pydicom."""
    data = path.read_bytes()
    encoded = EncodedFile.parse(data)
    original = dcmread(BytesIO(data)) if encoded is None else None
    header = original if original is not None else cast(EncodedFile, encoded).header()
    reason = admit(header, accept_burned_in_annotation=accept_burned_in_annotation)
    return reason if reason is not None else deidentify_file(deidentifier, data, encoded, original)


def _write(deidentified: DeidentifiedFile, output_dir: Path) -> Path:
    """``OUTPUT/<study UID>/<series UID>/<SOP Instance UID>.dcm``: the inventory accepted only files with all three."""
    target = output_dir / deidentified.study_instance_uid / deidentified.series_instance_uid / f"{deidentified.sop_instance_uid}.dcm"
    return write_atomically(target, deidentified.write)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--config", type=Path, help="app settings file (default: app/config/app.json or $BIOMEDCLIP_APP_CONFIG)")
    args = parser.parse_args(argv)
    inventory.logger.setLevel(logging.ERROR)  # the summary lists every refusal; its log lines would repeat them
    if not args.input_dir.is_dir():
        print(f"error: {args.input_dir}: not a folder", file=sys.stderr)
        return 2
    try:
        settings = DeidentificationSettings.load(args.config)
    except SettingsError as exc:  # its message names the file and the setting
        print(f"error: invalid de-identification settings: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {config_path(args.config)}: invalid de-identification settings ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    try:
        result = deidentify_folder(args.input_dir, args.output_dir, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.secret is None:
        print("warning: no de-identification secret set: UIDs are keyed by a random key for this run only", file=sys.stderr)
    print(f"written: {len(result.written)} file(s) to {args.output_dir}")
    print(f"refused: {len(result.refused)} file(s)")
    for relative, reason in result.refused.items():
        print(f"  {relative}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
