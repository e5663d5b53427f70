#!/usr/bin/env bash
# One GPU-machine call for issue 13 ("On a GPU machine"), at most ~9 minutes:
#   1. prepare NEU-Seg from the carried release (.neu/) and check its fingerprint against this machine's,
#   2. fit the two full-image CycleGANs of configs/matrix/neu-seg-cyclegan-full8.yaml (`--only fit`, both at
#      once on the one GPU) until FIT_SECONDS; each fit folder comes back in $OUT/fits.tgz.part-* (finished, or
#      its .partial with checkpoint.pt, which resumes exactly on the next call or on the CPU),
#   3. time the `seed` segmenter profile's training s/iter, fp32 and bf16, batch 1 and 4
#      (benchmarks/train_speed.py), and the full8 profiles' CycleGAN s/iter (benchmarks/cyclegan.py).
# Back here: cat $OUT/fits.tgz.part-* | tar xzf - -C ~/.cache/harness/stages   (then `harness run` the matrix)
# Usage: scripts/gpu_cyclegan.sh EXPECTED_DATASET_FINGERPRINT [FIT_SECONDS]      (writes into $OUT)
# Needs python3 with torch, torchvision, opencv, numpy on the GPU machine; .whl/ may carry wheels of the rest.
# DEVICE=cpu SPEED_PROFILE=tiny SPEED_ITERS=1 CG_ITERS=1 scripts/gpu_cyclegan.sh FP 30 checks the script itself on a machine without a GPU.
set -uo pipefail
expected=${1:?dataset fingerprint expected}
fit_seconds=${2:-360}
OUT=${OUT:-/tmp/out}
DEVICE=${DEVICE:-cuda}
SPEED_ITERS=${SPEED_ITERS:-20}
SPEED_PROFILE=${SPEED_PROFILE:-seed}
CG_ITERS=${CG_ITERS:-20}
WORK=${WORK:-/tmp/gpu-cyclegan}
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
start=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl || exit 1
fi
export PYTHONPATH=$WORK/site:$PWD PYTHONUNBUFFERED=1 HARNESS_CACHE=$WORK/cache OMP_WAIT_POLICY=PASSIVE
export HARNESS_PLUGINS=plugins.degradations,plugins.adapters,plugins.segmenters
harness() { $PY -m harness.cli "$@"; }
[ "$DEVICE" = cpu ] || nvidia-smi -L
$PY -c "import torch, torchvision, cv2, numpy; print('torch', torch.__version__, 'tv', torchvision.__version__,
      'cv2', cv2.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"

harness data prepare neu-seg .neu --out "$WORK/neu" --quiet --json > "$OUT/prepare.json" || exit 1
got=$($PY -c "from harness.data.coco import dataset_fingerprint as f; print(f('$WORK/neu'))")
echo "dataset fingerprint here $got, expected $expected ($(( $(date +%s) - start )) s)"
# fit keys do not depend on the segmenter: plan with tv-mask-rcnn, which needs no mmengine to fingerprint
sed -e "s#^dataset: .*#dataset: $WORK/neu#" -e "s#mmdet-mask-rcnn#tv-mask-rcnn#" \
    configs/matrix/neu-seg-cyclegan-full8.yaml > "$WORK/full8.yaml"
if [ "$got" = "$expected" ]; then
    timeout "$fit_seconds" $PY -m harness.cli run "$WORK/full8.yaml" --only fit --workers 2 --device "$DEVICE" \
        > "$OUT/fits.log" 2>&1
    echo "fits: exit $? ($(( $(date +%s) - start )) s)"; grep -h "iter" "$WORK"/cache/fit/*/train.log 2>/dev/null | tail -4
else
    echo "fingerprint differs: fits skipped (their keys would not be this machine's)"
fi
$PY benchmarks/train_speed.py --profile "$SPEED_PROFILE" --batches 1,4 --iters "$SPEED_ITERS" --device "$DEVICE" \
    > "$OUT/train-speed.txt" 2>&1; cat "$OUT/train-speed.txt"
$PY benchmarks/cyclegan.py --device "$DEVICE" --profiles cpu-full8,cpu-residual-full8 \
    --iters cpu-full8=$CG_ITERS,cpu-residual-full8=$CG_ITERS > "$OUT/cyclegan-bench.txt" 2>&1; tail -8 "$OUT/cyclegan-bench.txt"
# files come back at most 16 MiB each; fit-target/ holds B images a resumed fit re-creates
tar czf "$WORK/fits.tgz" --exclude=fit-target -C "$WORK/cache" fit 2>/dev/null && \
    split -b 15M "$WORK/fits.tgz" "$OUT/fits.tgz.part-"
ls -la "$OUT"; echo "total $(( $(date +%s) - start )) s"
