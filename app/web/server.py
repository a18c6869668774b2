"""The FastAPI application: the JSON API, DICOMweb, probes, metrics, the guard and the demo.

The model package and its backend are loaded once, in a thread started with the server, so the probes
answer at once: ``/healthz`` says the process serves, ``/readyz`` that the model is loaded and the
DICOMweb workers run (503 until then; 503 for good, with the reason, if the model cannot load).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import __version__
from app.web import api, dicomweb, problems
from app.web.classifier import WarmModel
from app.web.config import WebConfig
from app.web.metrics import Metrics
from app.web.readiness import Readiness
from app.web.security import Guard

logger = logging.getLogger(__name__)


def body_limit(config: WebConfig) -> Callable[[str], int]:
    def limit(path: str) -> int:
        if path == "/api/v1/classify":
            return config.max_classify_bytes
        if path == "/dicomweb/studies":
            return config.max_stow_bytes
        return config.max_other_bytes
    return limit


def create_app(config: WebConfig, model: WarmModel | None = None) -> FastAPI:
    """The application; ``model``: an already loaded one (tests), else loaded at start-up."""
    readiness, metrics = Readiness(), Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=readiness.start, args=(config, model), name="web-model-loader", daemon=True).start()
        yield
        if readiness.ingest is not None:
            readiness.ingest.stop()

    app = FastAPI(title="BiomedCLIP zero-shot (research use only)", version=__version__, lifespan=lifespan,
                  description="Zero-shot classification of DICOM, PNG and JPEG images, and a DICOMweb subset. docs/web.md")
    app.state.metrics = metrics
    app.state.readiness = readiness
    app.state.model = lambda: readiness.require("model")
    app.state.ingest = lambda: readiness.require("ingest")
    problems.install(app)
    app.include_router(api.router)
    app.include_router(dicomweb.router)

    @app.get("/healthz", tags=["probes"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], summary="Readiness: the model is loaded and DICOMweb runs")
    def readyz() -> JSONResponse:
        if readiness.model is None or readiness.ingest is None:
            return problems.problem_response(503, f"not ready: {readiness.error or 'the model is loading'}")
        return JSONResponse({"status": "ready", "backend": readiness.model.backend.name})

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics (text exposition format)")
    def prometheus(request: Request) -> Response:
        if readiness.ingest is not None:
            for state, count in readiness.ingest.states().items():
                metrics.jobs.labels(state).set(count)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if config.demo:
        try:
            from app.web.demo import mount_demo  # imports Gradio: seconds
        except ImportError:  # not in the MAP container (deploy/not-in-container.txt)
            logger.warning("Gradio is not installed: the demo is not mounted at /demo")
        else:
            mount_demo(app, readiness)
    if config.cors_origins:  # off unless origins are configured
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, config=config, body_limit=body_limit(config), observe=metrics.observe_request)
    return app
