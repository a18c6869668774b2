#!/usr/bin/env python3
"""De-identify every DICOM image file under IN_DIR into OUT_DIR with exactly the rules the app uses
(DICOM PS3.15 Annex E Basic Profile + the options in the app's config), and print a summary.

    .venv/bin/python scripts/deidentify.py IN_DIR OUT_DIR [--config app/config/app.json]

Outputs: ``OUT_DIR/<study UID>/<series UID>/<SOP Instance UID>.dcm`` under the replaced UIDs, written
atomically; the input is never modified. Refused files (not DICOM, non-image SOP classes, possible
burned-in PHI unless the config accepts it) are listed with the reason, by their path relative to
IN_DIR. UIDs are keyed by the secret in the environment variable the config names; without it a
random key is drawn, so the same input gives other UIDs on the next run. Nothing else is written: the
re-identification map stays in memory and is discarded.

Exit status: 0 when every file was processed (written or refused), 2 on bad arguments or config.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

ROOT = Path(__file__).resolve().parent.parent

from app.settings import DeidentificationSettings, config_path
from operators.atomic import write_atomically
from operators.deid.burned_in_annotation import burned_in_phi_risk
from operators.deid.deidentifier import Deidentifier, DeidentificationProfile
from operators.intake.inventory import PIXEL_KEYWORDS


@dataclass
class FolderResult:
    written: list[Path] = field(default_factory=list)
    #: relative input path -> reason
    refused: dict[str, str] = field(default_factory=dict)


def _refusal(ds: Dataset, settings: DeidentificationSettings) -> str | None:
    if not any(k in ds for k in PIXEL_KEYWORDS):
        return f"non-image SOP class: {UID(ds.get('SOPClassUID', '')).name or 'unknown'} (the app de-identifies images only)"
    return None if settings.accept_burned_in_annotation else burned_in_phi_risk(ds)


def _read(path: Path) -> Dataset | str:
    try:
        return dcmread(path)
    except InvalidDicomError:
        return "not a DICOM file"
    except Exception as exc:  # truncated or malformed files raise many kinds; the message may quote values
        return f"not a readable DICOM file ({type(exc).__name__})"


def deidentify_folder(input_dir: Path, output_dir: Path, settings: DeidentificationSettings) -> FolderResult:
    """De-identify every regular file under ``input_dir`` (sorted, symbolic links not followed)."""
    input_dir, output_dir = input_dir.resolve(), output_dir.resolve()
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise ValueError(f"{output_dir}: the output folder must not be inside the input folder")
    deidentifier = Deidentifier(DeidentificationProfile.basic(settings.options), settings.secret)
    result = FolderResult()
    for folder, dirs, names in os.walk(input_dir):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            relative = path.relative_to(input_dir).as_posix()
            original = "symbolic link (not followed)" if path.is_symlink() else _read(path)
            reason = original if isinstance(original, str) else _refusal(original, settings)
            if reason is not None:
                result.refused[relative] = reason
                continue
            try:
                ds = deidentifier.deidentify(original)
            except Exception as exc:  # one bad file must not stop the others; the message may quote values
                result.refused[relative] = f"de-identification failed ({type(exc).__name__})"
                continue
            target = output_dir / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
            result.written.append(write_atomically(target, lambda f: ds.save_as(f, enforce_file_format=True)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--config", type=Path, help="app settings file (default: app/config/app.json or $BIOMEDCLIP_APP_CONFIG)")
    args = parser.parse_args(argv)
    if not args.input_dir.is_dir():
        print(f"error: {args.input_dir}: not a folder", file=sys.stderr)
        return 2
    try:
        settings = DeidentificationSettings.load(args.config)
    except (OSError, ValueError, KeyError) as exc:
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
