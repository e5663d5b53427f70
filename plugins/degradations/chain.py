"""``domain_b``: the seed report's "messy" domain B, Gaussian noise → motion blur → JPEG in that order.

Noise comes first, as in a sensor, so the blur smears it into streaks and JPEG then blocks it; that is
why the noise sigmas here are higher than ``gaussian_noise``'s for a similar visible grain. Severity 3
is the seed report's domain B: clearly noisy, blurred and blocky at 200x200, defects still visible.

| severity | sigma | length (px) | quality |
|---|---|---|---|
| 1 | 6 | 3 | 50 |
| 2 | 10 | 5 | 35 |
| 3 | 15 | 5 | 25 |
| 4 | 22 | 7 | 15 |
| 5 | 30 | 11 | 10 |

Override with ``sigmas``, ``lengths``, ``qualities`` (five values each).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.degrade import per_severity
from harness.interfaces import Degradation
from plugins.degradations.blur import blur
from plugins.degradations.jpeg import jpeg_roundtrip
from plugins.degradations.noise import add_noise

_DEFAULTS = {"sigmas": [6, 10, 15, 22, 30], "lengths": [3, 5, 5, 7, 11], "qualities": [50, 35, 25, 15, 10]}


def _levels(sigmas: list, lengths: list, qualities: list) -> dict[int, dict[str, Any]]:
    return {s: {"sigma": n, "length": b, "quality": q}
            for s, n, b, q in zip(Degradation.severities, sigmas, lengths, qualities)}


class DomainB(Degradation):
    """Noise → motion blur → JPEG, the seed report's domain B."""

    name = "domain_b"
    version = "1"
    summary = "seed report's domain B: noise -> motion blur -> JPEG (severity 3 = seed's 'messy')"
    params = _DEFAULTS
    levels = _levels(**_DEFAULTS)

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.sigmas = per_severity(self, "sigmas", float, 0, 255)
        self.lengths = per_severity(self, "lengths", int, 1, 101)
        self.qualities = per_severity(self, "qualities", int, 1, 100)
        self.levels = _levels(self.config["sigmas"], self.lengths, self.qualities)

    def apply(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        i = self.severities.index(severity)
        noisy = add_noise(image, self.sigmas[i], rng)
        return jpeg_roundtrip(blur(noisy, self.lengths[i], rng), self.qualities[i])
