"""Image fidelity of adapted images against their clean originals: PSNR and SSIM (scikit-image).

Domain B is synthesised from domain A, so every adapted image has an exact clean reference. These
numbers separate "looks clean" from "segments well": an adapter can raise PSNR and still lower AP.
Rows have the tidy shape of the COCO rows, with ``iou_type`` = ``"fidelity"``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError

IOU_TYPE = "fidelity"
METRICS = ("PSNR", "SSIM")


def image_fidelity(clean: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, SSIM) of one uint8 image against its clean original; PSNR is inf when identical."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if clean.shape != other.shape:
        raise HarnessError(f"fidelity: shapes differ ({clean.shape} vs {other.shape})")
    psnr = math.inf if np.array_equal(clean, other) else float(peak_signal_noise_ratio(clean, other, data_range=255))
    ssim = float(structural_similarity(clean, other, data_range=255, channel_axis=2 if clean.ndim == 3 else None))
    return psnr, ssim


def fidelity(clean_paths: list[Path], other_paths: list[Path]) -> list[dict[str, Any]]:
    """Mean PSNR and SSIM over image pairs. Identical pairs (PSNR = inf) are left out of the PSNR mean
    and counted in its note; when every pair is identical PSNR has no value."""
    from harness.imageio import read_image

    psnrs, ssims = [], []
    for clean, other in zip(clean_paths, other_paths, strict=True):
        psnr, ssim = image_fidelity(read_image(clean), read_image(other))
        psnrs.append(psnr)
        ssims.append(ssim)
    finite = [p for p in psnrs if math.isfinite(p)]
    identical = len(psnrs) - len(finite)
    note = (f"{identical} of {len(psnrs)} image(s) identical to the clean original (infinite PSNR), left out"
            if identical else "")
    return [
        {"iou_type": IOU_TYPE, "metric": "PSNR", "category": "all",
         "value": float(np.mean(finite)) if finite else None, "note": note},
        {"iou_type": IOU_TYPE, "metric": "SSIM", "category": "all",
         "value": float(np.mean(ssims)) if ssims else None, "note": ""},
    ]
