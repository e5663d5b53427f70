"""What the feature gap costs beside its predict stage, printed in one run (not a test: figures depend on the machine).

    python benchmarks/featuregap.py --model MODEL_DIR --data ~/data/neu-seg [--segmenter tv-mask-rcnn]
                                    [--images 120] [--reps 2] [--cell 840] [--reference 363]

1. the predict stage with and without capturing features (``features_out``), alternating A B B A on the first
   ``--images`` test images, and the time spent inside the capture hooks themselves (which an A/B on a
   drifting machine cannot resolve): the capture's own cost;
2. the featuregap stage's arithmetic for a cell of ``--cell`` images against ``--reference`` source-val images
   (NEU-Seg: 840 test, 363 val) at the model's feature width, 1000 bootstrap resamples: its cost depends on the
   sizes only, so the rows are drawn at random;
3. both as a share of the predict stage of a ``--cell``-image cell at the images/s measured in 1. The target of
   issue 12: ≤ 10 %.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--segmenter", default="mmdet-mask-rcnn", choices=("mmdet-mask-rcnn", "tv-mask-rcnn"))
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cell", type=int, default=840)
    ap.add_argument("--reference", type=int, default=363)
    args = ap.parse_args()

    import numpy as np

    from harness.data.coco import image_records
    from harness.evaluation.featuregap import FEATURES_FILE, RESAMPLES, feature_gap, load_features
    from harness.registry import default_registry

    from plugins.segmenters.features import FeatureTap

    spent = [0.0]
    add = FeatureTap.add

    def timed_add(self, levels):  # the capture's own time, which a drifting machine's A/B cannot resolve
        tic = time.perf_counter()
        add(self, levels)
        spent[0] += time.perf_counter() - tic

    FeatureTap.add = timed_add
    segmenter = default_registry().create("segmenter", args.segmenter, {})
    records = image_records(args.data, "test")[: args.images]
    times: dict[bool, list[float]] = {False: [], True: []}
    width = 0
    print(f"machine: {os.cpu_count()} cores, load average at start {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="harness-featuregap-") as tmp:
        for rep in range(args.reps):
            for capture in (False, True) if rep % 2 == 0 else (True, False):
                out = Path(tmp) / f"{rep}-{capture}"
                tic = time.perf_counter()
                segmenter.predict(args.model, records, args.data, out / "predictions.json", progress=False,
                                  features_out=out / FEATURES_FILE if capture else None)
                times[capture].append(time.perf_counter() - tic)
                if capture:
                    width = load_features(out / FEATURES_FILE)[1].shape[1]
    plain, captured = min(times[False]), min(times[True])
    pooling = spent[0] / args.reps
    per_image = plain / len(records)
    rng = np.random.default_rng(0)
    cell, reference = rng.normal(size=(args.cell, width)), rng.normal(size=(args.reference, width))
    tic = time.perf_counter()
    feature_gap(cell.astype(np.float32), reference.astype(np.float32), seed=0)
    gap_seconds = time.perf_counter() - tic
    stage = per_image * args.cell
    print(f"segmenter {args.segmenter}, model {args.model}, {len(records)} test images of {args.data}, "
          f"best of {args.reps} runs each")
    print(f"  predict stage, no features      {plain:7.2f} s  ({len(records) / plain:.2f} images/s)")
    print(f"  predict stage, with features    {captured:7.2f} s  (A/B difference {100 * (captured - plain) / plain:+.1f} %; "
          f"time inside the capture hooks {pooling:.2f} s = {100 * pooling / plain:.1f} %)")
    print(f"  featuregap stage, {args.cell} vs {args.reference} images, {width}-d, {RESAMPLES} resamples: "
          f"{gap_seconds:.2f} s")
    print(f"  share of a {args.cell}-image predict stage ({stage:.0f} s at the rate above): featuregap "
          f"{100 * gap_seconds / stage:.2f} %, capture {100 * pooling / plain:.1f} %, together "
          f"{100 * (gap_seconds / stage + pooling / plain):.1f} % (target <= 10 %)")
    print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
