#!/usr/bin/env bash
# Run the test suite (sets up first if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
HF_HUB_OFFLINE=1 exec .venv/bin/python -m pytest -q tests "$@"
