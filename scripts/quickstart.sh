#!/usr/bin/env bash
# Set up (venv, dependencies, random-weight model package, sample study) and run the app on the
# embedded sample study. Prints where the SR is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1  # everything runs offline
if [ ! -f models/biomedclip/manifest.json ]; then
  .venv/bin/python scripts/build_model.py --random-init --seed 0 --variants int8-dynamic --out models/biomedclip
fi
if [ ! -d sample_study ]; then
  .venv/bin/python scripts/make_sample_study.py sample_study
fi
rm -rf output
.venv/bin/python app -i sample_study -o output -m models/biomedclip
