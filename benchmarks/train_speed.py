"""Prints a segmenter profile's training seconds per iteration, fp32 against bf16 autocast, at several batch sizes
(not a test: the numbers are the machine's). Issue 13 asks it of the `seed` profile on a GPU machine.

    python benchmarks/train_speed.py [--profile seed] [--batches 1,4] [--iters 20] [--warmup 5] [--device cuda]

The model is tv-mask-rcnn's build of the profile (configs/torchvision/mask-rcnn_*.yaml; the `seed` one mirrors
the mmdet `seed` config), freshly initialised: speed does not depend on the weights. The images are synthetic
200x200 gray textures with three random rectangular defects each, which the profile's transform resizes to its
input size (640 px for `seed`), as it would NEU-Seg's. An iteration is what the training loop does: forward with
targets, summed losses, backward, SGD step; timed with the device synchronised, after ``--warmup`` untimed ones.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.segmenters.tv_mask_rcnn import TVMaskRCNN, build_model  # noqa: E402


def sample(rng: np.random.Generator, device, size: int = 200) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    image = torch.from_numpy(rng.normal(0.45, 0.1, (1, size, size)).clip(0, 1).astype(np.float32)).expand(3, -1, -1)
    boxes, masks = [], []
    for _ in range(3):
        x0, y0 = rng.integers(0, size - 40, 2)
        w, h = rng.integers(8, 40, 2)
        boxes.append([x0, y0, x0 + w, y0 + h])
        m = np.zeros((size, size), np.uint8)
        m[y0:y0 + h, x0:x0 + w] = 1
        masks.append(m)
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([1, 2, 3]),
              "masks": torch.from_numpy(np.stack(masks))}
    return image.contiguous().to(device), {k: v.to(device) for k, v in target.items()}


def seconds_per_iter(model, optimizer, batch: int, iters: int, warmup: int, bf16: bool, device) -> float:
    rng = np.random.default_rng(0)
    data = [sample(rng, device) for _ in range(batch)]
    images, targets = [d[0] for d in data], [d[1] for d in data]
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    for it in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        with cast:
            loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if it >= warmup:
            times.append(time.perf_counter() - tic)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="seed")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = TVMaskRCNN().resolved_config(args.profile)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"tv-mask-rcnn `{args.profile}` ({cfg['backbone']['depth']}-layer backbone, input {cfg['input']['size']} px) "
          f"on {name}; median s/iter over {args.iters} iterations after {args.warmup}\n")
    print("| batch | fp32 s/iter | bf16 s/iter | bf16 speed-up | fp32 images/s |")
    print("|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        row = {}
        for bf16 in (False, True):
            torch.manual_seed(0)
            model = build_model(cfg, 3).to(device).train()
            optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
            row[bf16] = seconds_per_iter(model, optimizer, batch, args.iters, args.warmup, bf16, device)
        print(f"| {batch} | {row[False]:.4f} | {row[True]:.4f} | {row[False] / row[True]:.2f}x | "
              f"{batch / row[False]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
