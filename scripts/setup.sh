#!/usr/bin/env bash
# Idempotent set-up: Python venv with the pinned requirements, and (as root) the DICOM tools the
# tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
# The Triton Inference Server's own environment (requirements-triton.txt says why it is separate):
# python -m app.inference_server and the Triton tests run the server from it.
stamp=.venv-triton/.requirements.sha256
want=$(sha256sum requirements-triton.txt | cut -d' ' -f1)
if [ ! -x .venv-triton/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$PYTHON" -m venv .venv-triton
  .venv-triton/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-triton.txt
  echo "$want" > "$stamp"
fi
# This checkout's packages (pyproject.toml), so that scripts/, benchmarks/ and tests/ import them without path patches.
here=$(pwd)
if [ "$(cd / && "$here/.venv/bin/python" -c 'import operators, os; print(os.path.dirname(os.path.dirname(operators.__file__)))' 2>/dev/null)" != "$here" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
fi

# dciodvfy (dicom3tools) validates the SRs in the tests; dcmtk and Orthanc are real DICOM network peers.
if { ! command -v dciodvfy || ! command -v storescp || ! command -v Orthanc || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; } >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup.sh: running as root: apt-get installing dicom3tools (dciodvfy validates the SRs in the tests)," \
       "dcmtk (storescp/storescu/dsrdump: DICOM peers and the SR dump), orthanc (a PACS for the network tests;" \
       "its service is not started) and orthanc-dicomweb (its DICOMweb plugin, a peer of the web face)." \
       "Run as a normal user to skip this; the app itself needs none of them." >&2
  # Orthanc's package would start a service listening on all interfaces: tell invoke-rc.d not to.
  no_services=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; no_services=1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools dcmtk orthanc orthanc-dicomweb >/dev/null
  [ -z "$no_services" ] || rm -f /usr/sbin/policy-rc.d
fi

# chromium: the headless browser that tests the web demo (playwright drives the system browser; no browser download).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup.sh: running as root: apt-get installing chromium (the headless browser for the web demo test)." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# jq: the MAP's entrypoint script (holoscan-cli's `tools`) reads app.json with it; a packaging test runs it.
if ! command -v jq >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup.sh: running as root: apt-get installing jq (the MAP entrypoint's JSON reader, for the packaging test)." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
fi
