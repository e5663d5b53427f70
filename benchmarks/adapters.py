"""Prints adapter speed and fidelity figures (not a test: numbers depend on the machine).

    python benchmarks/adapters.py [--data DIR] [--split S] [--images DIR] [--train DIR] [--n 20]
                                  [--adapters a,b] [--tune]

For every registered adapter (or those named): images/s and s/img of ``adapt_batch`` on ``--n`` 200x200
NEU-Seg test images degraded with ``domain_b`` severity 3 (the reference domain B), after one warm-up
image, and the mean PSNR / SSIM of the adapted images against their clean originals. Trainable adapters
fitted on source statistics (histmatch, fda) are fitted first on ``--fit-images`` training images; learnt
networks (fit_data paired/unpaired: cyclegan, dncnn) are timed UNTRAINED at their default params
(``load(None)``), since the weights do not change the speed, and their PSNR/SSIM are then meaningless;
an adapter whose ``load(None)`` raises is fitted with its ``quick_params`` on a few images instead, and
the note says so (that network is smaller than the default one, so its speed is not the default's).

``--tune`` instead prints PSNR / SSIM of the classical denoisers over a grid of their parameters on
``--n`` val images spread evenly over the split (NEU-Seg files are grouped by class): how the defaults in
plugins/adapters/classical.py were chosen. Tuning is a selection, so it refuses the test split and any
test image folder (``--split test``, ``--images .../images/test``): test figures must stay unseen.

Images: ``--images``, else ``<data>/images/<split>`` of the prepared dataset (``--data``, else
~/data/neu-seg or /tmp/data/neu-seg), else the release's /work/shared/datasets/neu-seg/images/<split>
(test, training). ``--split`` defaults to test for the speed table and val for ``--tune``. Training
images: ``--train`` or the sibling ``train``/``training`` folder, else the images themselves.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.degrade import degrade_image  # noqa: E402
from harness.imageio import list_images, read_image, write_image  # noqa: E402
from harness.registry import default_registry  # noqa: E402
from plugins.degradations import DomainB  # noqa: E402

DEFAULT_DATA = [Path.home() / "data/neu-seg", Path("/tmp/data/neu-seg")]
RELEASE = Path("/work/shared/datasets/neu-seg")

TUNE_GRID = {
    "nlm": [{"h": h} for h in (5, 7, 9, 12)],
    "bilateral": [{"d": d, "sigma_color": c, "sigma_space": s} for d in (7, 9, 11) for c in (30, 50) for s in (3, 5)],
    "median": [{"ksize": k} for k in (3, 5, 7)],
    "gaussian": [{"sigma": s} for s in (1.0, 1.5, 2.0, 2.5)],
    "bm3d": [{"sigma": s, "stage": t, "workers": 1} for t in ("all", "hard") for s in (10, 15, 20, 25)],
    "wavelet": [{"sigma": s, "wavelet": w} for w in ("db1", "db2", "sym4") for s in (None, 12, 16, 20, 25)],
    "tv": [{"weight": w} for w in (0.03, 0.05, 0.06, 0.08)],
}


def fidelity(clean: list[np.ndarray], other: list[np.ndarray]) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = [peak_signal_noise_ratio(c, o, data_range=255) for c, o in zip(clean, other)]
    ssim = [structural_similarity(c, o, data_range=255, channel_axis=2 if c.ndim == 3 else None)
            for c, o in zip(clean, other)]
    return float(np.mean([p for p in psnr if math.isfinite(p)] or [math.inf])), float(np.mean(ssim))


def prepare(reg, name: str, params: dict, train: list[Path], fit_images: int, work: Path):
    """An adapter ready to adapt, and a note on how it was made ready."""
    plugin = reg.create("adapter", name, params)
    if not plugin.trainable:
        return plugin, ""
    if plugin.fit_data == "source":
        fit_dir = work / f"fit-{name}"
        plugin.fit(train[:fit_images], [], fit_dir, seed=0, progress=False)
        plugin.load(fit_dir)
        return plugin, f"fitted on {min(fit_images, len(train))} training images"
    try:
        plugin.load(None)
        return plugin, "UNTRAINED network, default params: speed only"
    except Exception as exc:  # noqa: BLE001 - adapters need not support load(None)
        why = f"{type(exc).__name__}"
    plugin = reg.create("adapter", name, dict(plugin.quick_params))
    fit_dir = work / f"fit-{name}"
    source, target = fit_pairs(train[:2 * min(fit_images, 4)], plugin.fit_data, work / f"b-{name}")
    start = time.perf_counter()
    plugin.fit(source, target, fit_dir, seed=0, progress=False)
    plugin.load(fit_dir)
    return plugin, (f"load(None) raised {why}: quick_params {plugin.quick_params} network, fitted "
                    f"{time.perf_counter() - start:.0f} s; NOT the default network")


def fit_pairs(train: list[Path], fit_data: str, folder: Path) -> tuple[list[Path], list[Path]]:
    """Domain-A and domain_b-degraded images as the host hands them to ``fit`` for ``fit_data``."""
    half = len(train) // 2
    source, degrade = (train, train) if fit_data == "paired" else (train[:half], train[half:])
    target = []
    for path in degrade:
        write_image(folder / path.name, degrade_image(DomainB(), read_image(path), path.stem, 3, 0))
        target.append(folder / path.name)
    return source, target


def speed_table(reg, names, clean, degraded, train, fit_images, work) -> None:
    rows = [("(degraded input)", "", "", *fidelity(clean, degraded), "domain_b s3, no adapter")]
    for name in names:
        try:
            plugin, note = prepare(reg, name, {}, train, fit_images, work)
            plugin.adapt_batch(degraded[:1])
            start = time.perf_counter()
            out = plugin.adapt_batch(degraded)
            seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - one broken adapter must not hide the others' figures
            rows.append((name, "-", "-", math.nan, math.nan, f"failed: {type(exc).__name__}: {exc}"[:90]))
            continue
        rows.append((name, f"{len(out) / seconds:.2f}", f"{seconds / len(out):.4f}", *fidelity(clean, out), note))
    print(f"{len(degraded)} images {'x'.join(map(str, degraded[0].shape))}, domain_b severity 3; "
          "PSNR/SSIM against the clean originals\n")
    header = ("adapter", "images/s", "s/img", "PSNR dB", "SSIM", "note")
    table = [header] + [(a, b, c, f"{p:.2f}", f"{s:.4f}", n) for a, b, c, p, s, n in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("-|-".join("-" * w for w in widths))


def tune(reg, names, clean, degraded) -> None:
    print(f"{len(degraded)} images, domain_b severity 3: PSNR dB / SSIM against clean "
          f"(degraded: {'%.2f / %.4f' % fidelity(clean, degraded)})")
    for name in names:
        for params in TUNE_GRID.get(name, []):
            plugin = reg.create("adapter", name, params)
            start = time.perf_counter()
            out = plugin.adapt_batch(degraded)
            per = (time.perf_counter() - start) / len(out)
            psnr, ssim = fidelity(clean, out)
            print(f"{name:<10} {str(params):<40} {psnr:6.2f} {ssim:.4f}  {per:.3f} s/img", flush=True)


def image_folder(data: str | None, split: str) -> Path:
    """``<data>/images/<split>`` of the first prepared dataset that has it, else the release's folder."""
    roots = [Path(data)] if data else [p for p in DEFAULT_DATA if (p / f"{split}.json").is_file()]
    for root in roots:
        if (root / "images" / split).is_dir():
            return root / "images" / split
    if data:
        raise SystemExit(f"benchmarks/adapters.py: {Path(data) / 'images' / split} does not exist")
    release = RELEASE / "images" / ("training" if split == "train" else split)
    if not release.is_dir():
        raise SystemExit(f"benchmarks/adapters.py: no '{split}' images: prepare NEU-Seg (harness data prepare "
                         f"neu-seg) and pass --data, or pass --images")
    return release


def is_test_folder(folder: Path) -> bool:
    """A folder named ``test``, or the folder a prepared dataset's test.json takes its images from."""
    folder = folder.resolve()
    if folder.name.lower() == "test":
        return True
    for root in folder.parents[:2]:
        if (root / "test.json").is_file():
            records = json.loads((root / "test.json").read_text()).get("images", [])
            if any((root / r["file_name"]).resolve().parent == folder for r in records[:50]):
                return True
    return False


def spread(paths: list[Path], n: int) -> list[Path]:
    """``n`` paths evenly spaced over ``paths``, so that every class of a class-grouped folder is in."""
    return paths if n >= len(paths) else [paths[i * len(paths) // n] for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="prepared dataset folder (default: ~/data/neu-seg, else /tmp/data/neu-seg)")
    ap.add_argument("--split", choices=("train", "val", "test"),
                    help="split whose images to use (default: test; val with --tune)")
    ap.add_argument("--images", help="folder of images (default: <data>/images/<split>)")
    ap.add_argument("--train", help="folder of domain-A training images for fitting (default: sibling train)")
    ap.add_argument("--n", type=int, default=20, help="images per adapter")
    ap.add_argument("--fit-images", type=int, default=16)
    ap.add_argument("--adapters", help="comma-separated names (default: every registered adapter)")
    ap.add_argument("--tune", action="store_true", help="grid of classical denoiser params instead")
    args = ap.parse_args(argv)
    split = args.split or ("val" if args.tune else "test")
    if args.tune and split == "test":
        raise SystemExit("benchmarks/adapters.py: --tune refuses --split test: defaults are selected on val "
                         "or train, never on test")
    folder = Path(args.images) if args.images else image_folder(args.data, split)
    if args.tune and is_test_folder(folder):
        raise SystemExit(f"benchmarks/adapters.py: --tune refuses {folder}: it holds test images; tune on val "
                         "or train images")
    paths = spread(list_images(folder), args.n) if args.tune else list_images(folder)[:args.n]
    train_dir = Path(args.train) if args.train else next(
        (folder.parent / s for s in ("train", "training") if (folder.parent / s).is_dir()), folder)
    train = list_images(train_dir)
    reg = default_registry()
    names = args.adapters.split(",") if args.adapters else reg.names("adapter")
    clean = [read_image(p) for p in paths]
    domain_b = DomainB()
    degraded = [degrade_image(domain_b, im, p.stem, 3, 0) for im, p in zip(clean, paths)]
    print(f"images: {folder}  training images: {train_dir}")
    if args.tune:
        tune(reg, names, clean, degraded)
        return
    work = Path(tempfile.mkdtemp(prefix="harness-adapters-"))
    try:
        speed_table(reg, names, clean, degraded, train, args.fit_images, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
