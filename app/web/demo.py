"""The Gradio demo at ``/demo``: look at one image's predictions, and compare the backends on it.

Upload a DICOM, PNG or JPEG file, or take the embedded sample (``app.sample_study.DEMO_IMAGE``); the
image is read exactly as ``/api/v1/classify`` reads it (``app.web.classifier``), so the demo shows what
the model saw (after windowing, resize and crop), the probabilities as a bar chart, the top label, the
backend and the latency. "Compare backends" runs the image on every backend and precision of the
registry that loads here and shows the probabilities side by side, with the cosine of each image
embedding against the fp32 graph's.

Offline: Gradio's analytics are off (``GRADIO_ANALYTICS_ENABLED`` before the import, and
``analytics_enabled=False``), the theme uses the system's fonts (no Google Fonts), server-side
rendering is off (it would need Node).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from app.sample_study import DEMO_IMAGE  # noqa: E402
from app.web.classifier import InputRefused, WarmModel, read_input  # noqa: E402

if TYPE_CHECKING:
    from fastapi import FastAPI

    from app.web.readiness import Readiness

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
SYSTEM_MONO = ["ui-monospace", "monospace"]
NO_TEXT_ENCODER = ("**Label prompts are fixed.** This model package carries no text encoder: each label's prompts were "
                   "encoded when the package was built, so they cannot be edited here. To change them, edit "
                   "`models/labels.json` and rebuild the package (`scripts/build_model.py --labels`).")


def _model(readiness: Readiness) -> WarmModel:
    if readiness.model is None:
        raise gr.Error(f"not ready: {readiness.error or 'the model is loading'}")
    return readiness.model


def _read(model: WarmModel, path: str | None) -> Any:
    if not path:
        raise gr.Error("upload a DICOM, PNG or JPEG file, or take the sample")
    try:
        return read_input(Path(path).read_bytes(), model.settings)
    except InputRefused as exc:
        raise gr.Error(f"refused: {exc}") from None


def classify(readiness: Readiness, path: str | None) -> tuple[Any, pd.DataFrame, str]:
    model = _model(readiness)
    model_input = _read(model, path)
    prediction = model.predict(model_input)
    names = model.package.labels.names
    chart = pd.DataFrame({"label": names, "probability": prediction.probabilities.astype(float)})
    top = names[int(prediction.probabilities.argmax())]
    frame = f", frame {model_input.frame} of {model_input.frames}" if model_input.frame else ""
    summary = (f"**Top label: {top}** ({prediction.probabilities.max():.1%})  \n"
               f"Input: {model_input.kind}{frame} · backend `{prediction.backend}` · "
               f"latency {model_input.seconds * 1000:.0f} ms read + {prediction.seconds * 1000:.0f} ms inference")
    if model.random_weights_warning:
        summary += f"  \n⚠ {model.random_weights_warning}"
    return model_input.as_seen(), chart, summary


def compare(readiness: Readiness, path: str | None) -> pd.DataFrame:
    model = _model(readiness)
    model_input = _read(model, path)
    names = model.package.labels.names
    rows = []
    for spec, outcome, cosine in model.compare(model_input):
        row: dict[str, Any] = {"backend": spec.backend, "precision": spec.precision}
        if isinstance(outcome, str):
            rows.append({**row, "cosine vs fp32": None, "top label": "", "ms": None, "status": f"unavailable: {outcome}"})
            continue
        probabilities = {name: round(float(p), 4) for name, p in zip(names, outcome.probabilities)}
        rows.append({**row, "cosine vs fp32": round(cosine or 0.0, 6), "top label": names[int(outcome.probabilities.argmax())],
                     "ms": round(outcome.seconds * 1000, 1), "status": outcome.backend, **probabilities})
    return pd.DataFrame(rows)


def build(readiness: Readiness) -> gr.Blocks:
    with gr.Blocks(analytics_enabled=False, title="BiomedCLIP zero-shot demo") as demo:
        gr.Markdown("# BiomedCLIP zero-shot — research use only\nOne image in: what the model saw, and its label probabilities.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="DICOM, PNG or JPEG", type="filepath", elem_id="upload")
                with gr.Row():
                    sample = gr.Button("Use the sample (CT, sample study)", elem_id="sample")
                    run = gr.Button("Classify", variant="primary", elem_id="classify")
                    versus = gr.Button("Compare backends", elem_id="compare")
            seen = gr.Image(label="As the model saw it (224 × 224, after windowing, resize and crop)", elem_id="seen",
                            interactive=False)
        summary = gr.Markdown(elem_id="summary")
        chart = gr.BarPlot(x="label", y="probability", y_lim=[0, 1], label="Probabilities", elem_id="chart", sort="-y")
        table = gr.Dataframe(label="Backends side by side (cosine of the image embedding vs ONNX Runtime fp32)",
                             elem_id="comparison", interactive=False, wrap=True)
        with gr.Accordion("Label prompts", open=False):
            gr.Markdown(NO_TEXT_ENCODER)
            prompts = gr.Dataframe(interactive=False, wrap=True, elem_id="prompts")

        sample.click(lambda: str(DEMO_IMAGE), outputs=upload).then(
            lambda path: classify(readiness, path), inputs=upload, outputs=[seen, chart, summary])
        run.click(lambda path: classify(readiness, path), inputs=upload, outputs=[seen, chart, summary])
        versus.click(lambda path: compare(readiness, path), inputs=upload, outputs=table)
        demo.load(lambda: _prompts(readiness), outputs=prompts)  # at page load: the package loads beside the server's start
    return demo


def _prompts(readiness: Readiness) -> pd.DataFrame:
    labels = _model(readiness).package.labels.labels
    return pd.DataFrame({"label": [label.name for label in labels], "prompts": [" | ".join(label.prompts) for label in labels]})


def mount_demo(app: FastAPI, readiness: Readiness) -> None:
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO)
    gr.mount_gradio_app(app, build(readiness), path="/demo", theme=theme, ssr_mode=False, footer_links=[],
                        allowed_paths=[str(DEMO_IMAGE.parent)])
