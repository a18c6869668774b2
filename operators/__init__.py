"""MONAI Deploy operators of the BiomedCLIP SR app, grouped by the stage of the pipeline they serve.

Each ``*_operator`` module here is a thin MONAI Deploy adapter over the pure code of one stage package,
which can be used and tested without Holoscan:

==============================  ==============  ========================================================
adapter                         stage package   what the stage does
==============================  ==============  ========================================================
``study_loader_operator``       ``intake``      inventory of the input, header checks before decoding
``series_selector_operator``    ``intake``      the SDK's series selection (rules in app/config)
``deidentification_operator``   ``deid``        admission (burned-in PHI) and PS3.15 Annex E de-identification
``preprocessing_operator``      ``imaging``     the sampling plan, decoding, grey levels, model input
``inference_operator``          ``inference``   model package, image-embedding backends, zero-shot head
``sr_writer_operator``          ``sr``          the TID 1500 Comprehensive 3D SR, re-identified
==============================  ==============  ========================================================

``ADAPTER_STAGES`` below is that table; ``tests/unit/test_architecture.py`` checks each adapter imports its
stage, and pyproject.toml's import contracts (run by scripts/test.sh) keep the stages layered
(intake < imaging < deid < inference < sr < run_report < adapters: the de-identifier carries
the sampling plan, made once before de-identification) with no core importing an adapter.
``run_report`` (run_report.json) and ``atomic`` (atomic file writes) serve every stage.
"""

ADAPTER_STAGES = {
    "study_loader_operator": "intake",
    "series_selector_operator": "intake",
    "deidentification_operator": "deid",
    "preprocessing_operator": "imaging",
    "inference_operator": "inference",
    "sr_writer_operator": "sr",
}
