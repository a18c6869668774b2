"""Application settings: ``app/config/app.json``, or the file named by ``BIOMEDCLIP_APP_CONFIG``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from operators.inference.backends.base import BackendSpec
from operators.deid.profile import ProfileOptions

CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_ENV = "BIOMEDCLIP_APP_CONFIG"


def config_path(path: Path | None = None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or CONFIG_DIR / "app.json")


@dataclass(frozen=True)
class DeidentificationSettings:
    """The ``deidentification`` section: the UID key's environment variable, the PS3.15 E.3 options, and
    whether images that may carry burned-in PHI are accepted (default: refused)."""

    secret: bytes | None
    options: ProfileOptions
    accept_burned_in_annotation: bool

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "DeidentificationSettings":
        accept = section.get("accept_burned_in_annotation", False)
        if not isinstance(accept, bool):
            raise ValueError(f"deidentification.accept_burned_in_annotation must be true or false, not {accept!r}")
        secret = os.environ.get(section["secret_env"], "")
        return cls(secret.encode() or None, ProfileOptions.from_mapping(section.get("options", {})), accept)

    @classmethod
    def load(cls, path: Path | None = None) -> "DeidentificationSettings":
        path = config_path(path)
        return cls.from_section(json.loads(path.read_text())["deidentification"])


@dataclass(frozen=True)
class AppSettings:
    series_selection_rules: str  # JSON text for the SDK's DICOMSeriesSelectorOperator
    max_images_per_series: int
    backend: BackendSpec
    batch_size: int
    deidentification: DeidentificationSettings

    @classmethod
    def load(cls, path: Path | None = None) -> "AppSettings":
        path = config_path(path)
        data = json.loads(path.read_text())
        rules_path = path.parent / data["series_selection_rules"]
        rules = rules_path.read_text()
        json.loads(rules)  # fail at start-up, naming the file, rather than inside the graph
        return cls(
            series_selection_rules=rules,
            max_images_per_series=int(data["sampling"]["max_images_per_series"]),
            backend=BackendSpec(
                backend=str(data["inference"]["backend"]),
                precision=str(data["inference"].get("precision", "fp32")),
                compile=bool(data["inference"].get("compile", False)),
                cuda_graphs=bool(data["inference"].get("cuda_graphs", False)),
            ),
            batch_size=int(data["inference"]["batch_size"]),
            deidentification=DeidentificationSettings.from_section(data["deidentification"]),
        )
