"""``twin``: a degradation twin of a real camera, with the parameters ``harness degrade estimate`` measured.

One level (severity 1): the estimate. In order, as ``domain_b`` orders its parts so that the estimates compare:

1. brightness and contrast: every channel is mapped by ``x -> m + gain * (x - m) + offset``, with ``m`` the
   image's own HSV V mean (V = max of the channels), so V's spread is scaled by ``gain`` and its mean moved by
   ``offset`` grey levels;
2. Gaussian noise of ``sigma`` grey levels (``gaussian_noise``'s :func:`add_noise`);
3. motion blur of ``length`` px at an angle drawn from ``rng`` (``motion_blur``'s :func:`blur`; 1 = none);
4. a JPEG round trip at ``quality`` (``null`` = none).

All randomness comes from the host's ``rng``, so an image's twin depends only on (image, params, seed).
Nothing here is tuned: the defaults are "no change", and the estimator that sets the params is calibrated on
NEU-Seg train/val only (``harness.estimate``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.interfaces import Degradation
from plugins.degradations.blur import blur
from plugins.degradations.jpeg import jpeg_roundtrip
from plugins.degradations.noise import add_noise


def _number(name: str, value: Any, lo: float, hi: float, kind: type = float) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi
    if not ok or (kind is int and value != int(value)):
        raise HarnessError(f"degradation 'twin': '{name}' value {value!r} is not {kind.__name__} in {lo}..{hi}")
    return kind(value)


def brightness_contrast(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """Scale V's spread about the image's V mean by ``gain`` and shift it by ``offset`` (same map on every
    channel, so V = max of the channels follows it exactly)."""
    if gain == 1.0 and offset == 0.0:
        return image
    x = image.astype(np.float64)
    m = (x.max(axis=2) if x.ndim == 3 else x).mean()
    return np.clip(np.rint(m + gain * (x - m) + offset), 0, 255).astype(np.uint8)


class Twin(Degradation):
    """Brightness/contrast -> noise -> motion blur -> JPEG with estimated parameters."""

    name = "twin"
    version = "1"
    summary = "estimated twin of a camera (harness degrade estimate): contrast -> noise -> blur -> JPEG"
    severities = (1,)
    params = {"sigma": 0.0, "length": 1, "quality": None, "gain": 1.0, "offset": 0.0}
    levels = {1: dict(params)}

    def __init__(self, **params: Any):
        super().__init__(**params)
        c = self.config
        self.sigma = _number("sigma", c["sigma"], 0, 255)
        self.length = _number("length", c["length"], 1, 101, int)
        self.quality = None if c["quality"] is None else _number("quality", c["quality"], 1, 100, int)
        self.gain = _number("gain", c["gain"], 0.01, 100)
        self.offset = _number("offset", c["offset"], -255, 255)
        self.levels = {1: dict(c)}

    def apply(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        out = brightness_contrast(image, self.gain, self.offset)
        if self.sigma > 0:
            out = add_noise(out, self.sigma, rng)
        if self.length > 1:
            out = blur(out, self.length, rng)
        if self.quality is not None:
            out = jpeg_roundtrip(out, self.quality)
        return out if out is not image else image.copy()
