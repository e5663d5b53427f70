"""Prints the learnt adapters' speed figures (not a test: numbers depend on the machine and its load).

    python benchmarks/cyclegan.py [--device cpu|cuda] [--threads N] [--data DIR] [--images 16]
                                  [--profiles cpu,seed] [--iters cpu=20,seed=3] [--dncnn-iters 20]

- CycleGAN generator images/s on 200x200 images, one at a time vs batched (8, 16), and the largest
  difference between batched and single float outputs (must stay <= 1e-5)
- CycleGAN training seconds per iteration per profile, and what the profile's schedule then takes
- DnCNN (default params) training seconds per iteration, and the default schedule's minutes
Weights are freshly initialised (speed does not depend on them). Without --data the images are
synthetic 200x200 gray textures (the NEU-Seg size); with --data, the first images of that folder.
The load average is printed because on a shared 2-core machine it moves every number here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.hashing import seed_from  # noqa: E402
from harness.imageio import list_images, read_image, write_image  # noqa: E402
from plugins.adapters import cyclegan, dncnn  # noqa: E402
from plugins.adapters.nets import generator, init_weights  # noqa: E402
from harness.checkpoints import save as save_atomic  # noqa: E402
from plugins.adapters.training import to_uint8  # noqa: E402


def texture(seed: int, size: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = 100 + 40 * np.sin(xx / (9 + seed % 5)) + 20 * np.cos(yy / 13) + rng.normal(0, 15, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def bench_images(work: Path, data: str | None, n: int) -> list[Path]:
    if data:
        return list_images(data)[:n]
    paths = []
    for i in range(n):
        write_image(work / "images" / f"{i}.png", texture(i))
        paths.append(work / "images" / f"{i}.png")
    return paths


def untrained_generator(profile: str, work: Path, device: str, batch: int) -> cyclegan.CycleGAN:
    """A CycleGAN adapter loaded with a freshly initialised B->A generator of ``profile``."""
    adapter = cyclegan.CycleGAN(profile=profile, device=device, batch=batch)
    s = adapter.settings
    fit_dir = work / f"fit-{profile}"
    fit_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed_from("bench", profile))
    net = init_weights(generator(s), generator=gen)
    save_atomic(net.state_dict(), fit_dir / "generator.pt")
    (fit_dir / "model.json").write_text(json.dumps({"profile": s}))
    adapter.load(fit_dir)
    return adapter


def inference(profile: str, images: list[np.ndarray], work: Path, device: str, batches: list[int]) -> None:
    single = untrained_generator(profile, work, device, 1)
    single.translate(images[:2])  # first-call costs (allocator, kernel choice)
    start = time.perf_counter()
    reference = [single.translate([im])[0] for im in images]
    rate = len(images) / (time.perf_counter() - start)
    print(f"  {profile:5s} one at a time : {rate:7.2f} images/s")
    for batch in batches:
        adapter = untrained_generator(profile, work, device, batch)
        adapter.translate(images[:batch])
        start = time.perf_counter()
        out = adapter.translate(images)
        rate = len(images) / (time.perf_counter() - start)
        diff = max(float(np.abs(x - y).max()) for x, y in zip(out, reference))
        uint8 = max(int(np.abs(to_uint8(x).astype(int) - to_uint8(y)).max())
                    for x, y in zip(out, reference))
        flag = "" if diff <= 1e-5 else "   <-- exceeds 1e-5"
        print(f"  {profile:5s} batch {batch:3d}     : {rate:7.2f} images/s   max |float diff| vs single "
              f"{diff:.2e}, uint8 {uint8}{flag}")


def timed_steps(trainer, iters: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        trainer.step()
    start = time.perf_counter()
    for _ in range(iters):
        trainer.step()  # .item() on the losses waits for the device
    return (time.perf_counter() - start) / iters


def train_cyclegan(profile: str, paths: list[Path], work: Path, device: str, iters: int) -> None:
    adapter = cyclegan.CycleGAN(profile=profile, device=device)
    torch.backends.cudnn.benchmark = device.startswith("cuda")  # as CycleGAN.fit does
    half = len(paths) // 2
    trainer = cyclegan.Trainer(adapter, paths[:half], paths[half:], work / f"train-{profile}", 0,
                               torch.device(device))
    per_iter = timed_steps(trainer, iters)
    s = adapter.settings
    if "iterations" in s["schedule"]:
        total, what = s["schedule"]["iterations"], "its"
    else:  # an epoch-based schedule: NEU-Seg's ~1800 images per domain and epoch
        total, _ = cyclegan.schedule_length(s, 1800, 1800)
        what = "its for 1800 images per domain"
    print(f"  cyclegan {profile:5s}: {per_iter:7.3f} s/iter over {iters} its -> schedule {total} {what}: "
          f"{total * per_iter / 60:7.1f} min")


def train_dncnn(paths: list[Path], work: Path, device: str, iters: int) -> None:
    adapter = dncnn.DnCNN(device=device)
    trainer = dncnn.PairTrainer(adapter, paths, paths, work / "train-dncnn", 0, torch.device(device))
    per_iter = timed_steps(trainer, iters)
    total = adapter.config["iterations"]
    print(f"  dncnn (defaults): {per_iter:7.3f} s/iter over {iters} its -> {total} its: "
          f"{total * per_iter / 60:.1f} min")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--data", help="folder of images to use instead of synthetic 200x200 textures")
    ap.add_argument("--images", type=int, default=16, help="images for the inference figures")
    ap.add_argument("--profiles", default="cpu,seed")
    ap.add_argument("--iters", default="cpu=20,seed=3", help="timed training iterations per profile")
    ap.add_argument("--dncnn-iters", type=int, default=20)
    ap.add_argument("--batches", default="8,16")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    iters = {k: int(v) for k, v in (item.split("=") for item in args.iters.split(","))}
    profiles = [p for p in args.profiles.split(",") if p]
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = bench_images(work, args.data, max(args.images, 8))
        images = [read_image(p) for p in paths[:args.images]]
        print(f"inference, {len(images)} images of {images[0].shape[1]}x{images[0].shape[0]}:")
        for profile in profiles:
            inference(profile, images, work, args.device, [int(b) for b in args.batches.split(",")])
        print("training:")
        for profile in profiles:
            train_cyclegan(profile, paths, work, args.device, iters.get(profile, 5))
        if args.dncnn_iters > 0:
            train_dncnn(paths, work, args.device, args.dncnn_iters)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
