"""The HTTP face (``python -m app.web --port N -m MODEL_DIR``): a JSON API (``/api/v1``), a DICOMweb
subset (PS3.18: STOW-RS, WADO-RS, QIDO-RS) fed into the listener's spool/journal/job path, health
probes, Prometheus metrics and a Gradio demo at ``/demo``. How to run it and its limits: docs/web.md."""
