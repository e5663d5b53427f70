"""Synthetic steel-like defect images for fast end-to-end tests (no dataset download needed).

Texture: low-frequency brightness + horizontal rolling streaks + fine grain, mean about 108 (NEU
domain A). Defects follow the NEU classes: inclusions (small dark elongated blobs), patches (large
irregular brighter/darker regions), scratches (long thin lines). Each image is seeded from
(seed, split, index), so output is byte-identical for a seed and independent of generation order.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from harness.data.masks import Instances, Sample, class_map_instances, write_prepared
from harness.data.neu_seg import NEU_CLASSES
from harness.hashing import seed_from

MIN_AREA = 12


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    low = cv2.resize(rng.normal(0, 8, (4, 4)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    rows = cv2.GaussianBlur(rng.normal(0, 6, (size, 1)).astype(np.float32), (1, 0), sigmaX=0, sigmaY=1.5)
    grain = rng.normal(0, 5, (size, size)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), sigmaX=1.5, sigmaY=0.5)
    return 108 + low + rows + grain


def _inclusion(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    mask = np.zeros((size, size), np.uint8)
    s = size / 128
    center = tuple(int(v) for v in rng.integers(int(8 * s), size - int(8 * s), 2))
    axes = (int(rng.uniform(4, 10) * s), max(2, int(rng.uniform(1.5, 3.5) * s)))
    cv2.ellipse(mask, center, axes, float(rng.uniform(-25, 25)), 0, 360, 1, -1)
    return mask, -rng.uniform(35, 60)


def _patch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    mask = np.zeros((size, size), np.uint8)
    s = size / 128
    x, y = (float(v) for v in rng.uniform(20 * s, size - 20 * s, 2))
    for _ in range(int(rng.integers(3, 7))):
        axes = (int(rng.uniform(5, 13) * s), int(rng.uniform(4, 10) * s))
        cv2.ellipse(mask, (int(x), int(y)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        # the next lobe starts inside this one, so the union stays one connected region
        x = float(np.clip(x + rng.uniform(-0.8, 0.8) * axes[0], 0, size - 1))
        y = float(np.clip(y + rng.uniform(-0.8, 0.8) * axes[1], 0, size - 1))
    return mask, float(rng.choice([-1, 1]) * rng.uniform(22, 35))


def _scratch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    mask = np.zeros((size, size), np.uint8)
    length = rng.uniform(0.35, 0.85) * size
    angle = rng.uniform(0, np.pi)
    start = rng.uniform(0.1 * size, 0.9 * size, 2)
    bend = rng.uniform(-0.1, 0.1)
    pts = []
    for t in np.linspace(0, 1, 12):
        a = angle + bend * t
        pts.append(start + t * length * np.array([np.cos(a), np.sin(a)]))
    pts = np.clip(np.array(pts), 0, size - 1).astype(np.int32)
    cv2.polylines(mask, [pts], False, 1, thickness=max(2, round(size / 100)))
    return mask, float(rng.choice([-1, 1]) * rng.uniform(40, 60))


_RENDER = (_inclusion, _patch, _scratch)


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One grayscale image and its class-id map with 1-4 defects (later ones overwrite earlier)."""
    image = _texture(rng, size)
    class_map = np.zeros((size, size), np.uint8)
    occupied = np.zeros((size, size), np.uint8)
    wanted = int(rng.integers(1, 5))
    placed = 0
    for _ in range(wanted * 10):
        if placed == wanted:
            break
        cls = int(rng.integers(0, 3))
        mask, delta = _RENDER[cls](rng, size)
        # keep instances apart so each one stays a single connected component of useful size
        if mask.sum() < MIN_AREA or (mask & occupied).any():
            continue
        soft = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0.7)
        image += delta * np.maximum(soft, mask)
        class_map[mask > 0] = cls + 1
        occupied |= cv2.dilate(mask, np.ones((5, 5), np.uint8))
        placed += 1
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), class_map


def _sample(seed: int, split: str, index: int, size: int) -> Sample:
    def load() -> tuple[np.ndarray, Instances]:
        image, class_map = render_image(np.random.default_rng(seed_from("synthetic", seed, split, index)), size)
        return image, class_map_instances(class_map, len(NEU_CLASSES))

    return f"{index:06d}", load


def generate_synthetic(out, n_train: int = 120, n_val: int = 20, n_test: int = 40, size: int = 128,
                       seed: int = 0, progress: bool = True) -> dict[str, Any]:
    counts = {"train": n_train, "val": n_val, "test": n_test}
    splits = {split: [_sample(seed, split, i, size) for i in range(1, n + 1)] for split, n in counts.items()}
    return write_prepared(out, splits, NEU_CLASSES, source={"kind": "synthetic"},
                          arguments={**{f"n_{k}": v for k, v in counts.items()}, "size": size, "seed": seed},
                          v_mean=None, progress=progress)
