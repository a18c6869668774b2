"""Application settings: ``app/config/app.json``, or the file named by ``BIOMEDCLIP_APP_CONFIG``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from operators.backends import BackendSpec

CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_ENV = "BIOMEDCLIP_APP_CONFIG"


@dataclass(frozen=True)
class AppSettings:
    series_selection_rules: str  # JSON text for the SDK's DICOMSeriesSelectorOperator
    max_images_per_series: int
    backend: BackendSpec
    batch_size: int
    deid_secret: bytes | None

    @classmethod
    def load(cls, path: Path | None = None) -> "AppSettings":
        path = Path(path or os.environ.get(CONFIG_ENV) or CONFIG_DIR / "app.json")
        data = json.loads(path.read_text())
        rules_path = path.parent / data["series_selection_rules"]
        rules = rules_path.read_text()
        json.loads(rules)  # fail at start-up, naming the file, rather than inside the graph
        secret = os.environ.get(data["deidentification"]["secret_env"], "")
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
            deid_secret=secret.encode() or None,
        )
