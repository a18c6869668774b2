#!/usr/bin/env bash
# Run the code checks and the test suite (sets up first if needed). Arguments go to pytest, e.g. the fast
# loop without the app runs, model builds and network peers: bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
HF_HUB_OFFLINE=1 exec .venv/bin/python -m pytest -q tests "$@"
