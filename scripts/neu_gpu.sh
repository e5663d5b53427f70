#!/usr/bin/env bash
# One GPU-machine session for NEU-Seg (the lent H100: python3 with torch, no mmdet, no network).
# Carried in: .neu/ (the public NEU-Seg release) and .whl/ (cp312 wheels of pycocotools, PyWavelets).
#   1. prepare NEU-Seg exactly as here and check its fingerprint against this machine's,
#   2. compute the learnt adapters' fit stages of neu-seg-adapters-cpu.yaml (their cache folders come
#      back in $OUT/fits.tgz.part-*: `cat` them, untar into the local cache's root; an unfinished fit comes
#      back as its .partial folder with checkpoint.pt and resumes there),
#   3. run the tv-mask-rcnn (cpu profile) baseline matrix and return its run folder,
#   4. print GPU benchmark figures.
# Usage: scripts/neu_gpu.sh EXPECTED_DATASET_FINGERPRINT   (writes into $OUT)
set -uo pipefail
expected=${1:?dataset fingerprint expected}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HARNESS_CACHE=/tmp/cache
export HARNESS_PLUGINS=plugins.degradations,plugins.adapters,plugins.segmenters
harness() { python3 -m harness.cli "$@"; }
nvidia-smi -L
python3 -c "import torch, torchvision; import cv2, numpy; print('torch', torch.__version__, 'tv', torchvision.__version__, 'cv2', cv2.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name())"

harness data prepare neu-seg .neu --out /tmp/neu --quiet --json > "$OUT/prepare.json" || exit 1
got=$(python3 -c "from harness.data.coco import dataset_fingerprint as f; print(f('/tmp/neu'))")
echo "dataset fingerprint here $got, expected $expected ($(( $(date +%s) - start )) s)"
# fit keys do not depend on the segmenter: plan with tv-mask-rcnn, which needs no mmengine to fingerprint
sed -e "s#^dataset: .*#dataset: /tmp/neu#" -e "s#mmdet-mask-rcnn#tv-mask-rcnn#" \
    configs/matrix/neu-seg-adapters-cpu.yaml > /tmp/adapters.yaml
sed -e "s#^dataset: .*#dataset: /tmp/neu#" -e "s#mmdet-mask-rcnn#tv-mask-rcnn#" -e "s#^name: .*#name: neu-seg-tv-cpu-gpu#" \
    configs/matrix/neu-seg-cpu.yaml > /tmp/tv.yaml

# the segmenter baseline and the adapter fits share the GPU
timeout 400 python3 -m harness.cli run /tmp/tv.yaml --out /tmp/run-tv --quiet > "$OUT/tv.log" 2>&1 &
tv=$!
if [ "$got" = "$expected" ]; then
    timeout 330 python3 -m harness.cli run /tmp/adapters.yaml --only fit > "$OUT/fits.log" 2>&1
    echo "fits: exit $? ($(( $(date +%s) - start )) s)"; tail -3 "$OUT/fits.log"
else
    echo "fingerprint differs: fits skipped (their keys would not be this machine's)"
fi
python3 benchmarks/cyclegan.py --device cuda --iters cpu=20,seed=10 --profiles cpu,seed > "$OUT/cyclegan-bench.txt" 2>&1; tail -12 "$OUT/cyclegan-bench.txt"
wait $tv; echo "tv run: exit $? ($(( $(date +%s) - start )) s)"; tail -5 "$OUT/tv.log"
# results come back as files of at most 16 MiB; leave out fit-target/ (B images a resumed fit re-creates)
tar czf /tmp/fits.tgz --exclude=fit-target -C /tmp/cache fit 2>/dev/null && split -b 15M /tmp/fits.tgz "$OUT/fits.tgz.part-"
tar czf "$OUT/run-tv.tgz" -C /tmp run-tv 2>/dev/null
ls -la "$OUT"
