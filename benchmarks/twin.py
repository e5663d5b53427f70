"""Validation of ``harness degrade estimate`` on a prepared dataset's **val** split (never test).

    python benchmarks/twin.py [--data /tmp/data/neu-seg] [--limit N] [--work /tmp/twin/bench]

Targets: the val images degraded with each ``domain_b`` severity 1-5 and with each of its parts alone (noise,
motion blur, JPEG at the severity 1, 3 and 5 values), with the host's per-image seeding. Where JPEG is part of
the target the images are written as JPEG files at that quality (the quantisation-table path); ``domain_b`` s3
and JPEG s3 are also written as PNG (the blockiness path). The estimator's reference is the *train* split, so
the twin is calibrated on images disjoint from the targets.

Tables printed: true vs estimated parameters (median and IQR over the images); what the noise estimate says on
the clean val images; and the statistics (medians) of twin-degraded val images against the target's, with the
relative error (the criterion: within 15 %).
"""
from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from harness.data.stats import laplacian_variance
from harness.degrade import degrade_image, image_rng
from harness.estimate import estimate, features
from harness.imageio import list_images, read_image
from plugins.degradations.blur import blur
from plugins.degradations.chain import DomainB
from plugins.degradations.noise import add_noise
from plugins.degradations.twin import Twin

STATS = ("v_mean", "v_std", "n1", "n2", "blockiness", "laplacian")


def targets() -> list[tuple[str, dict, bool]]:
    """(name, true twin params, written as JPEG files); the name ends in the domain_b severity it seeds as."""
    lv = DomainB.levels
    out = [(f"domain_b s{s}", {"sigma": lv[s]["sigma"], "length": lv[s]["length"], "quality": lv[s]["quality"]}, True)
           for s in (1, 2, 3, 4, 5)]
    out.append(("domain_b s3 (PNG)", {"sigma": lv[3]["sigma"], "length": lv[3]["length"], "quality": lv[3]["quality"]}, False))
    for s in (1, 3, 5):
        out.append((f"noise s{s}", {"sigma": lv[s]["sigma"]}, False))
    for s in (1, 3, 5):
        out.append((f"blur s{s}", {"length": lv[s]["length"]}, False))
    for s in (1, 3, 5):
        out.append((f"jpeg s{s}", {"quality": lv[s]["quality"]}, True))
    out.append(("jpeg s3 (PNG)", {"quality": lv[3]["quality"]}, False))
    return out


def write_target(paths: list[Path], params: dict, as_jpeg: bool, out: Path, seed: int, severity: int) -> None:
    """domain_b's own order and seeding (noise then blur from one per-image rng, then JPEG)."""
    out.mkdir(parents=True)
    for p in paths:
        im = read_image(p)
        rng = image_rng(p.stem, "domain_b", severity, seed, DomainB().config)
        if params.get("sigma"):
            im = add_noise(im, params["sigma"], rng)
        if params.get("length", 1) > 1:
            im = blur(im, params["length"], rng)
        q = params.get("quality")
        if as_jpeg:
            cv2.imwrite(str(out / f"{p.stem}.jpg"), im, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        else:
            if q:
                ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
                im = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(out / f"{p.stem}.png"), im)


def stats(images: list[np.ndarray]) -> dict[str, float]:
    rows = [{**features(im), "laplacian": laplacian_variance(im)} for im in images]
    return {k: float(np.median([r[k] for r in rows])) for k in STATS}


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:g}" if isinstance(v, (int, float)) else str(v))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/data/neu-seg"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, help="every k-th val image so that about N are used")
    parser.add_argument("--reference-images", type=int, default=24)
    parser.add_argument("--work", type=Path, default=Path("/tmp/twin/bench"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.split == "test":
        raise SystemExit("--split test: calibration and validation use val (or train), never test")
    paths = list_images(args.data / "images" / args.split)
    if args.limit:
        paths = paths[::max(1, len(paths) // args.limit)][:args.limit]
    reference = args.data / "images" / "train"
    clean = [read_image(p) for p in paths]
    shutil.rmtree(args.work, ignore_errors=True)

    t0 = time.time()
    est = estimate(args.data / "images" / args.split, reference=reference, reference_images=args.reference_images,
                   limit=None, seed=args.seed) if not args.limit else None
    if args.limit:
        (args.work / "clean").mkdir(parents=True)
        for p, im in zip(paths, clean):
            cv2.imwrite(str(args.work / "clean" / f"{p.stem}.png"), im)
        est = estimate(args.work / "clean", reference=reference, reference_images=args.reference_images, seed=args.seed)
    raw = np.percentile(est.raw_noise, [25, 50, 75])
    s = est.spread("sigma")
    print(f"{len(paths)} {args.split} images of {args.data}; reference: {args.reference_images} train images\n")
    print("Clean images: raw wavelet sigma (scikit-image estimate_sigma) median "
          f"{raw[1]:.2f} (IQR {raw[0]:.2f}..{raw[2]:.2f}); twin sigma after the reference correction "
          f"{s[0]:.2f} (IQR {s[1]:.2f}..{s[2]:.2f}); twin params {est.params}\n")

    rows, checks = [], []
    for name, truth, as_jpeg in targets():
        folder = args.work / name.replace(" ", "_").replace("(", "").replace(")", "")
        write_target(paths, truth, as_jpeg, folder, args.seed, int(name.split(" ")[1][1]))
        e = estimate(folder, reference=reference, reference_images=args.reference_images, seed=args.seed)
        true = {**{"sigma": 0, "length": 1, "quality": None}, **truth}
        cells = []
        for key in ("sigma", "length", "quality"):
            med, q1, q3 = e.spread(key)
            iqr = "" if math.isnan(med) or e.params[key] is None else f" ({q1:g}..{q3:g})"
            cells.append(f"{_fmt(true[key])} | {_fmt(e.params[key])}{iqr}")
        rows.append(f"| {name} | {' | '.join(cells)} | {e.params['gain']:g} | {e.params['offset']:g} |")
        twin = Twin(**e.params)
        twinned = [degrade_image(twin, im, p.stem, 1, args.seed) for p, im in zip(paths, clean)]
        got, want = stats(twinned), stats([read_image(p) for p in list_images(folder)])
        # a wavelet sigma JPEG has zeroed (below 0.05 grey levels) has no relative error to speak of
        errs = {k: abs(got[k] - want[k]) / abs(want[k]) for k in STATS if abs(want[k]) >= 0.05}
        checks.append(f"| {name} | " + " | ".join(
            f"{want[k]:.3g} / {got[k]:.3g} ({100 * errs[k]:.0f} %)" if k in errs else f"{want[k]:.2g} / {got[k]:.2g} (—)"
            for k in STATS) + f" | {sum(v <= 0.15 for v in errs.values())}/{len(errs)} |")
    print("True vs estimated parameters (estimate: twin param = median over images, IQR in brackets)\n")
    print("| target | sigma true | sigma est | length true | length est | quality true | quality est | gain | offset |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nImage statistics, median over images: target / twin-degraded val (relative error); "
          "n1, n2 = wavelet sigma at full and half resolution\n")
    print("| target | " + " | ".join(STATS) + " | within 15 % |")
    print("|---|" + "---:|" * (len(STATS) + 1))
    print("\n".join(checks))
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
