"""Training-free denoisers: NLM, bilateral, median, Gaussian, BM3D, wavelet, TV.

Defaults are tuned for ``domain_b`` severity 3 (noise sigma 15 → motion blur 5 px → JPEG q25) on
NEU-Seg: the blur averages the sensor noise down but makes it coarse and correlated, and JPEG blocks it,
so noise estimators see little noise and filters need a larger support than for white noise. Each
default is the best PSNR against the clean image over a small grid (``benchmarks/adapters.py --tune``,
which refuses test images) on NEU-Seg **val**: 48 images spread over the split, 24 for BM3D; degraded
input 31.4 dB / SSIM 0.747 (31.6 / 0.746 on BM3D's 24). The first tuning looked at 12 test images (8 for
BM3D); on val, bilateral, gaussian and tv changed (version 2; in brackets, the old default's val figures),
the others kept theirs (in brackets, a runner-up):

| adapter | default | PSNR dB | SSIM |
|---|---|---|---|
| nlm | h 7 (5: 33.91 dB) | 33.97 | 0.832 |
| bilateral | d 9, sigma_color 30, sigma_space 3 (sigma_space 5: 33.06 dB, 0.806) | 33.11 | 0.810 |
| median | ksize 5 (3: 32.33 dB, 7: 32.19) | 32.58 | 0.799 |
| gaussian | sigma 1 (2: 32.31 dB, 0.796) | 32.64 | 0.806 |
| bm3d | sigma 15, stage all (hard: 34.35 dB at sigma 10, 3x faster) | 34.41 | 0.845 |
| wavelet | sigma 12, db2 (the estimate, sigma null: 31.40 dB) | 32.82 | 0.808 |
| tv | weight 0.03 (0.06: 33.24 dB, 0.811) | 33.48 | 0.823 |

Defaults at the grid's edge were checked past it: gaussian sigma 0.75 gives 32.44 dB and tv weight 0.02
33.45 (both lower), wavelet sigma 10 32.83 (a flat top: 12 kept). A 7x7 median would erase lines up to 3 px
wide, 5x5 up to 2.

Colour images are filtered per BGR channel, except NLM (OpenCV's Colored variant, which filters luma
and chroma with separate strengths) and BM3D (CBM3D: opponent colour transform, block matching on
luminance, like ``bm3d.bm3d_rgb`` but honouring ``stage``).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import cv2
import numpy as np
import pywt

from harness.errors import HarnessError
from harness.interfaces import Adapter

Check = tuple[Callable[[Any], bool], str]

#: ``selected_on`` of the defaults re-tuned on val (see the table) and of those the first, test tuning chose
VAL = "NEU-Seg val (48 images)"
VAL_SAME = "NEU-Seg val (48 images; the same default as first picked on 12 test images)"
BEFORE = "NEU-Seg test (12 images), before re-tuning"


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def number(lo: float, hi: float = float("inf")) -> Check:
    return (lambda v: _real(v) and lo <= v <= hi), f"a number in {lo}..{hi}"


def integer(lo: int, hi: int | float = float("inf"), odd: bool = False, zero: bool = False) -> Check:
    def ok(v: Any) -> bool:
        if not (_real(v) and v == int(v)):
            return False
        return (zero and v == 0) or (lo <= v <= hi and (not odd or int(v) % 2 == 1))
    what = f"{'an odd' if odd else 'an'} integer >= {lo}" + (f" and <= {hi}" if hi != float("inf") else "")
    return ok, what + (" (or 0)" if zero else "")


def choice(*options: Any) -> Check:
    return (lambda v: v in options), "one of " + ", ".join(map(repr, options))


def optional(check: Check) -> Check:
    return (lambda v: v is None or check[0](v)), f"null or {check[1]}"


def as_uint8(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.uint8 else np.clip(np.rint(x), 0, 255).astype(np.uint8)


def per_channel(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` on a 2-D image, or on each channel of a colour one, each result clipped to uint8."""
    if image.ndim == 2:
        return as_uint8(fn(image))
    return np.dstack([as_uint8(fn(np.ascontiguousarray(image[:, :, c]))) for c in range(image.shape[2])])


class Filter(Adapter):
    """Base of the statistics-free and statistics-fitted adapters in this package.

    ``checks`` validates ``config`` when the adapter is built (a typo fails at config load, not after an
    hour of degrading); ``adapt`` checks the input, calls ``filter`` and returns a uint8 image of the
    input's shape, whatever float range ``filter`` produced.
    """

    checks: ClassVar[dict[str, Check]] = {}

    def __init__(self, **params: Any):
        super().__init__(**params)
        for key, (ok, what) in self.checks.items():
            if not ok(self.config[key]):
                raise HarnessError(f"adapter '{self.name}': parameter '{key}' must be {what}, "
                                   f"got {self.config[key]!r}")

    def filter(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def adapt(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise HarnessError(f"adapter '{self.name}': expected a uint8 HxW or HxWx3 image, "
                               f"got {'x'.join(map(str, image.shape))} {image.dtype}")
        out = as_uint8(self.filter(image))
        assert out.shape == image.shape, (self.name, out.shape, image.shape)
        return out


class NLM(Filter):
    """OpenCV non-local means; ``h`` is the luma strength, ``h_color`` the chroma one (colour only)."""

    name = "nlm"
    version = "1"
    summary = "non-local means (cv2.fastNlMeansDenoising[Colored]), h = filter strength"
    params = {"h": 7.0, "h_color": 7.0, "template": 7, "search": 21}
    selected_on = VAL_SAME
    checks = {"h": number(0.01, 255), "h_color": number(0, 255),
              "template": integer(3, 99, odd=True), "search": integer(3, 99, odd=True)}

    def filter(self, image: np.ndarray) -> np.ndarray:
        c = self.config
        if image.ndim == 2:
            return cv2.fastNlMeansDenoising(image, None, float(c["h"]), int(c["template"]), int(c["search"]))
        return cv2.fastNlMeansDenoisingColored(image, None, float(c["h"]), float(c["h_color"]),
                                               int(c["template"]), int(c["search"]))


class Bilateral(Filter):
    """Edge-preserving bilateral filter (``d`` pixel neighbourhood, sigmas in grey levels and pixels)."""

    name = "bilateral"
    version = "2"
    summary = "bilateral filter (cv2.bilateralFilter): d, sigma_color, sigma_space"
    params = {"d": 9, "sigma_color": 30.0, "sigma_space": 3.0}
    selected_on = VAL
    selected_before = {"1": BEFORE}
    checks = {"d": integer(1, 31), "sigma_color": number(0.01, 1000), "sigma_space": number(0.01, 100)}

    def filter(self, image: np.ndarray) -> np.ndarray:
        c = self.config
        return cv2.bilateralFilter(image, int(c["d"]), float(c["sigma_color"]), float(c["sigma_space"]))


class Median(Filter):
    """Median filter: removes impulsive grain, keeps step edges."""

    name = "median"
    version = "1"
    summary = "median filter (cv2.medianBlur), ksize odd >= 3"
    params = {"ksize": 5}
    selected_on = VAL_SAME
    checks = {"ksize": integer(3, 255, odd=True)}

    def filter(self, image: np.ndarray) -> np.ndarray:
        return cv2.medianBlur(image, int(self.config["ksize"]))


class Gaussian(Filter):
    """Gaussian low-pass: the weakest baseline, blurs defects as much as noise."""

    name = "gaussian"
    version = "2"
    summary = "Gaussian blur (cv2.GaussianBlur): sigma, ksize (0 = from sigma)"
    params = {"sigma": 1.0, "ksize": 0}
    selected_on = VAL
    selected_before = {"1": BEFORE}
    checks = {"sigma": number(0.01, 50), "ksize": integer(1, 255, odd=True, zero=True)}

    def filter(self, image: np.ndarray) -> np.ndarray:
        k = int(self.config["ksize"])
        return cv2.GaussianBlur(image, (k, k), float(self.config["sigma"]), borderType=cv2.BORDER_REFLECT_101)


class BM3D(Filter):
    """BM3D (Dabov et al. 2007) from the ``bm3d`` package; ``stage: hard`` skips the Wiener pass (~2x faster)."""

    name = "bm3d"
    version = "1"
    summary = "BM3D denoiser (bm3d package): sigma in grey levels, stage all | hard"
    params = {"sigma": 15.0, "stage": "all", "workers": 0}
    selected_on = "NEU-Seg val (24 images; the same default as first picked on 8 test images)"
    checks = {"sigma": number(0.01, 255), "stage": choice("all", "hard"), "workers": integer(0)}
    quick_params = {"stage": "hard"}
    runtime_params = ("workers",)

    def adapt_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One process per core (``workers``, 0 = all): BM3D runs single-threaded to stay deterministic."""
        import os
        from concurrent.futures import ProcessPoolExecutor

        workers = min(int(self.config["workers"]) or os.cpu_count() or 1, len(images))
        if workers <= 1:
            return [self.adapt(im) for im in images]
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(self.adapt, images))

    def filter(self, image: np.ndarray) -> np.ndarray:
        import bm3d

        profile = bm3d.BM3DProfile()
        profile.num_threads = 1  # threaded aggregation adds floats in a varying order: output varies
        stage = bm3d.BM3DStages.ALL_STAGES if self.config["stage"] == "all" else bm3d.BM3DStages.HARD_THRESHOLDING
        sigma = float(self.config["sigma"]) / 255.0
        if image.ndim == 2:
            return 255.0 * bm3d.bm3d(image / 255.0, sigma, profile, stage_arg=stage)
        rgb = image[:, :, ::-1] / 255.0
        opp, imax, imin, scale, _ = bm3d.rgb_to(rgb, "opp")
        est = bm3d.bm3d(opp, sigma * np.sqrt(scale).ravel(), profile, stage_arg=stage)
        out = bm3d.rgb_to(est, "opp", True, imax, imin)[0]
        return 255.0 * out[:, :, ::-1]


class Wavelet(Filter):
    """Wavelet shrinkage (BayesShrink, soft); ``sigma: null`` estimates the noise from the finest band.

    The estimate is useless on domain B: blur and JPEG empty the finest band, so it finds almost no noise
    and the output equals the input (31.4 dB on the val images of the table); hence a fixed default."""

    name = "wavelet"
    version = "1"
    summary = "wavelet denoising (skimage, BayesShrink soft), sigma null = estimated"
    params = {"sigma": 12.0, "wavelet": "db2", "levels": None}
    selected_on = VAL_SAME
    checks = {"sigma": optional(number(0.01, 255)), "levels": optional(integer(1, 8)),
              "wavelet": ((lambda v: v in pywt.wavelist(kind="discrete")), "a discrete PyWavelets name, e.g. db2")}

    def filter(self, image: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_wavelet

        c = self.config
        sigma = None if c["sigma"] is None else float(c["sigma"]) / 255.0
        levels = None if c["levels"] is None else int(c["levels"])
        return per_channel(image, lambda ch: 255.0 * denoise_wavelet(
            ch / 255.0, sigma=sigma, wavelet=c["wavelet"], mode="soft", wavelet_levels=levels,
            method="BayesShrink", rescale_sigma=True))


class TV(Filter):
    """Total-variation denoising (Chambolle); ``weight`` on the 0..1 intensity scale."""

    name = "tv"
    version = "2"
    summary = "total-variation denoising (skimage Chambolle), weight"
    params = {"weight": 0.03}
    selected_on = VAL
    selected_before = {"1": BEFORE}
    checks = {"weight": number(0.0001, 10)}

    def filter(self, image: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_tv_chambolle

        weight = float(self.config["weight"])
        return per_channel(image, lambda ch: 255.0 * denoise_tv_chambolle(ch / 255.0, weight=weight))


CLASSICAL = [NLM, Bilateral, Median, Gaussian, BM3D, Wavelet, TV]
