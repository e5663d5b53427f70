"""``unsharp``: unsharp masking, an adapter that restores some of the edge contrast a blurred (domain-B)
camera loses, at the cost of amplifying noise.

``out = image + amount * (image - gaussian_blur(image, sigma))``, changed only where the difference
exceeds ``threshold`` grey levels (so flat, noisy areas are left alone), clipped to 0..255.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from harness.errors import HarnessError
from harness.hookspecs import hookimpl
from harness.interfaces import Adapter

LIMITS = {"amount": (0.0, 10.0), "sigma": (0.1, 20.0), "threshold": (0.0, 255.0)}


class Unsharp(Adapter):
    """Unsharp mask: adds back a multiple of the image minus its Gaussian blur."""

    name = "unsharp"
    version = "1"  # bump when the output for the same input and params changes
    summary = "unsharp mask (cv2 Gaussian): amount, sigma, threshold in grey levels"
    params = {"amount": 0.8, "sigma": 1.5, "threshold": 2.0}

    def __init__(self, **params: Any):
        super().__init__(**params)
        for key, (lo, hi) in LIMITS.items():
            value = self.config[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise HarnessError(f"adapter 'unsharp': {key} must be a number in {lo}..{hi}, got {value!r}")

    def adapt(self, image: np.ndarray) -> np.ndarray:
        src = image.astype(np.float32)
        detail = src - cv2.GaussianBlur(src, (0, 0), float(self.config["sigma"]))
        detail[np.abs(detail) < float(self.config["threshold"])] = 0.0
        out = src + float(self.config["amount"]) * detail
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@hookimpl
def harness_register_adapters(register):
    register(Unsharp)
