"""No injected PHI marker survives ``scripts/deidentify.py`` (the app's rules): not in any element at any depth,
not in the file bytes (preamble and File Meta included), not in what the command prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.conftest import ROOT, tree_digest
from tests.support.phi_corpus import DEID_DATA, PhiCorpus, make_phi_corpus

SECRET_ENV = {"BIOMEDCLIP_DEID_SECRET": "leak-test-secret"}
UID_VALUE = re.compile(r"2\.25\.(0|[1-9][0-9]*)")
BURNED_IN_US = DEID_DATA / "ultrasounds" / "GREYSCALE_IMAGE.dcm"


def deidentify_command(input_dir: Path, output_dir: Path, config: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python scripts/deidentify.py IN OUT [--config FILE]`` as a user runs it."""
    command = [sys.executable, str(ROOT / "scripts" / "deidentify.py"), str(input_dir), str(output_dir)]
    command += ["--config", str(config)] if config else []
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or SECRET_ENV)}, timeout=300)


def write_config(folder: Path, **deidentification: object) -> Path:
    """A copy of the app's config with ``deidentification`` settings changed."""
    shutil.copytree(ROOT / "app" / "config", folder, dirs_exist_ok=True)
    settings = json.loads((folder / "app.json").read_text())
    for key, value in deidentification.items():
        if key == "options":
            settings["deidentification"]["options"].update(value)
        else:
            settings["deidentification"][key] = value
    (folder / "app.json").write_text(json.dumps(settings))
    return folder / "app.json"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> PhiCorpus:
    return make_phi_corpus(tmp_path_factory.mktemp("phi") / "input")


@pytest.fixture(scope="module")
def deidentified(corpus: PhiCorpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict[Path, pydicom.Dataset]]:
    input_dir = corpus.files[0].parent
    before = tree_digest(input_dir)
    out = tmp_path_factory.mktemp("deid") / "out"
    result = deidentify_command(input_dir, out)
    assert result.returncode == 0, result.stderr
    assert tree_digest(input_dir) == before, "the input folder was modified"
    return result, {path: pydicom.dcmread(path) for path in sorted(out.rglob("*.dcm"))}


def test_every_file_is_written_and_the_summary_says_so(corpus: PhiCorpus, deidentified) -> None:
    result, outputs = deidentified
    assert len(outputs) == len(corpus.files)
    assert f"written: {len(corpus.files)} file(s)" in result.stdout
    assert "refused: 0 file(s)" in result.stdout


def test_no_marker_in_any_element_at_any_depth(corpus: PhiCorpus, deidentified) -> None:
    _, outputs = deidentified
    for path, ds in outputs.items():
        assert corpus.found_in_dataset(ds) == [], path.name


def test_no_marker_in_the_written_bytes(corpus: PhiCorpus, deidentified) -> None:
    _, outputs = deidentified
    for path in outputs:
        assert corpus.found_in_bytes(path.read_bytes()) == set(), path.name
        assert path.read_bytes()[:128] == b"\x00" * 128, "the preamble is replaced"


def test_no_marker_in_what_the_command_prints(corpus: PhiCorpus, deidentified) -> None:
    result, _ = deidentified
    assert corpus.found_in(result.stdout + result.stderr) == set()


def test_method_recorded_and_no_private_attributes(deidentified) -> None:
    _, outputs = deidentified
    for ds in outputs.values():
        assert ds.PatientIdentityRemoved == "YES"
        assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100"]
        assert ds.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator == "DCM"
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        private: list[str] = []
        ds.walk(lambda _, elem, private=private: private.append(str(elem.tag)) if elem.tag.is_private else None)
        assert private == []
        assert not any(0x6000 <= elem.tag.group <= 0x60FF or 0x5000 <= elem.tag.group <= 0x50FF for elem in ds)
        assert ds.file_meta.ImplementationVersionName == "BMCLIP_DEID_1"
        assert "SourceApplicationEntityTitle" not in ds.file_meta


def test_uids_are_valid_and_every_reference_resolves(corpus: PhiCorpus, deidentified) -> None:
    """Referenced/Source Image Sequences (X/Z/U*, at any depth) point at the neighbour's new SOP Instance UID."""
    _, outputs = deidentified
    by_name = {ds.SOPInstanceUID: ds for ds in outputs.values()}
    assert len(by_name) == len(corpus.files)
    for ds in outputs.values():
        uids: list[str] = []
        ds.walk(lambda _, elem, uids=uids: uids.extend(map(str, elem.value if elem.VM > 1 else [elem.value])) if elem.VR == "UI" and not elem.is_empty else None)
        instance_uids = [u for u in uids if not u.startswith("1.2.840.10008.")]
        assert instance_uids and all(UID_VALUE.fullmatch(u) and len(u) <= 64 for u in instance_uids)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        references = [
            ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID,
            ds.SourceImageSequence[0].ReferencedSOPInstanceUID,
            ds.DerivationCodeSequence[0].DerivationCodeSequence[0].PurposeOfReferenceCodeSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
        ]
        assert len(set(references)) == 1 and references[0] in by_name and references[0] != ds.SOPInstanceUID


@pytest.fixture()
def burned_in_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "burned"
    folder.mkdir()
    shutil.copyfile(BURNED_IN_US, folder / "us.dcm")
    shutil.copyfile(get_testdata_file("SC_rgb.dcm"), folder / "sc.dcm")
    shutil.copyfile(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def test_burned_in_phi_refused_by_default_with_the_reason(burned_in_folder: Path, tmp_path: Path) -> None:
    result = deidentify_command(burned_in_folder, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "written: 1 file(s)" in result.stdout and "refused: 3 file(s)" in result.stdout
    assert "us.dcm: refused by de-identification: Burned In Annotation (0028,0301) is YES" in result.stdout
    assert "sc.dcm: refused by de-identification: modality OT commonly carries burned-in annotation" in result.stdout
    assert "notes.txt: not a DICOM file" in result.stdout
    (written,) = (tmp_path / "out").rglob("*.dcm")
    assert pydicom.dcmread(written).Modality == "CT"


def test_a_site_may_accept_burned_in_annotation(burned_in_folder: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", accept_burned_in_annotation=True)
    result = deidentify_command(burned_in_folder, tmp_path / "out", config)
    assert result.returncode == 0, result.stderr
    assert "written: 3 file(s)" in result.stdout
    original = pydicom.dcmread(BURNED_IN_US)
    (us,) = [ds for ds in map(pydicom.dcmread, (tmp_path / "out").rglob("*.dcm")) if ds.Modality == "US"]
    assert us.PatientIdentityRemoved == "YES" and us.PatientName == "" and us.SOPInstanceUID != original.SOPInstanceUID
    assert us.BurnedInAnnotation == "YES", "pixels are not cleaned, and the file says so"


def test_without_a_secret_the_command_warns_and_uids_differ_per_run(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    env = {k: v for k, v in os.environ.items() if k != "BIOMEDCLIP_DEID_SECRET"}
    runs = [subprocess.run([sys.executable, str(ROOT / "scripts" / "deidentify.py"), str(folder), str(tmp_path / f"out{i}")],
                           capture_output=True, text=True, env=env, timeout=300) for i in range(2)]
    assert all(r.returncode == 0 and "no de-identification secret set" in r.stderr for r in runs)
    uids = [pydicom.dcmread(next((tmp_path / f"out{i}").rglob("*.dcm"))).SOPInstanceUID for i in range(2)]
    assert uids[0] != uids[1]


def test_bad_config_and_output_inside_input_are_one_line_errors(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    config = write_config(tmp_path / "config", options={"retain_everything": True})
    result = deidentify_command(folder, tmp_path / "out", config)
    assert result.returncode == 2 and "unknown de-identification option(s): retain_everything" in result.stderr
    result = deidentify_command(folder, folder / "out")
    assert result.returncode == 2 and "must not be inside the input folder" in result.stderr
