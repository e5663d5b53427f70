"""Prediction speed of a segmenter on a CPU, printed in one run (not a test: the figures depend on the machine).

    python benchmarks/inference.py --model MODEL_DIR --data ~/data/neu-seg [--segmenter tv-mask-rcnn]
                                   [--images 120] [--reps 2] [--options rpn_proposals=100 max_per_img=20 bf16=true]

1. backbone + FPN alone and the whole `harness predict` command (imports and model load included), side by
   side: today's code (``--baseline``, a git revision of this repository, default the last one before
   plugins/segmenters/fastpredict.py) and this working tree, alternating A B B A ... so that the drift of a shared
   machine's speed falls on both; the two commands' predictions JSON must be byte-identical;
2. the share of each part of the prediction (this tree, one batch at a time, ``LANES = 1``, so that parts do not
   overlap);
3. for each output-changing option, images/s of the whole command and ΔAP (segm and bbox) against the default
   predictions with the paired bootstrap interval over the images (harness.evaluation.bootstrap).

MODEL_DIR is what `harness train segmenter NAME --profile cpu` wrote; a short training does for speed, e.g.
`--param max_iters=100` (it emits many low-score detections, the realistic load). The first ``--images`` images
of ``--split`` are used. Default run: ~8 min on 2 busy cores for the mmdet `cpu` model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the last commit whose prediction code is the reference loop (before plugins/segmenters/fastpredict.py)
BASELINE = "a45da88b13f7ffe5f2cc2bf07122b4e1f9306e6f"
DEFAULT_OPTIONS = ("rpn_proposals=100", "max_per_img=20")
#: bf16 is in the default options only where the CPU has bfloat16 units (on AVX2 it ran ~10x slower)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_SECONDS: list[float] = []  # user + system seconds of each command run, in order
PART_ORDER = ("io/decode", "backbone+fpn", "rpn", "box head", "mask head", "post-processing", "rle encoding",
              "json writing")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="model folder (harness train segmenter --out)")
    ap.add_argument("--data", type=Path, required=True, help="prepared dataset (harness data prepare)")
    ap.add_argument("--segmenter", default="mmdet-mask-rcnn", choices=("mmdet-mask-rcnn", "tv-mask-rcnn"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--images", type=int, default=120, help="the first N images of the split")
    ap.add_argument("--reps", type=int, default=2, help="timed runs of each command")
    ap.add_argument("--baseline", default=BASELINE, help="git revision holding today's code")
    ap.add_argument("--options", nargs="*", metavar="KEY=VALUE",
                    help=f"output-changing options to time and score (default: {' '.join(DEFAULT_OPTIONS)}, "
                         "and bf16=true on a CPU with bfloat16 units; none: skip)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--work", type=Path, help="keep the predictions here (default: a temporary folder)")
    ap.add_argument("--_child", choices=("backbone", "parts"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        return _child(args)
    if args.options is None:
        args.options = list(DEFAULT_OPTIONS) + (["bf16=true"] if _bf16_units() else [])
    elif args.options in (["none"], []):
        args.options = []
    with tempfile.TemporaryDirectory(prefix="harness-inference-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return _run(args, work)


# -- the parent: commands side by side -----------------------------------------------------------
def _run(args, work: Path) -> int:
    base = work / "baseline-tree"
    if not (base / "harness").is_dir():
        base.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "harness", "plugins", "configs"],
                                 capture_output=True, check=False)
        if archive.returncode:
            raise SystemExit(f"git archive {args.baseline}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
    print(_machine())
    print(f"segmenter {args.segmenter}, model {args.model}, {args.images} images of {args.data}/{args.split}, "
          f"{args.reps} timed runs per command, today's code = {args.baseline[:12]}\n")

    times: dict[str, list[float]] = {"backbone": [], "today": [], "new": []}
    cpu: dict[str, list[float]] = {"today": [], "new": []}
    outputs: dict[str, Path] = {}
    for rep in range(args.reps):
        order = ("today", "new") if rep % 2 == 0 else ("new", "today")
        for which in order:
            out = work / f"{which}.json"
            times[which].append(_predict(args, base if which == "today" else ROOT, out))
            cpu[which].append(CPU_SECONDS[-1])
            outputs[which] = out
        times["backbone"].append(_child_run(args, "backbone")["seconds"])
    identical = outputs["today"].read_bytes() == outputs["new"].read_bytes()
    n = args.images
    best = {k: n / min(v) for k, v in times.items()}
    mean = {k: n * len(v) / sum(v) for k, v in times.items()}
    print("images/s (best of runs; mean in brackets)")
    print(f"  backbone+FPN alone (batch forward, images in memory) {best['backbone']:7.2f}  ({mean['backbone']:.2f})")
    for which, label in (("today", "whole command, today's code"), ("new", "whole command, this tree")):
        print(f"  {label:51s}{best[which]:7.2f}  ({mean[which]:.2f})  = {best[which] / best['backbone']:.2f}x "
              f"backbone-only   runs: {' '.join(f'{t:.1f}s' for t in times[which])}")
    print(f"  speed-up of the whole command: {best['new'] / best['today']:.2f}x best, "
          f"{mean['new'] / mean['today']:.2f}x mean")
    print(f"  CPU seconds (user + system) per image: today {sum(cpu['today']) / len(cpu['today']) / n:.3f}, "
          f"this tree {sum(cpu['new']) / len(cpu['new']) / n:.3f} (less CPU work, not only idle cores filled)")
    detections = len(json.loads(outputs["new"].read_text()))
    print(f"  predictions JSON byte-identical: {'yes' if identical else 'NO'} ({detections} detections, "
          f"{detections / n:.1f} per image)\n")

    parts = _child_run(args, "parts")
    total = sum(parts["seconds"].values())
    print(f"share of each part (this tree, one batch at a time: {n / total:.2f} images/s without the two lanes)")
    for part in PART_ORDER:
        if part in parts["seconds"]:
            seconds = parts["seconds"][part]
            print(f"  {part:16s} {100 * seconds / total:5.1f} %  {1000 * seconds / n:7.1f} ms/image")
    print(f"  (model load {parts['load_seconds']:.1f} s once per command)\n")

    if args.options:
        _options(args, work, outputs["new"])
    print(f"\nload average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0 if identical else 1


def _options(args, work: Path, default_json: Path) -> None:
    from harness.data.coco import load_split
    from harness.evaluation.bootstrap import paired_bootstrap
    from harness.hashing import seed_from

    gt = _subset_gt(load_split(args.data, args.split), args.images)
    n = args.images
    print(f"output-changing options vs the default (whole command; each option run right after a run of the "
          f"default, and timed against it; ΔAP = option - default in points of 100, 95 % paired bootstrap over "
          f"the {n} images, {args.resamples} resamples)")
    print(f"  {'option':22s} {'images/s':>9s} {'default':>8s} {'speed-up':>9s} {'ΔAP segm [interval]':>28s} "
          f"{'ΔAP bbox [interval]':>28s}")
    for option in args.options:
        default_seconds = _predict(args, ROOT, work / "default-again.json")
        out = work / f"option-{option.replace('=', '-')}.json"
        seconds = _predict(args, ROOT, out, [option])
        cells = []
        for iou in ("segm", "bbox"):
            res = paired_bootstrap(gt, out, default_json, iou, resamples=args.resamples,
                                   seed=seed_from("inference-benchmark", option, iou))
            cells.append(f"{100 * res['delta']:+6.2f} [{100 * res['lo']:+6.2f}, {100 * res['hi']:+6.2f}]")
        print(f"  {option:22s} {n / seconds:9.2f} {n / default_seconds:8.2f} {default_seconds / seconds:8.2f}x "
              f"{cells[0]:>28s} {cells[1]:>28s}")
    if not any(o.startswith("bf16") for o in args.options) and not _bf16_units():
        print("  (bf16=true left out: this CPU has no bfloat16 units, and there it ran 27x slower than float32; "
              "--options bf16=true times it)")
    ap = {iou: paired_bootstrap(gt, default_json, default_json, iou, resamples=1)["ap_a"] for iou in ("segm", "bbox")}
    print(f"  (the default's AP on these images: segm {100 * ap['segm']:.2f}, bbox {100 * ap['bbox']:.2f})")


def _subset_gt(split: dict, n: int) -> dict:
    images = sorted(split["images"], key=lambda im: im["id"])[:n]
    ids = {im["id"] for im in images}
    return {**split, "images": images, "annotations": [a for a in split["annotations"] if a["image_id"] in ids]}


def _predict(args, tree: Path, out: Path, params: list[str] = ()) -> float:
    """Seconds of one whole `harness predict` command run from ``tree``'s code."""
    cmd = [sys.executable, "-m", "harness.cli", "predict", args.segmenter, "--model", str(args.model),
           "--data", str(args.data), "--split", args.split, "--limit", str(args.images), "--out", str(out), "--quiet"]
    for param in params:
        cmd += ["--param", param]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} (from {tree}) failed:\n{done.stderr.strip()[-2000:]}")
    CPU_SECONDS.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return seconds


def _child_run(args, mode: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", mode, "--segmenter", args.segmenter,
           "--model", str(args.model), "--data", str(args.data), "--split", args.split, "--images", str(args.images)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{mode} run failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _bf16_units() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and any(flag in cpuinfo.read_text().split() for flag in BF16_FLAGS)


def _machine() -> str:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"machine: {model}, {os.cpu_count()} cores ({torch.backends.cpu.get_cpu_capability()}"
            f"{', bfloat16 units' if _bf16_units() else ', no bfloat16 units'}), torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, load average at start {load}")


# -- children: one measurement each, in a fresh process -----------------------------------------
def _child(args) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from harness.data.coco import image_records
    from harness.registry import default_registry

    from plugins.segmenters import fastpredict

    fastpredict.LANES = 1  # parts timed one after the other
    seg = default_registry().create("segmenter", args.segmenter, {})
    records = image_records(args.data, args.split)[:args.images]
    if args.segmenter == "mmdet-mask-rcnn":
        result = _mmdet_child(args._child, seg, records, args)
    else:
        result = _tv_child(args._child, seg, records, args)
    print(json.dumps(result))
    return 0


def _timed_loop(batches, forward) -> float:
    import torch

    from plugins.segmenters.fastpredict import reuse_freed_memory

    with torch.inference_mode(), reuse_freed_memory():
        forward(batches[0])  # warm-up: first-call costs of the kernels
        tic = time.perf_counter()
        for batch in batches:
            forward(batch)
        return time.perf_counter() - tic


def _mmdet_child(mode: str, seg, records, args) -> dict:
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate

    from plugins.segmenters import fastpredict

    tic = time.perf_counter()
    model, cfg = seg.load_model(args.model)
    load_seconds = time.perf_counter() - tic
    batch = int(seg.config["predict_batch"])
    if mode == "backbone":
        pipeline = Compose(cfg.test_pipeline)
        batches = []
        for i in range(0, len(records), batch):
            data = [pipeline(dict(img_path=str(args.data / r["file_name"]), img_id=r["id"]))
                    for r in records[i:i + batch]]
            batches.append(model.data_preprocessor(pseudo_collate(data), False)["inputs"])
        return {"seconds": _timed_loop(batches, model.extract_feat)}
    parts = fastpredict.Parts(True)
    results = fastpredict.mmdet_predict(model, cfg, records, args.data, batch, False, False, parts=parts)
    return _with_json_time(parts, results, load_seconds)


def _tv_child(mode: str, seg, records, args) -> dict:
    from harness.imageio import read_image
    from plugins.segmenters import fastpredict
    from plugins.segmenters.tv_mask_rcnn import _to_tensor

    tic = time.perf_counter()
    model, classes = seg.load_model(args.model)
    load_seconds = time.perf_counter() - tic
    batch = int(seg.config["predict_batch"])

    def read(path):
        return _to_tensor(read_image(path), "cpu")

    if mode == "backbone":
        batches = [model.transform([read(args.data / r["file_name"]) for r in records[i:i + batch]])[0].tensors
                   for i in range(0, len(records), batch)]
        return {"seconds": _timed_loop(batches, model.backbone)}
    parts = fastpredict.Parts(True)
    results = fastpredict.tv_predict(model, records, args.data, read, [int(c["id"]) for c in classes], batch, False,
                                     False, parts=parts)
    return _with_json_time(parts, results, load_seconds)


def _with_json_time(parts, results, load_seconds: float) -> dict:
    from harness.data.coco import write_json_atomic

    with tempfile.TemporaryDirectory() as tmp, parts("json writing"):
        write_json_atomic(Path(tmp) / "predictions.json", results)
    return {"seconds": dict(parts.seconds), "load_seconds": load_seconds}


if __name__ == "__main__":
    sys.exit(main())
