#!/usr/bin/env bash
# One setup entry point: venv, torch, mmcv (built once into a wheel cache outside the repo), mmdet, harness.
# mmcv 2.1.0 ships only as source; torch 2.14 headers need C++20, so the build patches its -std flag.
# Each step's output (pip, the compiler's hundreds of warnings) goes to one log; the terminal gets one line per
# step with its duration, and on failure the log's path and its last lines.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=$(realpath -m "${HARNESS_VENV:-.venv}")
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH=2.14.1
TORCHVISION=0.29.1
MMCV=2.1.0
WHEELS=${HARNESS_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/harness/wheels/torch-$TORCH}
mkdir -p "$VENV"
LOG=${HARNESS_SETUP_LOG:-$VENV/setup.log}
: >"$LOG"
begin=$SECONDS

pip() { "$VENV/bin/python" -m pip "$@"; }

# step TEXT COMMAND...: COMMAND's output to the log, one line to the terminal; on failure the log's tail, exit.
step() {
    local text=$1 start=$SECONDS rc
    shift
    printf '\n=== %s: %s\n' "$(date -u +%FT%TZ)" "$text" >>"$LOG"
    set +e
    (set -e; "$@") >>"$LOG" 2>&1
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "setup: $text FAILED (exit $rc, after $((SECONDS - start)) s); log: $LOG, last lines:" >&2
        tail -n 30 "$LOG" | sed 's/^/  | /' >&2
        exit "$rc"
    fi
    echo "setup: $text ($((SECONDS - start)) s)"
}

build_mmcv() {
    local build
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    pip install "setuptools<70"  # mmcv 2.1 setup.py imports pkg_resources; torch pulls a newer setuptools
    pip download --no-deps --no-binary :all: --no-build-isolation -d "$build" "mmcv==$MMCV"
    tar -xzf "$build"/mmcv-$MMCV.tar.gz -C "$build"
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$build/mmcv-$MMCV/setup.py"
    (cd "$build/mmcv-$MMCV" && MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$VENV/bin/python" -m pip wheel --no-deps --no-build-isolation -w "$build/dist" .)
    mkdir -p "$WHEELS"
    mv "$build"/dist/mmcv-$MMCV-*.whl "$WHEELS/"
}

# has DIST VERSION: the venv has that version of a distribution (a second setup skips what is there)
has() { "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

if [ ! -x "$VENV/bin/python" ]; then
    step "venv $VENV" "$PY" -m venv "$VENV"
    step "pip, wheel" pip install --upgrade pip wheel
fi
new_torch=0
if has torch "$TORCH" && has torchvision "$TORCHVISION"; then
    echo "setup: torch $TORCH, torchvision $TORCHVISION (installed)"
else
    step "torch $TORCH, torchvision $TORCHVISION" pip install "torch==$TORCH" "torchvision==$TORCHVISION"
    new_torch=1
fi
if [ "$new_torch" = 0 ] && has mmcv "$MMCV"; then
    echo "setup: mmcv $MMCV (installed)"
else
    if ! ls "$WHEELS"/mmcv-$MMCV-*.whl >/dev/null 2>&1; then
        echo "setup: building mmcv $MMCV with ops for torch $TORCH, once (15-30 min on 2 cores; tail -f $LOG)"
        step "mmcv $MMCV wheel built into $WHEELS" build_mmcv
    fi
    again=()  # an mmcv built for another torch is replaced by this torch's build
    if has mmcv "$MMCV"; then again=(--force-reinstall --no-deps); fi
    step "mmcv $MMCV from $WHEELS" pip install "${again[@]}" "$WHEELS"/mmcv-$MMCV-*.whl
fi
# the editable install follows the code; only pyproject.toml (dependencies, entry points) needs it again
stamp="$VENV/.harness-pyproject.sha256"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
if [ "$(cat "$stamp" 2>/dev/null)" = "$(sha256sum pyproject.toml)" ] && has harness "$version"; then
    echo "setup: harness, mmdet and the other dependencies (installed; pyproject.toml unchanged)"
else
    step "harness, mmdet and the other dependencies (pip install -e .[dev,ray])" pip install -e ".[dev,ray]"
    sha256sum pyproject.toml >"$stamp"
fi
step "import check (mmcv.ops, mmdet, harness)" "$VENV/bin/python" -c \
    "import mmcv, mmcv.ops, mmdet, harness.cli; print('setup: mmcv', mmcv.__version__, 'mmdet', mmdet.__version__)"
echo "$(tail -n 1 "$LOG"): ready in $((SECONDS - begin)) s (log: $LOG)"
