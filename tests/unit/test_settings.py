"""``app/settings.py`` reads the settings file strictly: JSON booleans for switches, integers for counts,
no unknown key at any level; every error names the file and the setting."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from app.settings import CONFIG_DIR, CONFIG_ENV, AppSettings, DeidentificationSettings, SettingsError
from operators.deid.profile import ProfileOptions
from operators.sr.structured_report import ReportOptions
from operators.sr.uids import UIDRoot


def write_config(folder: Path, change: dict[str, Any]) -> Path:
    """A copy of the app's config folder with ``change`` ({"section.key": value}, None deletes) applied."""
    shutil.copytree(CONFIG_DIR, folder)
    settings = json.loads((folder / "app.json").read_text())
    for dotted, value in change.items():
        *sections, key = dotted.split(".")
        target = settings
        for section in sections:
            target = target[section]
        if value is None:
            del target[key]
        else:
            target[key] = value
    (folder / "app.json").write_text(json.dumps(settings))
    return folder / "app.json"


def refused(path: Path, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"{path}: {message}")):
        AppSettings.load(path)


def test_the_apps_own_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    settings = AppSettings.load()
    assert settings == AppSettings.load(CONFIG_DIR / "app.json")
    assert settings.max_images_per_series == 16 and settings.batch_size == 8
    assert settings.backend.backend == "auto" and settings.backend.compile is False and settings.backend.cuda_graphs is False
    assert settings.deidentification.options == ProfileOptions()
    assert settings.deidentification.accept_burned_in_annotation is False
    assert settings.structured_report == ReportOptions(UIDRoot("2.25"), min_top_probability=0.5, min_margin=0.1)


def test_a_valid_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITE_SECRET", "s3cret")
    path = write_config(tmp_path / "config", {
        "sampling.max_images_per_series": 3, "inference.backend": "pytorch", "inference.precision": "bf16",
        "inference.compile": True, "inference.cuda_graphs": True, "inference.batch_size": 4,
        "deidentification.secret_env": "SITE_SECRET", "deidentification.accept_burned_in_annotation": True,
        "deidentification.options.retain_uids": True,
        "structured_report.uid_root": "1.2.826.0.1.3680043.10.999", "structured_report.min_top_probability": 0.7,
        "structured_report.min_margin": 0,
    })
    settings = AppSettings.load(path)
    assert settings.max_images_per_series == 3 and settings.batch_size == 4
    assert (settings.backend.backend, settings.backend.precision) == ("pytorch", "bf16")
    assert settings.backend.compile is True and settings.backend.cuda_graphs is True
    assert settings.deidentification.secret == b"s3cret" and settings.deidentification.accept_burned_in_annotation is True
    assert settings.deidentification.options == ProfileOptions(retain_uids=True)
    assert settings.structured_report == ReportOptions(UIDRoot("1.2.826.0.1.3680043.10.999"), min_top_probability=0.7, min_margin=0.0)


def test_optional_settings_take_their_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config", {"inference.precision": None, "inference.compile": None, "inference.cuda_graphs": None,
                                              "deidentification.accept_burned_in_annotation": None, "deidentification.options": None})
    settings = AppSettings.load(path)
    assert settings.backend.precision == "fp32" and settings.backend.compile is False and settings.backend.cuda_graphs is False
    assert settings.deidentification.options == ProfileOptions() and settings.deidentification.accept_burned_in_annotation is False
    no_section = write_config(tmp_path / "no_section", {"structured_report": None})
    assert AppSettings.load(no_section).structured_report == ReportOptions()


@pytest.mark.parametrize("key", ["inference.compile", "inference.cuda_graphs", "deidentification.accept_burned_in_annotation"])
@pytest.mark.parametrize("value", ["false", "true", 0, 1, []])
def test_a_switch_must_be_a_json_boolean(tmp_path: Path, key: str, value: Any) -> None:
    """``bool("false")`` is True: the string "false" must be refused, not read as on."""
    path = write_config(tmp_path / "config", {key: value})
    refused(path, f"{key}: must be true or false, not {value!r}")


@pytest.mark.parametrize("key", ["sampling.max_images_per_series", "inference.batch_size"])
@pytest.mark.parametrize("value", ["16", True, 2.5])
def test_a_count_must_be_a_json_integer(tmp_path: Path, key: str, value: Any) -> None:
    path = write_config(tmp_path / "config", {key: value})
    refused(path, f"{key}: must be an integer, not {value!r}")


@pytest.mark.parametrize("key", ["structured_report.min_top_probability", "structured_report.min_margin"])
@pytest.mark.parametrize("value", ["0.5", True, -0.1, 1.5])
def test_a_threshold_must_be_a_number_from_0_to_1(tmp_path: Path, key: str, value: Any) -> None:
    path = write_config(tmp_path / "config", {key: value})
    refused(path, f"{key}: must be a number from 0 to 1, not {value!r}")


@pytest.mark.parametrize("root", ["1.2.826.0.1.3680043.10.999.", "1.02", "2.25.x", 225])
def test_a_uid_root_that_is_not_one_is_refused(tmp_path: Path, root: Any) -> None:
    path = write_config(tmp_path / "config", {"structured_report.uid_root": root})
    problem = "must be a string" if isinstance(root, int) else f"{root!r} is not a UID root"
    refused(path, f"structured_report.uid_root: {problem}")


@pytest.mark.parametrize(
    "key",
    ["max_images", "structured_report.uid_prefix", "sampling.max_images", "inference.precison", "deidentification.accept_burned_in", "deidentification.options.retain_everything"],
)
def test_an_unknown_key_is_refused_by_name(tmp_path: Path, key: str) -> None:
    path = write_config(tmp_path / "config", {key: True})
    if key.startswith("deidentification.options."):  # checked against ProfileOptions' fields
        refused(path, f"deidentification.options: unknown de-identification option(s): {key.rsplit('.', 1)[1]}")
    else:
        refused(path, f"unknown setting(s): {key}")


def test_a_missing_setting_and_a_section_that_is_not_an_object_are_named(tmp_path: Path) -> None:
    refused(write_config(tmp_path / "a", {"inference.batch_size": None}), "missing setting inference.batch_size")
    refused(write_config(tmp_path / "b", {"sampling": 16}), "sampling: must be a JSON object, not 16")


def test_the_deidentification_settings_alone_are_read_as_strictly(tmp_path: Path) -> None:
    """``scripts/deidentify.py`` reads only the de-identification section, with the same checks."""
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"deidentification": {"secret_env": "NO_SUCH_ENV", "accept_burned_in_annotation": "false"}}))
    with pytest.raises(SettingsError, match=re.escape(f"{path}: deidentification.accept_burned_in_annotation: must be true or false")):
        DeidentificationSettings.load(path)
    path.write_text(json.dumps({"deidentification": {"secret_env": "NO_SUCH_ENV"}, "extra": 1}))
    with pytest.raises(SettingsError, match=re.escape(f"{path}: unknown setting(s): extra")):
        DeidentificationSettings.load(path)


def test_the_uid_secret_never_appears_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOMEDCLIP_DEID_SECRET", "site-key-do-not-log")
    settings = DeidentificationSettings.load(CONFIG_DIR / "app.json")
    assert settings.secret == b"site-key-do-not-log"
    assert "site-key-do-not-log" not in repr(settings) and "site-key" not in repr(AppSettings.load(CONFIG_DIR / "app.json"))


def test_unreadable_series_selection_rules_are_refused_naming_their_file(tmp_path: Path) -> None:
    (tmp_path / "rules.json").write_text('{"selections": [')
    data = json.loads((CONFIG_DIR / "app.json").read_text()) | {"series_selection_rules": "rules.json"}
    (tmp_path / "app.json").write_text(json.dumps(data))
    with pytest.raises(SettingsError, match=r"rules\.json: unreadable series selection rules"):
        AppSettings.load(tmp_path / "app.json")


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("inference.precision", "int8-dynamic", "unknown precision 'int8-dynamic'"),
    ("inference.backend", "tensorflow", "unknown backend 'tensorflow'"),
])
def test_an_unknown_backend_or_precision_is_one_error_naming_the_file(tmp_path: Path, key: str, value: str, problem: str) -> None:
    """Was a ValueError traceback from the backend spec (exit 1), not the settings' one line (exit 2)."""
    path = write_config(tmp_path / "config", {key: value})
    refused(path, f"inference: {problem}")


def test_a_bad_inference_value_beside_the_spec_is_named_once(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config", {"inference.compile": "yes"})
    with pytest.raises(SettingsError) as raised:
        AppSettings.load(path)
    assert str(raised.value).count(str(path)) == 1 and "inference.compile" in str(raised.value)
