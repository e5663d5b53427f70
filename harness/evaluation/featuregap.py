"""The feature gap: how far a cell's images are from the source domain in the trained segmenter's own features.

PSNR and SSIM need the clean original, which a real target lacks, and high fidelity need not mean high AP. This
compares pooled backbone/FPN features (``plugins/segmenters/features.py``) of the images a cell's segmenter saw
with those of the source **val** images through the same model: with test as the reference a clean cell would
score 0 by construction. No downloaded network is involved: the segmenter is the feature extractor, so values
compare only within one trained model.

- Features are standardised per dimension by the reference's mean and standard deviation, so that no channel
  dominates the kernel by its scale alone.
- **KID** (Bińkowski et al. 2018): the unbiased estimate of MMD² with the kernel k(a, b) = (a·b / d + 1)³, and a
  95 % percentile bootstrap interval that resamples the cell's and the reference's images. A resample is counts c
  over images; its within-set mean pairs only different images, (cᵀKc − Σ c²·diag K) / (m² − Σ c²), as the
  estimate itself does: one matrix product for all resamples, so 840 images cost well under a second.
- **FD32**: the Fréchet distance of Gaussians fitted after a PCA to 32 dimensions fitted on the reference alone
  (640-d covariances from a few hundred images make the full-dimensional distance biased).

Rows have the tidy shape of the COCO rows, with ``iou_type`` = ``"feature"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError

#: what a predict stage with features writes beside predictions.json (``Segmenter.captures_features``)
FEATURES_FILE = "features.npz"
#: the predict stage's ``features`` spec entry: names the pooling, so a new pooling is a new key
POOLING = "fpn-mean-v1"
IOU_TYPE = "feature"
METRICS = ("KID", "KID_lo", "KID_hi", "FD32")
PCA_DIMS = 32
RESAMPLES = 1000


def load_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, N x D features) of a predict stage's features file."""
    try:
        with np.load(path) as data:
            return data["ids"], data["features"]
    except (OSError, KeyError, ValueError) as exc:
        raise HarnessError(f"{path}: not a features file ({exc})") from None


def standardise(x: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in the reference's per-dimension z-scores (a constant dimension is left centred, unscaled)."""
    mean = reference.mean(axis=0)
    std = reference.std(axis=0)
    std[std == 0] = 1.0
    return (x - mean) / std, (reference - mean) / std


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _within(k: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Mean of k over the pairs of a resample's draws that are two different images (a drawn image is never paired
    with its own copies: their k(x, x) would bias the resampled gap upward)."""
    total = c.sum(axis=1)
    return (np.einsum("ri,ri->r", c @ k, c) - (c * c) @ np.diag(k)) / (total * total - (c * c).sum(axis=1))


def _mmd2(kxx, kyy, kxy, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for each row of counts ``cx`` (R x m) and ``cy`` (R x n) over the images of each set."""
    xy = np.einsum("ri,ri->r", cx @ kxy, cy) / (cx.sum(axis=1) * cy.sum(axis=1))
    return _within(kxx, cx) + _within(kyy, cy) - 2 * xy


def kid(x: np.ndarray, reference: np.ndarray, rng: np.random.Generator | None = None,
        resamples: int = RESAMPLES) -> tuple[float, float, float]:
    """(KID, lo, hi) of standardised feature sets; without ``rng`` the interval is (nan, nan)."""
    if len(x) < 2 or len(reference) < 2:
        raise HarnessError(f"feature gap: KID needs 2 or more images on each side (got {len(x)} and "
                           f"{len(reference)})")
    x, reference = x.astype(np.float64), reference.astype(np.float64)
    kxx, kyy, kxy = _kernel(x, x), _kernel(reference, reference), _kernel(x, reference)
    ones = lambda k: np.ones((1, k))  # noqa: E731
    value = float(_mmd2(kxx, kyy, kxy, ones(len(x)), ones(len(reference)))[0])
    if rng is None:
        return value, float("nan"), float("nan")
    draws = []
    for start in range(0, resamples, 250):
        r = min(250, resamples - start)
        cx = np.stack([np.bincount(rng.integers(0, len(x), len(x)), minlength=len(x)) for _ in range(r)])
        cy = np.stack([np.bincount(rng.integers(0, len(reference), len(reference)), minlength=len(reference))
                       for _ in range(r)])
        draws.append(_mmd2(kxx, kyy, kxy, cx.astype(np.float64), cy.astype(np.float64)))
    lo, hi = np.percentile(np.concatenate(draws), [2.5, 97.5])
    return value, float(lo), float(hi)


def frechet_pca(x: np.ndarray, reference: np.ndarray, dims: int = PCA_DIMS) -> float:
    """Fréchet distance after projecting both sets on the reference's first ``dims`` principal axes."""
    from scipy import linalg

    dims = max(1, min(dims, len(reference) - 1, reference.shape[1]))
    centre = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - centre, full_matrices=False)
    axes = vt[:dims].T
    a, b = (x - centre) @ axes, (reference - centre) @ axes
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def feature_gap(x: np.ndarray, reference: np.ndarray, seed: int, resamples: int = RESAMPLES,
                dims: int = PCA_DIMS) -> list[dict[str, Any]]:
    """The cell's rows: KID with its interval and FD32 of features ``x`` against the source-val ``reference``."""
    if x.ndim != 2 or reference.ndim != 2 or x.shape[1] != reference.shape[1]:
        raise HarnessError(f"feature gap: feature sets differ in shape ({x.shape} vs {reference.shape}); "
                           "they must come from the same trained model")
    xs, rs = standardise(x.astype(np.float64), reference.astype(np.float64))
    value, lo, hi = kid(xs, rs, np.random.default_rng(seed), resamples)
    note = f"reference: {len(reference)} source val images; {resamples} resamples"
    fd = frechet_pca(xs, rs, dims)
    return [{"iou_type": IOU_TYPE, "metric": "KID", "category": "all", "value": value, "note": note},
            {"iou_type": IOU_TYPE, "metric": "KID_lo", "category": "all", "value": lo, "note": ""},
            {"iou_type": IOU_TYPE, "metric": "KID_hi", "category": "all", "value": hi, "note": ""},
            {"iou_type": IOU_TYPE, "metric": "FD32", "category": "all", "value": fd,
             "note": f"PCA to {max(1, min(dims, len(reference) - 1, reference.shape[1]))} dims fitted on the reference"}]
