"""``harness degrade estimate``: a degradation twin (the ``twin`` plugin's params) measured on unlabelled images.

What is measured, per image:

- JPEG quality: when the file is a JPEG, read from its luminance quantisation table (PIL's ``quantization``),
  the libjpeg quality whose scaled standard table is closest (exact for libjpeg-written files); otherwise from
  *blockiness*, the mean absolute step across 8x8 block boundaries over the mean step inside blocks.
- Noise and blur, by analysis by synthesis: the wavelet noise estimate (scikit-image ``estimate_sigma``, a MAD
  of the finest diagonal detail) read at full, half and quarter resolution (``n1``, ``n2``, ``n4``), with the
  Laplacian's spread (``lap``, what blur lowers and noise raises even where JPEG has zeroed ``n1``), is
  tabulated on *reference* images degraded by the twin itself over a grid of (sigma, length), at the estimated
  quality and contrast. The twin's (sigma, length) is the grid point (sigma interpolated) nearest the images'
  median readings (in logs); each image's own nearest point gives the printed spread. The table is what
  corrects the noise estimate for what blur and JPEG do to it (JPEG at quality 25 zeroes ``n1``; blurred noise
  reads low at the fine scales) and for the texture the reference already has, so a clean image of the same
  product reads sigma ~ 0.
- Brightness and contrast: HSV V mean and spread. ``offset`` is the target's median V mean minus the
  reference's; ``gain`` the ratio of their contrast measured as the spread of 8x8 block means (noise and blur
  hardly touch it). Each is left at 0 / 1 where its 95 % bootstrap interval holds that value.

The reference should be *source-domain train or val images* (``--reference``): the images the twin will later
degrade. Calibration and validation use train/val only, never test (``benchmarks/twin.py`` validates on
NEU-Seg val with train as the reference and refuses ``--split test``). Without a reference, smooth synthetic
textures stand in (then sigma on a real product reads its texture as some noise).

Each printed estimate is the median over the images with its interquartile range. Refused: fewer than
:data:`MIN_IMAGES` images, and a folder mixing grayscale and colour images (one camera, one mode).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from harness.errors import HarnessError
from harness.imageio import list_images, read_image

MIN_IMAGES = 8
#: reference images whose clean statistics (V mean, coarse contrast) set offset and gain
STATS_IMAGES = 256
SIGMAS = (0, 2, 4, 6, 9, 12, 16, 20, 25, 30, 40)
LENGTHS = (1, 3, 5, 7, 11, 15)
QUALITIES = (None, 90, 75, 60, 50, 40, 30, 25, 20, 15, 10, 6)
#: calibrated, like the rest of the estimator, on NEU-Seg train/val only (benchmarks/twin.py)
BLOCKY_MARGIN = 0.1
#: libjpeg's standard luminance table (ITU T.81 Annex K), natural order
STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)


def ijg_table(quality: int) -> np.ndarray:
    """libjpeg's luminance table at ``quality`` (``jpeg_quality_scaling``, baseline-clamped to 1..255)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((STD_LUMA * scale + 50) / 100), 1, 255)


_TABLES = np.stack([ijg_table(q) for q in range(1, 101)])


def jpeg_file_quality(path: Path) -> int | None:
    """The libjpeg quality of a JPEG file's luminance table; None when the file is not a JPEG."""
    from PIL import Image

    with Image.open(io.BytesIO(Path(path).read_bytes())) as im:
        if im.format != "JPEG" or not getattr(im, "quantization", None):
            return None
        table = np.array(im.quantization[0], np.float64)
    if table.size != 64:
        return None
    return int(np.argmin(np.abs(np.log(_TABLES) - np.log(np.maximum(table, 1))).sum(axis=1))) + 1


def gray(image: np.ndarray) -> np.ndarray:
    return (image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).astype(np.float64)


def blockiness(g: np.ndarray) -> float:
    """Mean |step| across 8x8 block boundaries over the mean |step| inside blocks (about 1 when unblocked)."""
    ratios = []
    for d in (np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0)).T):
        edge = (np.arange(d.shape[1]) % 8) == 7
        inner = d[:, ~edge].mean()
        if edge.any() and inner > 0:
            ratios.append(d[:, edge].mean() / inner)
    return float(np.mean(ratios)) if ratios else 1.0


def _mad(c: np.ndarray) -> float:
    return float(np.median(np.abs(c)) / 0.6745)


def _pooled_sigma(g: np.ndarray, k: int) -> float:
    """Wavelet noise sigma of ``g`` averaged over k x k blocks, times k (white noise reads the same at every k;
    blurred noise reads lower at small k; JPEG leaves the coarse scales' noise)."""
    from skimage.restoration import estimate_sigma

    if k > 1:
        h, w = g.shape[0] // k * k, g.shape[1] // k * k
        g = g[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    return float(estimate_sigma(g)) * k


def features(image: np.ndarray) -> dict[str, float]:
    """Noise read at three scales (``n1``, ``n2``, ``n4``), the Laplacian's standard deviation (``lap``), coarse
    contrast, blockiness, V mean and spread.

    ``n1`` is scikit-image's ``estimate_sigma`` (the raw wavelet estimate); ``coarse`` the spread of 8x8 block
    means, which noise and blur hardly touch, so it measures the scene's contrast.
    """
    g = gray(image)
    v = image.max(axis=2).astype(np.float64) if image.ndim == 3 else g
    h, w = g.shape[0] // 8 * 8, g.shape[1] // 8 * 8
    coarse = max(float(g[:h, :w].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3)).std()), 1e-3)
    return {"n1": _pooled_sigma(g, 1), "n2": _pooled_sigma(g, 2), "n4": _pooled_sigma(g, 4), "coarse": coarse,
            "lap": math.sqrt(float(cv2.Laplacian(g, cv2.CV_64F).var())),
            "blockiness": blockiness(g), "v_mean": float(v.mean()), "v_std": float(v.std())}


FEATURES = ("n1", "n2", "n4", "lap")


def _twin(params: dict[str, Any]):
    from plugins.degradations.twin import Twin

    return Twin(**params)


def _simulate(refs: list[np.ndarray], params: dict[str, Any], seed: int) -> list[dict[str, float]]:
    """Features of the reference images degraded by a twin with ``params`` (each image its own seeded rng)."""
    plugin = _twin(params)
    out = []
    for i, im in enumerate(refs):
        rng = np.random.default_rng([seed, i, int(params["sigma"] * 100), params["length"]])
        out.append(features(plugin.apply(im, 1, rng)))
    return out


def _median(rows: list[dict[str, float]], key: str) -> float:
    return float(np.median([r[key] for r in rows]))


def synthetic_reference(n: int, shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    """Smooth random textures (blurred noise, V std ~ 12 about 108), the stand-in when no reference is given."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = cv2.GaussianBlur(rng.normal(0, 1, shape[:2]), (0, 0), 2.0)
        im = np.clip(108 + 12 * base / base.std(), 0, 255).astype(np.uint8)
        out.append(cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) if len(shape) == 3 else im)
    return out


@dataclass
class Estimate:
    """Per-image estimates and the twin params (medians) they give."""

    n_images: int
    colour: bool
    jpeg_files: int
    per_image: dict[str, list[float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    raw_noise: list[float] = field(default_factory=list)
    reference: str = "synthetic"

    def spread(self, key: str) -> tuple[float, float, float]:
        v = np.array([x for x in self.per_image[key] if x is not None and not math.isnan(x)], np.float64)
        if v.size == 0:
            return (math.nan, math.nan, math.nan)
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        return float(med), float(q1), float(q3)


def load_images(folder: str | Path, limit: int | None = None) -> tuple[list[Path], list[np.ndarray]]:
    """The folder's images (first ``limit``), refusing too few and a grey/colour mix."""
    paths = list_images(folder)
    if limit is not None:
        paths = paths[:limit]
    if len(paths) < MIN_IMAGES:
        raise HarnessError(f"{folder}: {len(paths)} image(s); estimating a twin needs at least {MIN_IMAGES}")
    images = [read_image(p) for p in paths]
    grey = [p.name for p, im in zip(paths, images) if im.ndim == 2]
    colour = [p.name for p, im in zip(paths, images) if im.ndim == 3]
    if grey and colour:
        raise HarnessError(f"{folder}: mixes grayscale ({grey[0]}, {len(grey)} in all) and colour ({colour[0]}, "
                           f"{len(colour)} in all) images; estimate each camera's images separately")
    return paths, images


def _match_mode(images: list[np.ndarray], colour: bool) -> list[np.ndarray]:
    if colour:
        return [im if im.ndim == 3 else cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) for im in images]
    return [gray(im).astype(np.uint8) if im.ndim == 3 else im for im in images]


def estimate(folder: str | Path, reference: str | Path | None = None, reference_images: int = 24,
             limit: int | None = None, seed: int = 0) -> Estimate:
    """Estimate a twin of the images in ``folder`` (see the module docstring)."""
    paths, images = load_images(folder, limit)
    colour = images[0].ndim == 3
    if reference is not None:
        ref_paths = list_images(reference)
        pick = lambda n: sorted(set(np.linspace(0, len(ref_paths) - 1, min(n, len(ref_paths))).round().astype(int)))  # noqa: E731
        refs = _match_mode([read_image(ref_paths[i]) for i in pick(reference_images)], colour)
        stats_refs = _match_mode([read_image(ref_paths[i]) for i in pick(STATS_IMAGES)], colour)
    else:
        refs = stats_refs = synthetic_reference(reference_images, images[len(images) // 2].shape, seed)
    target = [features(im) for im in images]
    file_q = [jpeg_file_quality(p) for p in paths]
    est = Estimate(n_images=len(images), colour=colour, jpeg_files=sum(q is not None for q in file_q),
                   raw_noise=[t["n1"] for t in target], reference=str(reference) if reference else "synthetic")
    ref_clean = [features(im) for im in stats_refs]
    params: dict[str, Any] = {"sigma": 0.0, "length": 1, "quality": None,
                              "gain": _changed([t["coarse"] for t in target], [r["coarse"] for r in ref_clean],
                                               np.divide, 1.0, seed),
                              "offset": _changed([t["v_mean"] for t in target], [r["v_mean"] for r in ref_clean],
                                                 np.subtract, 0.0, seed)}
    for _ in range(1 if est.jpeg_files == len(paths) else 2):  # blockiness depends on (sigma, length): refine once
        if est.jpeg_files == len(paths):
            qualities = [float(q) for q in file_q]
        else:
            qualities = _qualities_from_blockiness(refs, params, target, seed)
        finite = [q for q in qualities if not math.isnan(q)]
        params["quality"] = int(np.median(finite)) if len(finite) * 2 > len(qualities) else None
        sig, lens, params["sigma"], params["length"] = _sigma_length(refs, params, target, seed)
    est.per_image = {"sigma": sig, "length": [float(x) for x in lens], "quality": qualities,
                     "v_mean": [t["v_mean"] for t in target], "v_std": [t["v_std"] for t in target],
                     "blockiness": [t["blockiness"] for t in target]}
    est.params = params
    return est


def _changed(target: list[float], ref: list[float], op, none: float, seed: int, n: int = 500) -> float:
    """``op(median target, median reference)``, or ``none`` where its 95 % bootstrap interval holds ``none``:
    a contrast or brightness change the samples cannot tell from sampling noise is not applied."""
    t, r = np.asarray(target), np.asarray(ref)
    rng = np.random.default_rng(seed)
    boot = op(np.median(rng.choice(t, (n, t.size)), axis=1), np.median(rng.choice(r, (n, r.size)), axis=1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return none if lo <= none <= hi else round(float(op(np.median(t), np.median(r))), 3)


def _qualities_from_blockiness(refs, params, target, seed) -> list[float]:
    """Per image, the quality (NaN = no JPEG) whose twin-degraded references have the nearest median blockiness."""
    levels = []
    for q in QUALITIES:
        sim = _simulate(refs, {**params, "quality": q}, seed)
        levels.append(_median(sim, "blockiness"))
    levels_arr = np.log(np.array(levels))
    out = []
    for t in target:
        b = math.log(max(t["blockiness"], 1e-6))
        # no JPEG unless blockier than the references by BLOCKY_MARGIN: their own (e.g. NEU's original) JPEG
        i = 0 if b < levels_arr[0] + math.log(1 + BLOCKY_MARGIN) else int(np.argmin(np.abs(levels_arr - b)))
        out.append(math.nan if QUALITIES[i] is None else float(QUALITIES[i]))
    return out


def _sigma_length(refs, params, target, seed) -> tuple[list[float], list[int], float, int]:
    """Per image, and for the images' median features (the twin's params), the (sigma, length) whose
    twin-degraded references' median features are nearest (in logs)."""
    fine = np.linspace(SIGMAS[0], SIGMAS[-1], 4 * (SIGMAS[-1] - SIGMAS[0]) + 1)
    grid = []  # per length: (len(fine), 2) log features along sigma
    for length in LENGTHS:
        rows = []
        for s in SIGMAS:
            sim = _simulate(refs, {**params, "sigma": float(s), "length": length}, seed)
            rows.append([math.log(_median(sim, k) + 0.1) for k in FEATURES])
        rows_arr = np.array(rows)
        grid.append(np.stack([np.interp(fine, SIGMAS, rows_arr[:, k]) for k in range(len(FEATURES))], axis=1))
    table = np.stack(grid)  # (lengths, fine sigmas, 2)
    logs = np.array([[math.log(t[k] + 0.1) for k in FEATURES] for t in target])
    li, si = np.unravel_index(int(np.argmin(((table - np.median(logs, axis=0)) ** 2).sum(axis=2))), table.shape[:2])
    # one image's readings cannot tell blurred noise from texture: its sigma is read at the twin's length, and
    # its length at the twin's sigma
    sig = [float(fine[np.argmin(((table[li] - f) ** 2).sum(axis=1))]) for f in logs]
    lens = [int(LENGTHS[np.argmin(((table[:, si] - f) ** 2).sum(axis=1))]) for f in logs]
    return sig, lens, float(fine[si]), int(LENGTHS[li])


def entry(est: Estimate, label: str = "twin") -> dict[str, Any]:
    """The degradation entry a matrix's ``degradations`` (or ``train_on: {augment: ...}``) takes."""
    return {"name": "twin", "label": label, "params": dict(est.params), "severities": [1]}


def report(est: Estimate) -> str:
    """The estimates, each with its median and IQR over the images."""
    lines = [f"{est.n_images} {'colour' if est.colour else 'grayscale'} images ({est.jpeg_files} JPEG files); "
             f"reference: {est.reference}",
             f"{'estimate':<22}{'median':>9}{'IQR':>19}   twin param"]
    raw = np.percentile(est.raw_noise, [25, 50, 75])
    rows = [("noise sigma", "sigma", f"sigma = {est.params['sigma']}"),
            ("blur length (px)", "length", f"length = {est.params['length']}"),
            ("JPEG quality", "quality", f"quality = {est.params['quality']}"),
            ("brightness (V mean)", "v_mean", f"offset = {est.params['offset']}"),
            ("contrast (V std)", "v_std", f"gain = {est.params['gain']}")]
    for title, key, param in rows:
        med, q1, q3 = est.spread(key)
        cell = "—" if math.isnan(med) else f"{med:9.2f}{f'{q1:.2f}..{q3:.2f}':>19}"
        if math.isnan(med):
            cell = f"{'none':>9}{'':>19}"
        lines.append(f"{title:<22}{cell}   {param}")
    lines.append(f"{'raw wavelet sigma':<22}{raw[1]:9.2f}{f'{raw[0]:.2f}..{raw[2]:.2f}':>19}   (before correction)")
    return "\n".join(lines)
