"""``gaussian_noise``: additive, zero-mean Gaussian sensor noise, independent per pixel and channel.

Sigma is in 0..255 grey levels. NEU-Seg images are low-contrast (inclusion/scratch images have a
pixel std of roughly 10-16), so the table stops well below imagecorruptions' 20..97: severity 3 already
matches the contrast of a faint inclusion, severity 5 buries most of them.

| severity | sigma |
|---|---|
| 1 | 4 |
| 2 | 8 |
| 3 | 12 |
| 4 | 18 |
| 5 | 26 |

Override with ``sigmas`` (five values).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.degrade import per_severity
from harness.interfaces import Degradation


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = image + rng.normal(0.0, sigma, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


class GaussianNoise(Degradation):
    """Additive Gaussian sensor noise."""

    name = "gaussian_noise"
    version = "1"
    summary = "additive Gaussian sensor noise (sigma 4..26 grey levels)"
    params = {"sigmas": [4, 8, 12, 18, 26]}
    levels = {s: {"sigma": v} for s, v in zip(Degradation.severities, params["sigmas"])}

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.sigmas = per_severity(self, "sigmas", float, 0, 255)
        self.levels = {s: {"sigma": v} for s, v in zip(self.severities, self.config["sigmas"])}

    def apply(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        return add_noise(image, self.sigmas[self.severities.index(severity)], rng)
