"""``scripts/deidentify.py`` takes files exactly as the app does: the intake inventory (truncated files,
files without a Study Instance UID, non-DICOM files…) and then the admission gate, with the app's reasons,
and every run ends with its summary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from app.settings import DeidentificationSettings
from operators.deid.profile import ProfileOptions
from operators.intake.inventory import scan_input
from operators.run_report import NOT_USED, RunReport
from scripts.deidentify import deidentify_folder
from tests.conftest import ROOT, tree_digest
from tests.support.phi_corpus import DEID_DATA

TRUNCATED = "truncated file: it ends inside PixelData (13,303 of 32,768 bytes present)"
NO_STUDY_UID = "missing required attribute(s): StudyInstanceUID, SeriesInstanceUID"
NOT_DICOM = "not a DICOM file (no 'DICM' prefix after a 128-byte preamble; PS3.10 7.1)"


def _deidentify(input_dir: Path, output_dir: Path) -> subprocess.CompletedProcess:
    """``python scripts/deidentify.py IN OUT`` as a user runs it."""
    command = [sys.executable, str(ROOT / "scripts" / "deidentify.py"), str(input_dir), str(output_dir)]
    env = {**os.environ, "BIOMEDCLIP_DEID_SECRET": "script-test-secret"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    """A good CT, a truncated copy of it, an image without Study/Series Instance UID, a text file."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    ct = Path(get_testdata_file("CT_small.dcm"))
    shutil.copyfile(ct, folder / "ct.dcm")
    data = ct.read_bytes()
    (folder / "sub" / "truncated.dcm").write_bytes(data[: len(data) // 2])
    shutil.copyfile(get_testdata_file("JPEGLSNearLossless_08.dcm"), folder / "jpegls.dcm")
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def test_bad_files_are_refused_with_the_apps_reasons_and_the_run_ends_with_its_summary(mixed_folder: Path, tmp_path: Path) -> None:
    before = tree_digest(mixed_folder)
    result = _deidentify(mixed_folder, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"written: 1 file(s) to {tmp_path / 'out'}",
        "refused: 3 file(s)",
        f"  jpegls.dcm: {NO_STUDY_UID}",
        f"  notes.txt: {NOT_DICOM}",
        f"  sub/truncated.dcm: {TRUNCATED}",
    ]
    assert "Traceback" not in result.stderr
    assert tree_digest(mixed_folder) == before, "the input folder was modified"
    (written,) = (tmp_path / "out").rglob("*.dcm")
    ds = pydicom.dcmread(written)
    assert ds.PatientIdentityRemoved == "YES" and ds.Modality == "CT"
    # the reasons are the ones the app's run report gives (the inventory's)
    app_reasons = {f.relative: f.skip_reason for f in scan_input(mixed_folder) if f.skip_reason}
    assert app_reasons == {"jpegls.dcm": NO_STUDY_UID, "notes.txt": NOT_DICOM, "sub/truncated.dcm": TRUNCATED}


@pytest.fixture()
def app_scope_folder(mixed_folder: Path) -> Path:
    """``mixed_folder`` plus what the admission gate and the inventory's other rules decide on."""
    shutil.copyfile(DEID_DATA / "ultrasounds" / "GREYSCALE_IMAGE.dcm", mixed_folder / "us.dcm")  # Burned In Annotation YES
    shutil.copyfile(get_testdata_file("SC_rgb.dcm"), mixed_folder / "sc.dcm")  # modality OT
    shutil.copyfile(get_testdata_file("test-SR.dcm"), mixed_folder / "sr.dcm")  # a non-image SOP class
    shutil.copyfile(get_testdata_file("CT_small.dcm"), mixed_folder / "sub" / "ct-again.dcm")  # a duplicate instance
    shutil.copyfile(get_testdata_file("MR_small.dcm"), mixed_folder / "sub" / "mr.dcm")
    return mixed_folder


@pytest.mark.parametrize("accept_burned_in_annotation", [False, True])
def test_the_script_and_the_app_take_the_same_decisions(app_scope_folder: Path, tmp_path: Path, accept_burned_in_annotation: bool) -> None:
    """The app: the study loader's inventory into the run report, then the de-identification operator's
    admission of the loaded instances. The script on the same folder must refuse the same files, with the
    same reasons, and write the others."""
    from monai.deploy.core import Fragment  # the real operator, outside a running graph

    from operators.deidentification_operator import DeidentificationOperator
    from operators.imaging.sampling import SamplingPolicy

    report = RunReport()
    files = scan_input(app_scope_folder)
    report.add_inventory(files)
    operator = DeidentificationOperator(
        Fragment(), options=ProfileOptions(), secret=b"k", accept_burned_in_annotation=accept_burned_in_annotation,
        policy=SamplingPolicy(16), report=report, name="deidentification",
    )
    operator._admitted([pydicom.dcmread(f.path) for f in files if f.skip_reason is None])
    app_refused = {name: entry["reason"] for name, entry in report.files.items() if entry["status"] != NOT_USED}
    app_admitted = sorted(name for name, entry in report.files.items() if entry["status"] == NOT_USED)

    settings = DeidentificationSettings(b"k", ProfileOptions(), accept_burned_in_annotation)
    result = deidentify_folder(app_scope_folder, tmp_path / "out", settings)

    assert result.refused == app_refused
    assert len(result.written) == len(app_admitted)
    assert app_admitted == (["ct.dcm", "sc.dcm", "sub/mr.dcm", "us.dcm"] if accept_burned_in_annotation else ["ct.dcm", "sub/mr.dcm"])
    assert app_refused["sub/ct-again.dcm"] == "duplicate SOP Instance UID (same as ct.dcm)"
    assert app_refused["sr.dcm"].startswith("non-image SOP class: ")
    if not accept_burned_in_annotation:
        assert app_refused["us.dcm"].startswith("refused by de-identification: Burned In Annotation (0028,0301) is YES")
