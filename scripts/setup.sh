#!/usr/bin/env bash
# One setup entry point: venv, torch, mmcv (built once into a wheel cache outside the repo), mmdet, harness.
# mmcv 2.1.0 ships only as source; torch 2.14 headers need C++20, so the build patches its -std flag.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=$(realpath -m "${HARNESS_VENV:-.venv}")
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH=2.14.1
TORCHVISION=0.29.1
MMCV=2.1.0
WHEELS=${HARNESS_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/harness/wheels/torch-$TORCH}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip wheel
pip install -q "torch==$TORCH" "torchvision==$TORCHVISION"

mkdir -p "$WHEELS"
if ! ls "$WHEELS"/mmcv-$MMCV-*.whl >/dev/null 2>&1; then
    echo "setup: building mmcv $MMCV with ops for torch $TORCH (once; 15-30 min on 2 cores)"
    pip install -q "setuptools<70"  # mmcv 2.1 setup.py imports pkg_resources; torch pulls a newer setuptools
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$build" "mmcv==$MMCV"
    tar -xzf "$build"/mmcv-$MMCV.tar.gz -C "$build"
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$build/mmcv-$MMCV/setup.py"
    (cd "$build/mmcv-$MMCV" && MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$build/dist" .)
    mv "$build"/dist/mmcv-$MMCV-*.whl "$WHEELS/"
fi
pip install -q "$WHEELS"/mmcv-$MMCV-*.whl
pip install -q -e ".[dev,ray]"
"$VENV/bin/python" -c "import mmcv.ops, mmdet; print('setup: mmcv', mmcv.__version__, 'mmdet', mmdet.__version__)"
