#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, set up, then time the three things a full study spends its GPU
# hours on, on NEU-Seg:
#   1. the segmenter `seed` profile (R50-FPN Mask R-CNN, 640 px, batch 4) for SEG_ITERS iterations,
#   2. the CycleGAN `seed` profile for CG_ITERS iterations (and its generator's inference speed),
#   3. the inference of a small matrix (clean and domain_b s3, identity and nlm, 200 test images),
# and print s/iter and images/s for each. Figures go to stdout and $OUT/gpu-check.txt.
#
# Usage: benchmarks/gpu_check.sh [NEU_SEG_RELEASE_DIR]        (default ../shared/datasets/neu-seg)
#        SEG_ITERS=200 CG_ITERS=200 DEVICE=cuda WORK=/tmp/gpu-check OUT=. benchmarks/gpu_check.sh ...
# DEVICE=cpu SEG_ITERS=2 CG_ITERS=2 SAMPLE=4 checks the script itself on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
NEU=${1:-../shared/datasets/neu-seg}
SEG_ITERS=${SEG_ITERS:-200}
CG_ITERS=${CG_ITERS:-200}
SAMPLE=${SAMPLE:-200}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/gpu-check}
OUT=${OUT:-.}
mkdir -p "$WORK" "$OUT"
export HARNESS_CACHE=$WORK/cache PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE

[ -x .venv/bin/harness ] || scripts/setup.sh          # once: venv, torch, mmcv (compiled), mmdet, harness
# shellcheck disable=SC1091
source .venv/bin/activate
if [ "$DEVICE" != cpu ]; then nvidia-smi -L; fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

[ -f "$WORK/neu/test.json" ] || harness data prepare neu-seg "$NEU" --out "$WORK/neu" --quiet > /dev/null

cat > "$WORK/matrix.yaml" <<YAML
name: gpu-check
dataset: $WORK/neu
sample: $SAMPLE
segmenters:
  - name: mmdet-mask-rcnn
    profile: seed
    params: {max_iters: $SEG_ITERS}
adapters: [identity, nlm]
degradations: [none, {name: domain_b, severities: [3]}]
YAML
start=$(date +%s)
harness run "$WORK/matrix.yaml" --out "$WORK/run" --device "$DEVICE" --quiet
echo "matrix: $(( $(date +%s) - start )) s wall"

python benchmarks/cyclegan.py --device "$DEVICE" --profiles seed --iters "seed=$CG_ITERS" --dncnn-iters 0 \
    --data "$WORK/neu/images/test" --images 32 > "$WORK/cyclegan.txt"

python - "$WORK" "$DEVICE" "$SAMPLE" <<'PY' | tee "$OUT/gpu-check.txt"
import json, sys
from pathlib import Path

work, device, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cells = [json.loads(l) for l in (work / "run" / "cells.jsonl").read_text().splitlines()]
cache = work / "cache"
train = json.loads((cache / "train" / cells[0]["stages"]["train"] / "train_stats.json").read_text())
print(f"device {device}")
print(f"segmenter seed profile: {train['s_per_iter']:.3f} s/iter (median {train['s_per_iter_median']:.3f}, "
      f"{train['timed_iters']} timed iterations, batch 4, 640 px)")
for c in cells:
    seconds = float((cache / "predict" / c["stages"]["predict"] / "seconds.txt").read_text())
    adapt = cache / "adapt" / c["stages"]["adapt"] / "seconds.txt"
    a = float(adapt.read_text()) if adapt.is_file() else 0.0
    print(f"inference {c['adapter']:>8} on {c['degradation']} s{c['severity']}: predict {n / seconds:7.2f} images/s"
          f" ({seconds:.1f} s), adapt {n / a if a else float('inf'):7.2f} images/s")
print((work / "cyclegan.txt").read_text().rstrip())
PY
