"""``motion_blur``: linear motion blur, the camera or part moving during exposure.

The kernel is a straight line spanning ``length`` pixels through the centre of an odd square, at an
angle drawn uniformly from [0, 180) degrees by ``rng`` (anti-aliased, normalised to sum 1), applied with
``cv2.filter2D`` and a reflected border. Lengths suit 200x200 images (imagecorruptions uses up to ~20 px
at 224x224): at 7 px thin scratches across the motion smear visibly, at 15 px small inclusions fade.

| severity | length (px) |
|---|---|
| 1 | 3 |
| 2 | 5 |
| 3 | 7 |
| 4 | 11 |
| 5 | 15 |

Override with ``lengths`` (five values; 1 means no blur).
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from harness.degrade import per_severity
from harness.interfaces import Degradation


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """Normalised line kernel (odd size >= length) at ``angle_deg``, built by bilinear splatting of
    points along the line so that every angle gives the same line length and weight."""
    size = length + 1 - length % 2
    kernel = np.zeros((size, size), np.float64)
    c = (size - 1) / 2
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, 8 * length)
    a = math.radians(angle_deg)
    x, y = c + t * math.cos(a), c - t * math.sin(a)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)), w)
    return (kernel / kernel.sum()).astype(np.float32)


def blur(image: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    kernel = motion_kernel(length, rng.uniform(0.0, 180.0))
    out = cv2.filter2D(image.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class MotionBlur(Degradation):
    """Linear motion blur at a random angle."""

    name = "motion_blur"
    version = "1"
    summary = "linear motion blur at a random angle (length 3..15 px)"
    params = {"lengths": [3, 5, 7, 11, 15]}
    levels = {s: {"length": v} for s, v in zip(Degradation.severities, params["lengths"])}

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.lengths = per_severity(self, "lengths", int, 1, 101)
        self.levels = {s: {"length": v} for s, v in zip(self.severities, self.lengths)}

    def apply(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        return blur(image, self.lengths[self.severities.index(severity)], rng)
