"""Brightness and contrast adapters: CLAHE, V-mean normalisation, histogram matching to domain A.

They work on the HSV value channel V = max(B, G, R) (the intensity itself for grayscale) and write a
new V back by scaling each pixel's B, G, R by V'/V: hue and saturation are scale invariant, so this is
exact where an 8-bit HSV round trip would quantise hue. Domain A is normalised by the dataset importer
to a V mean of 108 (``harness.data.stats.normalize_v_mean``), which ``vmean`` reproduces.

CLAHE's defaults (the customary clip 2, 8x8 tiles) and vmean's 108 (the seed report's domain A) are not
tuned on data; histmatch's ``reference`` was chosen from NEU-Seg train statistics (see HistMatch).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from harness.data.stats import normalize_v_mean
from harness.errors import HarnessError
from harness.hashing import seed_from
from harness.imageio import read_image
from plugins.adapters.classical import Filter, as_uint8, choice, integer, number


def value_channel(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else image.max(axis=2)


def with_value(image: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``image`` with its V channel replaced by ``value``, hue and saturation kept (black turns grey)."""
    if image.ndim == 2:
        return as_uint8(value)
    v = image.max(axis=2).astype(np.float32)
    scale = np.divide(value, v, out=np.zeros_like(v), where=v > 0)[:, :, None]
    out = image.astype(np.float32) * scale
    black = v == 0
    out[black] = np.asarray(value, np.float32)[black][:, None]
    return as_uint8(out)


def pick(paths: list[Path], n: int, *seed_parts) -> list[Path]:
    """A seeded sample of ``n`` paths (all of them when there are fewer), in the input order."""
    paths = sorted(paths)
    if len(paths) <= n:
        return paths
    rng = np.random.default_rng(seed_from(*seed_parts))
    return [paths[i] for i in sorted(rng.choice(len(paths), size=n, replace=False))]


class CLAHE(Filter):
    """Contrast-limited adaptive histogram equalisation on L of LAB (or V of HSV) for colour images."""

    name = "clahe"
    version = "1"
    summary = "CLAHE (cv2): clip_limit, tile grid; colour on L of LAB or V of HSV"
    params = {"clip_limit": 2.0, "tile": 8, "space": "lab"}
    checks = {"clip_limit": number(0.01, 1000), "tile": integer(1, 64), "space": choice("lab", "hsv")}

    def filter(self, image: np.ndarray) -> np.ndarray:
        tile = int(self.config["tile"])
        clahe = cv2.createCLAHE(clipLimit=float(self.config["clip_limit"]), tileGridSize=(tile, tile))
        if image.ndim == 2:
            return clahe.apply(image)
        if self.config["space"] == "hsv":
            return with_value(image, clahe.apply(np.ascontiguousarray(image.max(axis=2))))
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


class VMean(Filter):
    """Scale brightness so the V mean is ``target``: undoes a global exposure change, nothing else."""

    name = "vmean"
    version = "1"
    summary = "scale B, G, R so the HSV V mean equals target (domain A: 108)"
    params = {"target": 108.0}
    checks = {"target": number(1, 255)}

    def filter(self, image: np.ndarray) -> np.ndarray:
        return normalize_v_mean(image, float(self.config["target"]))


def match_lut(image_hist: np.ndarray, reference_hist: np.ndarray) -> np.ndarray:
    """256-entry LUT sending each level's CDF value to the reference level with the same CDF value
    (interpolated between the reference's occupied levels, as ``skimage.exposure.match_histograms``)."""
    src_cdf = np.cumsum(image_hist) / max(float(image_hist.sum()), 1.0)
    levels = np.flatnonzero(reference_hist)
    ref_cdf = np.cumsum(reference_hist[levels]) / float(reference_hist.sum())
    return as_uint8(np.interp(src_cdf, ref_cdf, levels.astype(np.float64)))


class HistMatch(Filter):
    """Map each image's V histogram onto a domain-A reference histogram fitted on training images.

    ``reference: barycenter`` (default) averages the images' quantile functions: the histogram of a typical
    A image (the 1-D Wasserstein barycenter). ``pooled`` sums the images' histograms; on a domain whose
    images differ in contrast that mixture is wider than a typical image (NEU-Seg train, the 256 images a
    fit picks: grey-level s.d. 34 pooled against a median of 27 per image, quartiles 16-40), so matching to
    it stretches the contrast of most images, a quarter of them twofold.
    """

    name = "histmatch"
    version = "2"
    summary = "histogram matching of V to domain A (quantile barycenter or pooled histogram of source images)"
    trainable = True
    fit_data = "source"
    params = {"fit_images": 256, "reference": "barycenter"}
    selected_on = "NEU-Seg train (256 images: the reference's width)"
    checks = {"fit_images": integer(1), "reference": choice("barycenter", "pooled")}
    quick_params = {"fit_images": 4}
    FILE = "histogram.json"
    QUANTILES = 4096

    def __init__(self, **params):
        super().__init__(**params)
        self.reference: np.ndarray | None = None

    def fit(self, source: list[Path], target: list[Path], fit_dir: Path, seed: int, progress: bool = True) -> None:
        if not source:
            raise HarnessError(f"adapter '{self.name}': fit needs domain-A source images, got none")
        chosen = pick(list(map(Path, source)), int(self.config["fit_images"]), self.name, seed)
        values = [value_channel(read_image(path)).ravel() for path in chosen]
        if self.config["reference"] == "pooled":
            hist = sum(np.bincount(v, minlength=256) for v in values)
        else:
            levels = (np.arange(self.QUANTILES) + 0.5) / self.QUANTILES
            mean_quantiles = np.mean([np.quantile(v, levels) for v in values], axis=0)
            hist = np.bincount(np.clip(np.rint(mean_quantiles), 0, 255).astype(np.int64), minlength=256)
        fit_dir = Path(fit_dir)
        fit_dir.mkdir(parents=True, exist_ok=True)
        (fit_dir / self.FILE).write_text(json.dumps({"images": len(chosen), "reference": self.config["reference"],
                                                     "histogram": np.asarray(hist).tolist()}))

    def load(self, fit_dir: Path | None) -> None:
        path = Path(fit_dir or ".") / self.FILE
        if fit_dir is None or not path.is_file():
            raise HarnessError(f"adapter '{self.name}': {path} not found; fit the adapter first")
        hist = np.asarray(json.loads(path.read_text())["histogram"], np.float64)
        if hist.shape != (256,) or hist.sum() <= 0:
            raise HarnessError(f"{path}: 'histogram' must hold 256 counts, not all zero")
        self.reference = hist

    def filter(self, image: np.ndarray) -> np.ndarray:
        if self.reference is None:
            raise HarnessError(f"adapter '{self.name}': not fitted (call load(fit_dir) first)")
        value = value_channel(image)
        lut = match_lut(np.bincount(value.ravel(), minlength=256), self.reference)
        return with_value(image, lut[value])


ILLUMINATION = [CLAHE, VMean, HistMatch]
