"""Prints the harness's speed figures (not a test: numbers depend on the machine).

    python benchmarks/run.py [--data DIR] [--profiles cpu,seed] [--iters 12] [--images 64] [--model DIR]

- training seconds per iteration of each segmenter profile (mmengine's timer, warm-up excluded)
- inference images per second (batched predict; pass --model with a fully trained model folder, since a
  barely trained one emits 100 low-score detections per image and is slower than a real one)
- evaluation seconds per cell (COCO bbox + segm)
- time of a rerun of a finished matrix as a fraction of its first run (target <= 2 %)
Without --data it uses a generated synthetic dataset at 200 px (the NEU-Seg image size).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import config, matrix  # noqa: E402
from harness.cache import Store  # noqa: E402
from harness.data.coco import image_records  # noqa: E402
from harness.data.synthetic import generate_synthetic  # noqa: E402
from harness.evaluation import evaluate  # noqa: E402
from harness.registry import default_registry  # noqa: E402


def train_speed(reg, data: Path, work: Path, profile: str, iters: int) -> tuple[dict, Path]:
    seg = reg.create("segmenter", "mmdet-mask-rcnn", {"max_iters": iters})
    out = work / f"model-{profile}"
    start = time.perf_counter()
    seg.train(data, out, profile, seed=0)
    stats = json.loads((out / "train_stats.json").read_text())
    stats["wall_s"] = time.perf_counter() - start
    return stats, out


def inference_speed(reg, model: Path, data: Path, work: Path, n: int) -> tuple[float, Path]:
    seg = reg.create("segmenter", "mmdet-mask-rcnn", {})
    records = image_records(data, "test")[:n]
    seg.predict(model, records[:4], data, work / "warm.json", progress=False)  # model load + first-call costs
    start = time.perf_counter()
    seg.predict(model, records, data, work / "preds.json", progress=False)
    return len(records) / (time.perf_counter() - start), work / "preds.json"


def eval_speed(data: Path, preds: Path, n: int, repeats: int = 3) -> float:
    from harness.data.coco import first_images, load_split

    gt = first_images(load_split(data, "test"), n)
    start = time.perf_counter()
    for _ in range(repeats):
        evaluate(gt, preds)
    return (time.perf_counter() - start) / repeats


def rerun_fraction(reg, work: Path) -> tuple[float, float]:
    cfg_path = work / "bench.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "bench",
        "dataset": {"generate": "synthetic", "params": {"n_train": 40, "n_val": 4, "n_test": 20, "size": 96}},
        "segmenters": [{"name": "mmdet-mask-rcnn", "profile": "tiny", "params": {"max_iters": 100}}],
        "adapters": ["identity"],
        "degradations": ["none", {"name": "domain_b", "severities": [1, 3]}, {"name": "jpeg", "severities": [3]}],
    }))
    cfg = config.load(cfg_path, reg)
    store = Store(work / "cache")
    start = time.perf_counter()
    matrix.run(cfg, reg, out=work / "run", store=store, progress=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    summary = matrix.run(cfg, reg, out=work / "run", store=store, progress=False)
    second = time.perf_counter() - start
    assert summary["computed"] == 0, "a rerun of a finished matrix recomputed stages"
    return first, second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="prepared dataset folder (default: synthetic, 200 px)")
    ap.add_argument("--profiles", default="cpu,seed")
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--model", help="trained mmdet-mask-rcnn model folder for the inference figure")
    args = ap.parse_args()
    reg = default_registry()
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    try:
        data = Path(args.data) if args.data else work / "data"
        if not args.data:
            generate_synthetic(data, n_train=64, n_val=4, n_test=args.images, size=200, progress=False)
        figures = {}
        model = None
        for profile in args.profiles.split(","):
            stats, out = train_speed(reg, data, work, profile, args.iters)
            figures[f"train s/iter [{profile}]"] = round(stats.get("s_per_iter", float("nan")), 3)
            if profile == "cpu" or model is None:
                model = out
        model = Path(args.model) if args.model else model
        ips, preds = inference_speed(reg, model, data, work, args.images)
        figures[f"inference images/s [{'given' if args.model else 'just-trained'} model, batch 8]"] = round(ips, 2)
        figures["evaluation s/cell (bbox+segm)"] = round(eval_speed(data, preds, args.images), 3)
        first, second = rerun_fraction(reg, work)
        figures["matrix first run s"] = round(first, 1)
        figures["matrix rerun s"] = round(second, 3)
        figures["rerun / first run"] = f"{100 * second / first:.2f} %"
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
