"""Prints the cost of a paired bootstrap of COCO AP against one plain evaluation (not a test: numbers depend
on the machine).

    python benchmarks/bootstrap.py [--gt FILE --a FILE --b FILE] [--resamples 1000] [--iou-types bbox,segm]

Times one `harness.evaluation.evaluate` call (a's predictions, one iou_type) against
`paired_bootstrap(gt, a, b, iou_type, resamples=N)` (matching a and b once, then N resamples) and
`per_image_delta`, and prints their ratio (target: bootstrap <= 10x the plain evaluation).

Without files it builds a NEU-Seg-sized synthetic case: 840 images of 200x200, 3 classes, ~3 objects
and ~20 detections (RLE masks) per image; b is a with somewhat noisier boxes and masks.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.evaluation import evaluate  # noqa: E402
from harness.evaluation.bootstrap import paired_bootstrap, per_image_delta  # noqa: E402

SIZE = 200


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> tuple[dict, list[float]]:
    y, x = np.ogrid[:SIZE, :SIZE]
    m = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1).astype(np.uint8)
    if not m.any():
        m[int(np.clip(cy, 0, SIZE - 1)), int(np.clip(cx, 0, SIZE - 1))] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    box = mask_utils.toBbox(rle).tolist()
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}, box


def synthetic(n_images: int = 840, seed: int = 0) -> tuple[dict, list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": f"{i}.png", "height": SIZE, "width": SIZE} for i in range(1, n_images + 1)]
    anns: list[dict] = []
    sets: tuple[list[dict], list[dict]] = ([], [])
    for img in images:
        objects = []
        for _ in range(rng.poisson(3)):
            cat = int(rng.integers(1, 4))
            cx, cy = rng.uniform(20, 180, 2)
            rx, ry = rng.uniform(5, 40, 2)
            segm, box = _ellipse(cx, cy, rx, ry)
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": box,
                         "area": float(mask_utils.area(segm)), "iscrowd": 0, "segmentation": segm})
            objects.append((cat, cx, cy, rx, ry))
        for preds, noise in zip(sets, (0.08, 0.12)):
            for cat, cx, cy, rx, ry in objects:
                for _ in range(2):
                    j = rng.normal(0, noise, 4)
                    segm, box = _ellipse(cx + j[0] * rx, cy + j[1] * ry, rx * (1 + j[2]), ry * (1 + j[3]))
                    preds.append({"image_id": img["id"], "category_id": cat, "bbox": box, "segmentation": segm,
                                  "score": float(np.clip(rng.normal(0.8 - noise, 0.15), 0.01, 1))})
            for _ in range(max(0, 20 - 2 * len(objects))):
                segm, box = _ellipse(*rng.uniform(10, 190, 2), *rng.uniform(4, 30, 2))
                preds.append({"image_id": img["id"], "category_id": int(rng.integers(1, 4)), "bbox": box,
                              "segmentation": segm, "score": float(rng.uniform(0.01, 0.6))})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": n} for c, n in enumerate(("inclusion", "patches", "scratches"), 1)]}
    return gt, sets[0], sets[1]


def _seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt")
    ap.add_argument("--a")
    ap.add_argument("--b")
    ap.add_argument("--images", type=int, default=840)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--iou-types", default="bbox,segm")
    args = ap.parse_args()
    if args.gt or args.a or args.b:
        if not (args.gt and args.a and args.b):
            ap.error("--gt, --a and --b go together")
        gt, a, b = (json.loads(Path(p).read_text()) for p in (args.gt, args.a, args.b))
        print(f"files: {args.gt}, a={args.a}, b={args.b}")
    else:
        build, (gt, a, b) = _seconds(lambda: synthetic(args.images))
        print(f"synthetic: {len(gt['images'])} images, {len(gt['annotations'])} objects, "
              f"{len(a)} + {len(b)} detections ({build:.1f} s to build)")
    print(f"{'iou_type':8}  {'evaluate s':>10}  {'bootstrap s':>11}  {'ratio':>5}  {'per-image s':>11}  result")
    for iou_type in args.iou_types.split(","):
        plain, _ = _seconds(lambda: evaluate(gt, a, iou_types=[iou_type]))
        boot, res = _seconds(lambda: paired_bootstrap(gt, a, b, iou_type, resamples=args.resamples))
        per_image, _ = _seconds(lambda: per_image_delta(gt, a, b, iou_type))
        print(f"{iou_type:8}  {plain:10.2f}  {boot:11.2f}  {boot / plain:5.2f}  {per_image:11.2f}  "
              f"delta {100 * res['delta']:+.2f} AP [{100 * res['lo']:+.2f}, {100 * res['hi']:+.2f}] "
              f"({res['resamples']} resamples)")


if __name__ == "__main__":
    main()
