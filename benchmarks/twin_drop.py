"""Does a degradation twin hurt the segmenter as much as the degradation it was estimated from? Prints, from a
finished run of configs/matrix/neu-seg-twin-val-cpu.yaml (NEU-Seg **val**, never test), each true target's AP
drop and its twin's, drop = AP(clean) - AP(target) with the `identity` adapter, and their ratio twin / true with
a 95 % bootstrap interval over val images (clean, true and twin cells drawn under the same resamples). Issue 12's
criterion: the ratio within 1 +- 0.25.

    python benchmarks/twin_drop.py runs/neu-seg-twin-val-cpu [--pairs domain_b:3=twin-of-s3,domain_b:5=twin-of-s5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.evaluation.bootstrap import ap_from_weights_many, resample_counts  # noqa: E402
from harness.report.build import RunView  # noqa: E402


def _cell(view: RunView, degradation: str, severity: int) -> dict:
    hits = [c for c in view.cells if c["adapter"] == "identity" and c["degradation"] == degradation
            and int(c["severity"]) == severity]
    if not hits:
        raise SystemExit(f"{view.dir}: no finished identity cell of {degradation} s{severity}")
    return hits[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--pairs", default="domain_b:3=twin-of-s3,domain_b:5=twin-of-s5",
                        help="TRUE_LABEL:SEVERITY=TWIN_LABEL, comma-separated (a twin's severity is 1)")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    view = RunView(args.run)
    clean = _cell(view, "none", 0)
    n = len(view.gt["images"])
    counts = resample_counts(n, args.resamples, 0)
    ones = np.ones((1, n))
    print(f"{view.meta['name']}: {n} {view.meta['config'].get('split')} images, identity adapter, "
          f"{args.resamples} paired resamples\n")
    print("| target | twin | IoU | clean AP | true AP | twin AP | true drop | twin drop | twin / true [95 %] | within 25 % |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for pair in args.pairs.split(","):
        true, twin = pair.split("=")
        label, severity = true.split(":")
        cells = [clean, _cell(view, label, int(severity)), _cell(view, twin, 1)]
        for iou in ("bbox", "segm"):
            matched = [view.matched(c, iou) for c in cells]
            full = [float(ap_from_weights_many(m, ones)[0]) for m in matched]
            drawn = [ap_from_weights_many(m, counts) for m in matched]
            drop_true, drop_twin = full[0] - full[1], full[0] - full[2]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = (drawn[0] - drawn[2]) / (drawn[0] - drawn[1])
            lo, hi = np.percentile(ratios[np.isfinite(ratios)], [2.5, 97.5])
            ratio = drop_twin / drop_true
            print(f"| {label} s{severity} | {twin} | {iou} | {100 * full[0]:.1f} | {100 * full[1]:.1f} | "
                  f"{100 * full[2]:.1f} | {100 * drop_true:.1f} | {100 * drop_twin:.1f} | {ratio:.2f} "
                  f"[{lo:.2f}, {hi:.2f}] | {'yes' if abs(ratio - 1) <= 0.25 else 'no'} |")


if __name__ == "__main__":
    main()
