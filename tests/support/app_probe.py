"""Run the app exactly as ``python app -i IN -o OUT -m MODELS`` does, and record what reaches the operators
after de-identification: the datasets the preprocessing operator receives and the series the inference
operator receives (without pixel arrays), pickled to ``$APP_PROBE_OUT``.

The real operators run unchanged; the probe wraps the two functions they call.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
from pathlib import Path

import numpy as np

import operators.inference_operator as inference_operator
import operators.preprocessing_operator as preprocessing_operator

ROOT = Path(__file__).resolve().parents[2]

seen: dict[str, list] = {"preprocessing": [], "inference": []}
real_preprocess, real_classify = preprocessing_operator.preprocess_series, inference_operator.classify_series


def preprocess_series(study_uid, series_uid, datasets, *args, **kwargs):
    seen["preprocessing"].append((study_uid, series_uid, datasets))
    return real_preprocess(study_uid, series_uid, datasets, *args, **kwargs)


def classify_series(series, *args, **kwargs):
    seen["inference"].append(dataclasses.replace(series, pixel_values=np.empty(0)))
    return real_classify(series, *args, **kwargs)


preprocessing_operator.preprocess_series = preprocess_series
inference_operator.classify_series = classify_series

if __name__ == "__main__":
    from app.__main__ import main

    sys.argv = [str(ROOT / "app"), *sys.argv[1:]]
    status = main()
    Path(os.environ["APP_PROBE_OUT"]).write_bytes(pickle.dumps(seen))
    sys.exit(status)
