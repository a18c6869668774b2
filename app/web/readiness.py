"""What the server has started, in the background: the warm model and the DICOMweb ingest, or why not."""

from __future__ import annotations

import logging
import threading
from typing import Any

from app.web.classifier import WarmModel
from app.web.config import WebConfig
from app.web.ingest import StowIngest
from app.web.problems import Problem

logger = logging.getLogger(__name__)


class Readiness:
    """The warm model and the ingest, once started; what went wrong if they could not be."""

    def __init__(self) -> None:
        self.model: WarmModel | None = None
        self.ingest: StowIngest | None = None
        self.error: str | None = None
        self.done = threading.Event()

    def start(self, config: WebConfig, model: WarmModel | None) -> None:
        try:
            self.model = model or WarmModel.load(config.model_dir, triton_server=config.triton_server)
            self.ingest = StowIngest(config.state_dir, config.model_dir, config.stow_quiet_period_s, config.job_timeout_s)
            self.ingest.start_workers()
        except Exception as exc:  # the package, the settings or the state folder: the probe says which
            self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            logger.error("Not ready: %s", self.error)
        finally:
            self.done.set()

    def require(self, attribute: str) -> Any:
        value = getattr(self, attribute)
        if value is None:
            raise Problem(503, f"not ready: {self.error or 'the model is loading'}", {"Retry-After": "5"})
        return value
