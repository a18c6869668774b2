"""Application settings: ``app/config/app.json``, or the file named by ``BIOMEDCLIP_APP_CONFIG``.

Read strictly, as the listener's settings are (``app/listener/config.py``): an unknown key, at the top
level or in any section, is refused rather than ignored (a misspelt setting would otherwise silently
keep its default), and each value must have its JSON type — ``true``/``false`` for switches (the
string "false" is not false), an integer for counts. Every error names the file and the setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operators.deid.profile import ProfileOptions
from operators.inference.backends.base import BackendSpec
from operators.sr.structured_report import ReportOptions
from operators.sr.uids import UIDRoot

CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_ENV = "BIOMEDCLIP_APP_CONFIG"
#: Every key the file may hold, per section ("" is the top level); ``deidentification.options`` are
#: checked by ``ProfileOptions.from_mapping`` against its fields.
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "": ("series_selection_rules", "sampling", "inference", "deidentification", "structured_report"),
    "sampling": ("max_images_per_series",),
    "inference": ("backend", "precision", "compile", "cuda_graphs", "batch_size", "triton_fallback"),
    "deidentification": ("secret_env", "accept_burned_in_annotation", "options"),
    "structured_report": ("uid_root", "min_top_probability", "min_margin"),
}


def config_path(path: Path | None = None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or CONFIG_DIR / "app.json")


class SettingsError(ValueError):
    """A setting is unknown, missing or of the wrong type; the message names the file and the setting."""


@dataclass(frozen=True)
class _Section:
    """One JSON object of the settings file, read with its type checks; ``name`` is its dotted key."""

    path: Path
    values: Mapping[str, Any]
    name: str = ""

    @classmethod
    def read(cls, path: Path) -> _Section:
        """The file's top-level object, its keys checked."""
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: expected a JSON object")
        section = cls(path, data)
        section.only(KNOWN_KEYS[""])
        return section

    def key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def error(self, key: str, problem: str) -> SettingsError:
        return SettingsError(f"{self.path}: {self.key(key)}: {problem}")

    def only(self, known: tuple[str, ...]) -> None:
        """Refuse any key outside ``known``, naming it (as ``app/listener/config.py`` does)."""
        unknown = sorted(set(self.values) - set(known))
        if unknown:
            raise SettingsError(f"{self.path}: unknown setting(s): {', '.join(map(self.key, unknown))}")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.values:
            return self.values[key]
        if default is None:
            raise SettingsError(f"{self.path}: missing setting {self.key(key)}")
        return default

    def section(self, key: str, default: Mapping[str, Any] | None = None) -> _Section:
        """The object at ``key``, its keys checked against ``KNOWN_KEYS`` where listed."""
        value = self._get(key, default)
        if not isinstance(value, dict):
            raise self.error(key, f"must be a JSON object, not {value!r}")
        section = _Section(self.path, value, self.key(key))
        if section.name in KNOWN_KEYS:
            section.only(KNOWN_KEYS[section.name])
        return section

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key, None)
        if isinstance(value, bool) or not isinstance(value, int):  # bool is an int in Python, not in JSON
            raise self.error(key, f"must be an integer, not {value!r}")
        return value

    def fraction(self, key: str, default: float) -> float:
        """A number from 0 to 1 (a probability or a difference of two)."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self.error(key, f"must be a number from 0 to 1, not {value!r}")
        return float(value)

    def string(self, key: str, default: str | None = None) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {value!r}")
        return value


@dataclass(frozen=True)
class DeidentificationSettings:
    """The ``deidentification`` section: the UID key's environment variable, the PS3.15 E.3 options, and
    whether images that may carry burned-in PHI are accepted (default: refused)."""

    secret: bytes | None = field(repr=False)  # the site's UID key: never in a log or a traceback
    options: ProfileOptions
    accept_burned_in_annotation: bool

    @classmethod
    def _from_section(cls, section: _Section) -> DeidentificationSettings:
        accept = section.boolean("accept_burned_in_annotation", False)
        secret = os.environ.get(section.string("secret_env"), "")
        options = section.section("options", {})
        try:
            profile_options = ProfileOptions.from_mapping(options.values)  # refuses unknown and non-boolean options
        except ValueError as exc:
            raise SettingsError(f"{section.path}: {options.name}: {exc}") from None
        return cls(secret.encode() or None, profile_options, accept)

    @classmethod
    def load(cls, path: Path | None = None) -> DeidentificationSettings:
        """The ``deidentification`` section alone (``scripts/deidentify.py``); the file's top-level keys are checked too."""
        return cls._from_section(_Section.read(config_path(path)).section("deidentification"))


def _report_options(section: _Section) -> ReportOptions:
    """The ``structured_report`` section; every key optional (``ReportOptions``'s defaults)."""
    defaults = ReportOptions()
    try:
        uid_root = UIDRoot(section.string("uid_root", defaults.uid_root.root))
    except ValueError as exc:
        raise section.error("uid_root", str(exc)) from None
    return ReportOptions(
        uid_root=uid_root,
        min_top_probability=section.fraction("min_top_probability", defaults.min_top_probability),
        min_margin=section.fraction("min_margin", defaults.min_margin),
    )


@dataclass(frozen=True)
class AppSettings:
    series_selection_rules: str  # JSON text for the SDK's DICOMSeriesSelectorOperator
    max_images_per_series: int
    backend: BackendSpec
    batch_size: int
    deidentification: DeidentificationSettings
    structured_report: ReportOptions

    @classmethod
    def load(cls, path: Path | None = None) -> AppSettings:
        path = config_path(path)
        data = _Section.read(path)
        rules_path = path.parent / data.string("series_selection_rules")
        try:  # fail at start-up, naming the file, rather than inside the graph
            rules = rules_path.read_text()
            json.loads(rules)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{rules_path}: unreadable series selection rules ({exc})") from None
        inference = data.section("inference")
        backend, precision = inference.string("backend"), inference.string("precision", "fp32")
        compile_torch, cuda_graphs = inference.boolean("compile", False), inference.boolean("cuda_graphs", False)
        # with -t: an unusable Triton server means running on this local backend instead of exit 2
        triton_fallback = inference.boolean("triton_fallback", False)
        try:  # after the reads: their SettingsError is a ValueError too, and already one line
            spec = BackendSpec(backend, precision, compile_torch, cuda_graphs, triton_fallback=triton_fallback)
        except ValueError as exc:  # an unknown backend or precision: one line at start-up, not a traceback
            raise SettingsError(f"{path}: inference: {exc}") from None
        return cls(
            series_selection_rules=rules,
            max_images_per_series=data.section("sampling").integer("max_images_per_series"),
            backend=spec,
            batch_size=inference.integer("batch_size"),
            deidentification=DeidentificationSettings._from_section(data.section("deidentification")),
            structured_report=_report_options(data.section("structured_report", {})),
        )
