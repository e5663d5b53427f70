"""Image statistics recorded in dataset.json: brightness normalisation and sharpness.

Sharpness (variance of the Laplacian) is stored per split so a later run can tell whether a
"domain B" is blurrier than domain A without re-reading every image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from harness.imageio import read_image


def _value_channel(img: np.ndarray) -> np.ndarray:
    """HSV V (max of B, G, R); for grayscale the intensity itself."""
    return img if img.ndim == 2 else img.max(axis=2)


def normalize_v_mean(img: np.ndarray, target: float) -> np.ndarray:
    """Scale all channels so the HSV V-channel mean becomes ``target`` (domain-A normalisation).

    Scaling B, G, R by one factor scales V by the same factor and keeps hue and saturation, so no
    colour-space round trip is needed. A black image is returned unchanged.
    """
    mean = float(_value_channel(img).mean())
    if mean <= 0:
        return img.copy()
    scaled = img.astype(np.float32) * np.float32(target / mean)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def laplacian_variance(img: np.ndarray) -> float:
    gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def summarize(values: Iterable[float]) -> dict[str, float | None]:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "median": None}
    return {"mean": round(float(arr.mean()), 4), "median": round(float(np.median(arr)), 4)}


def split_sharpness(paths: Iterable[str | Path]) -> dict[str, float | None]:
    """Mean and median variance of Laplacian over image files."""
    return summarize(laplacian_variance(read_image(p)) for p in paths)
