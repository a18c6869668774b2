#!/usr/bin/env bash
# benchmarks/triton_gpu.py on a GPU machine that has torch (CUDA), timm, onnx and numpy but no open_clip,
# pydicom or Triton, and no network: what it needs is carried in .whl/ (see BENCHMARKS.md "Triton on a GPU"):
#   .whl/pytriton-slim.tar.xz  the nvidia-pytriton 0.7.0 wheel unpacked, without other Pythons' stubs and libpython
#   .whl/site/                 pip install --no-deps --target .whl/site open_clip_torch ftfy wcwidth pydicom
# Usage (the device tool's $OUT receives the JSON): bash benchmarks/triton_gpu_device.sh "$OUT" [triton_gpu run options]
set -euo pipefail
out=${1:?output folder}
work=$(mktemp -d)
python=$(command -v python3)
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# the server's Python environment is this interpreter's (app/inference_server/distribution.py: TRITON_PYTHON)
tar -xJf .whl/pytriton-slim.tar.xz -C "$site"
cp -r .whl/site/. "$site/"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRITON_PYTHON=$python
"$python" scripts/build_model.py --random-init --seed 0 --out "$work/biomedclip"
"$python" -m benchmarks.triton_gpu run --package "$work/biomedclip" --out "$out/triton_gpu.json" "${@:2}"
