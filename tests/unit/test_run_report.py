"""run_report.json: file statuses by original and by linked de-identified UID, summary counts, the
series rows, the run's status and error, an atomic write, and no original identifier (nor any way back
to one) in what is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from operators.deid.deidentifier import ReidentificationMap
from operators.intake.inventory import InputFile
from operators.run_report import (
    COMPLETED,
    COMPLETED_WITH_REFUSALS,
    FAILED,
    INFERRED,
    NO_USABLE_IMAGE,
    ImageRow,
    RunReport,
    SeriesRow,
)

#: original SOP Instance UIDs of the accepted input files, and the de-identified UIDs they get
ORIGINAL = {"CT/1.dcm": "1.2.840.99.1", "CT/2.dcm": "1.2.840.99.2", "CT/3.dcm": "1.2.840.99.3", "CT/4.dcm": "1.2.840.99.4"}
PSEUDO = {"1.2.840.99.1": "2.25.101", "1.2.840.99.2": "2.25.102", "1.2.840.99.3": "2.25.103", "1.2.840.99.4": "2.25.104"}
NOT_SAMPLED = "not sampled (series sampling policy)"


def _inventory() -> list[InputFile]:
    return [
        *(InputFile(Path("/in") / relative, relative, sop_instance_uid=uid) for relative, uid in ORIGINAL.items()),
        InputFile(Path("/in/notes.txt"), "notes.txt", "not a DICOM file"),
        InputFile(Path("/in/empty.dcm"), "empty.dcm", "empty file (0 bytes)", refused=True),
        InputFile(Path("/in/other/5.dcm"), "other/5.dcm", sop_instance_uid="1.2.840.99.5"),  # series not selected
    ]


def _inferred_row() -> SeriesRow:
    return SeriesRow(
        series="2.25.900", modality="CT", series_number=3, status=INFERRED, images_total=4, images_inferred=2,
        sampling="2 of 4 images, evenly spaced (max_images_per_series=2)", backend="onnxruntime-cpu-fp32",
        top_label="chest", probabilities={"chest": 0.75, "head": 0.25},
        images=[ImageRow("2.25.101", None, {"chest": 0.5, "head": 0.5}), ImageRow("2.25.104", 2, {"chest": 1.0, "head": 0.0})],
    )


@pytest.fixture()
def report() -> RunReport:
    """A run as the operators make it: inventory, selection and sampling, burned-in refusal, de-identification
    (linking), a refusal in preprocessing and the SR writer's 'used', the last two by de-identified UID."""
    report = RunReport()
    report.add_inventory(_inventory())
    report.mark_selected(ORIGINAL.values(), NOT_SAMPLED)
    report.mark_refused(ORIGINAL["CT/2.dcm"], "burned-in annotation")  # before de-identification: original UID
    for original in (ORIGINAL["CT/1.dcm"], ORIGINAL["CT/3.dcm"], ORIGINAL["CT/4.dcm"]):
        report.link(original, PSEUDO[original])
    report.mark_refused(PSEUDO[ORIGINAL["CT/3.dcm"]], "pixel data could not be decoded")
    report.mark_used(PSEUDO[ORIGINAL["CT/1.dcm"]])
    report.mark_used(PSEUDO[ORIGINAL["CT/4.dcm"]])
    report.add_series(_inferred_row())
    report.add_series(SeriesRow("2.25.901", "MR", None, NO_USABLE_IMAGE, 1))
    report.add_output(Path("/out/2.25.55.dcm"))
    return report


def test_file_statuses_by_original_and_by_linked_deidentified_uid(report: RunReport) -> None:
    assert report.files == {
        "CT/1.dcm": {"status": "used"},
        "CT/2.dcm": {"status": "refused", "reason": "burned-in annotation"},
        "CT/3.dcm": {"status": "refused", "reason": "pixel data could not be decoded"},
        "CT/4.dcm": {"status": "used"},
        "notes.txt": {"status": "skipped", "reason": "not a DICOM file"},
        "empty.dcm": {"status": "refused", "reason": "empty file (0 bytes)"},
        "other/5.dcm": {"status": "not used", "reason": "series not selected by the selection rules"},
    }


def test_an_instance_is_not_used_until_marked_and_unlinked_uids_change_nothing() -> None:
    report = RunReport()
    report.add_inventory(_inventory())
    report.mark_selected(ORIGINAL.values(), NOT_SAMPLED)
    report.mark_not_used(ORIGINAL["CT/2.dcm"], "another instance at the same position kept")
    before = json.dumps(report.files)
    report.mark_used("2.25.101")  # de-identified, but never linked
    report.mark_refused("1.2.840.99.77", "unknown instance")
    report.link("1.2.840.99.77", "2.25.177")  # an original the inventory does not know links nothing
    report.mark_used("2.25.177")
    assert json.dumps(report.files) == before
    assert report.files["CT/1.dcm"] == {"status": "not used", "reason": NOT_SAMPLED}
    assert report.files["CT/2.dcm"] == {"status": "not used", "reason": "another instance at the same position kept"}


def test_summary_counts(report: RunReport) -> None:
    assert report.summary() == {
        "files": 7, "used": 2, "skipped": 1, "not_used": 1, "refused": 3, "series_inferred": 2, "structured_reports": 1,
    }


def test_series_rows_are_written_with_their_keys_in_order_and_optional_ones_left_out(report: RunReport) -> None:
    inferred, unusable = report.as_dict()["series"]
    assert list(inferred) == [
        "series", "modality", "series_number", "status", "images_total", "images_inferred", "sampling", "backend",
        "top_label", "probabilities", "images",
    ]
    assert inferred["probabilities"] == {"chest": 0.75, "head": 0.25}
    assert inferred["images"] == [
        {"sop_instance_uid": "2.25.101", "frame": None, "probabilities": {"chest": 0.5, "head": 0.5}},
        {"sop_instance_uid": "2.25.104", "frame": 2, "probabilities": {"chest": 1.0, "head": 0.0}},
    ]
    # a missing series number is written (null); the fields of an inferred series are not
    assert unusable == {"series": "2.25.901", "modality": "MR", "series_number": None, "status": "no usable image", "images_total": 1}


def test_write_gives_valid_json_equal_to_the_report(report: RunReport, tmp_path: Path) -> None:
    with report.timed("deidentify"):
        pass
    path = report.write(tmp_path / "run_report.json")
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(report.as_dict()))
    assert list(written) == ["status", "error", "priority", "summary", "files", "series", "outputs", "timings_s"]
    assert (written["status"], written["error"]) == (COMPLETED_WITH_REFUSALS, None)
    assert path.read_text().endswith("}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_report.json"], "no temporary file left"


def test_write_is_atomic_a_failed_write_leaves_the_previous_file_whole(
    report: RunReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run_report.json"
    report.write(path)
    previous = path.read_bytes()
    report.mark_used(PSEUDO[ORIGINAL["CT/3.dcm"]])

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        report.write(path)
    assert path.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_report.json"]
    monkeypatch.undo()
    assert json.loads(report.write(path).read_text())["files"]["CT/3.dcm"] == {"status": "used"}


def test_no_original_uid_and_no_way_back_to_one_is_written_or_held(report: RunReport, tmp_path: Path) -> None:
    text = report.write(tmp_path / "run_report.json").read_text()
    for original in [*ORIGINAL.values(), "1.2.840.99.5"]:
        assert original not in text
    for pseudo in PSEUDO.values():  # the links are not written: a de-identified UID only where a series row names it
        assert text.count(pseudo) == (1 if pseudo in ("2.25.101", "2.25.104") else 0)
    assert not any(isinstance(value, ReidentificationMap) for value in vars(report).values())
    assert "1.2.840.99" not in repr(report)


def test_status_completed_with_refusals_completed_or_failed(report: RunReport) -> None:
    assert (report.status, report.error) == (COMPLETED_WITH_REFUSALS, None), "an SR written, two files refused"
    clean = RunReport()
    clean.add_inventory(_inventory()[:1])
    clean.mark_used(ORIGINAL["CT/1.dcm"])
    clean.add_output(Path("/out/2.25.55.dcm"))
    assert (clean.status, clean.error) == (COMPLETED, None)


def test_a_run_without_an_sr_failed_and_says_what_the_input_held() -> None:
    report = RunReport()
    report.add_inventory(_inventory())
    assert report.status == FAILED
    assert report.error == "no usable image in the input: 7 file(s), 1 skipped, 1 refused, 5 not selected"


def test_a_run_that_stopped_on_an_error_failed_with_that_error_even_after_an_sr(report: RunReport) -> None:
    """A model package that a backend cannot load must not read like an empty input."""
    report.fail("/models/biomedclip/image_encoder.onnx: unreadable by ONNX Runtime")
    written = report.as_dict()
    assert (written["status"], written["error"]) == (FAILED, "/models/biomedclip/image_encoder.onnx: unreadable by ONNX Runtime")
