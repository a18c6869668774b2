"""The listener's settings and journal, without a network: what an operator or a crash would hit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.listener.config import ConfigError, Destination, load, parser
from app.listener.journal import COMPLETE, PROCESSED, Arrival, Journal
from app.listener.scp import names_a_file

EXAMPLE = Path(__file__).resolve().parent.parent / "app" / "config" / "listener.example.json"


def test_the_example_config_loads_and_flags_override_it() -> None:
    config = load(parser().parse_args(["--config", str(EXAMPLE), "--port", "4242", "--destination", "ORTHANC@[::1]:4243"]))
    assert config.bind_host == "127.0.0.1"
    assert config.port == 4242
    assert config.destination == Destination("ORTHANC", "::1", 4243)
    assert config.allowed_calling_ae_titles


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"destination": "PACS@host"}, "destination: 'PACS@host' is not AE@host:port"),
        ({"allowed_calling_ae_titles": []}, "allowed_calling_ae_titles: at least one"),
        ({"ae_title": "A\\B"}, "ae_title: 'A\\\\B' is not a valid AE title"),
        ({"quiet_period": 5}, "unknown setting(s): quiet_period"),
        ({"allowed_source_addresses": ["10.0.0.300"]}, "allowed_source_addresses:"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, settings: dict, message: str) -> None:
    data = {**json.loads(EXAMPLE.read_text()), **settings}
    path = tmp_path / "listener.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as error:
        load(parser().parse_args(["--config", str(path)]))
    assert message in str(error.value)


def test_journal_replay_ignores_a_torn_last_record_and_compaction_keeps_unfinished_arrivals(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    done, pending = Arrival("a-done"), Arrival("b-pending")
    for arrival in (done, pending):
        journal.append(arrival, "opened")
        journal.append(arrival, "completed", instances=3)
    journal.append(done, "job_started", attempt=1)
    journal.append(done, "job_finished", srs=["1.2.3.dcm"])
    journal.append(done, "delivered", sr="1.2.3.dcm")
    journal.close()
    with open(journal.path, "ab") as f:  # kill -9 in the middle of an append
        f.write(b'{"arrival": "b-pending", "event": "job_sta')

    replayed = Journal(journal.path).replay()
    assert replayed["a-done"].finished and replayed["a-done"].state == PROCESSED
    assert replayed["b-pending"].state == COMPLETE and replayed["b-pending"].job_attempts == 0

    Journal(journal.path).rewrite([a for a in replayed.values() if not a.finished])
    assert list(Journal(journal.path).replay()) == ["b-pending"]
    assert journal.path.read_text().endswith("\n")


def test_journal_records_hold_no_dicom_identifiers(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    arrival = Arrival("20261127T000000-00000000")
    journal.append(arrival, "opened")
    journal.append(arrival, "completed", instances=1)
    record_keys = {k for line in journal.path.read_text().splitlines() for k in json.loads(line)}
    assert record_keys == {"arrival", "event", "time", "instances"}


@pytest.mark.parametrize(
    ("uid", "spooled"),
    [("1.2.840.10008.5.1.4.1.1.2", True), ("1.2.840.0123.4", True), ("../../etc/passwd", False), ("1.2/3", False),
     ("", False), ("1." + "2" * 63, False)],
)
def test_only_uids_that_are_safe_file_names_are_spooled(uid: str, spooled: bool) -> None:
    assert names_a_file(uid) is spooled
