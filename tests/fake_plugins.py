"""Test doubles registered like any third-party plugin (``HARNESS_PLUGINS=tests.fake_plugins``).

``threshold`` is a real, if crude, classical segmenter: fast, deterministic and image-dependent, so a
matrix run exercises every stage end to end (and degradations move its metrics) without torch.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from harness.data.coco import encode_mask, image_records, write_json_atomic
from harness.hookspecs import hookimpl
from harness.imageio import read_image
from harness.interfaces import Adapter, Segmenter


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _deviation(image: np.ndarray) -> np.ndarray:
    """Absolute difference from the image median after light smoothing (suppresses grain)."""
    smooth = cv2.GaussianBlur(_gray(image).astype(np.float32), (5, 5), 1.0)
    return np.abs(smooth - float(np.median(smooth)))


class ThresholdSegmenter(Segmenter):
    """Defects = pixels far from the image median (robust MAD threshold learned on train)."""

    name = "threshold"
    version = "1"
    profiles = {"tiny": "MAD threshold + connected components; a fraction of a second"}
    params = {"k": 4.0, "min_area": 6, "sleep": 0.0}

    def train(self, data_dir: Path, out_dir: Path, profile: str, seed: int, init: str | None = None) -> None:
        self.check_profile(profile)
        mads = []
        for rec in image_records(data_dir, "train"):
            dev = _deviation(read_image(rec["path"]))
            mads.append(float(np.median(dev)))
        threshold = float(self.config["k"]) * 1.4826 * float(np.median(mads))
        write_json_atomic(Path(out_dir) / "model.json",
                          {"threshold": threshold, "min_area": int(self.config["min_area"]), "seed": seed})

    def predict(self, model_dir: Path, images: list[dict], image_root: Path, out_json: Path,
                progress: bool = True) -> None:
        model = json.loads((Path(model_dir) / "model.json").read_text())
        if self.config["sleep"]:
            time.sleep(float(self.config["sleep"]))
        results = []
        for rec in images:
            dev = _deviation(read_image(Path(image_root) / rec["file_name"]))
            fg = (dev > model["threshold"]).astype(np.uint8)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
            for i in range(1, n):
                x, y, w, h, area = (int(v) for v in stats[i])
                if area < model["min_area"]:
                    continue
                mask = (labels == i).astype(np.uint8)
                fill = area / float(w * h)
                category = 3 if fill < 0.35 or max(w, h) > 0.4 * fg.shape[1] else (2 if area > 150 else 1)
                score = float(min(1.0, dev[labels == i].mean() / (3 * model["threshold"])))
                results.append({"image_id": rec["id"], "category_id": category, "score": round(score, 6),
                                "bbox": [x, y, w, h], "segmentation": encode_mask(mask)})
        write_json_atomic(out_json, results)


class FeatureThreshold(ThresholdSegmenter):
    """``threshold`` that also writes image features while predicting (a grey-level histogram and the deviation's
    quantiles): what the feature-gap stages need from a segmenter, without torch."""

    name = "threshold-features"
    captures_features = True

    def predict(self, model_dir: Path, images: list[dict], image_root: Path, out_json: Path,
                progress: bool = True, features_out: Path | None = None) -> None:
        super().predict(model_dir, images, image_root, out_json, progress)
        if features_out is None:
            return
        rows = []
        for rec in images:
            image = read_image(Path(image_root) / rec["file_name"])
            hist = np.histogram(_gray(image), bins=16, range=(0, 256))[0] / _gray(image).size
            rows.append(np.concatenate([hist, np.quantile(_deviation(image), [0.5, 0.9, 0.99]) / 255]))
        np.savez(features_out, ids=np.array([r["id"] for r in images]), features=np.array(rows, np.float32))


class Smooth(Adapter):
    """Median filter: a cheap denoiser, so 'adapted' images really differ from the input."""

    name = "smooth"
    version = "1"
    params = {"ksize": 3}

    def adapt(self, image: np.ndarray) -> np.ndarray:
        return cv2.medianBlur(image, int(self.config["ksize"]))


class Explode(Adapter):
    """Raises on every image: the failing cell of the failure-isolation tests."""

    name = "explode"
    version = "1"
    params = {"message": "boom"}

    def adapt(self, image: np.ndarray) -> np.ndarray:
        raise RuntimeError(self.config["message"])


class DieOnce(Adapter):
    """Kills its own process the first time it runs (a worker lost mid-stage), then behaves as identity."""

    name = "die_once"
    version = "1"
    params = {"marker": ""}

    def adapt(self, image: np.ndarray) -> np.ndarray:
        marker = Path(self.config["marker"])
        if self.config["marker"] and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return image


class MeanShift(Adapter):
    """Fitted adapter: shifts B's mean brightness onto A's. Records what ``fit`` was given, for the tests."""

    name = "meanshift"
    version = "1"
    trainable = True
    params = {"fit_data": "unpaired"}

    def __init__(self, **params):
        super().__init__(**params)
        self.fit_data = self.config["fit_data"]

    def fit(self, source, target, fit_dir, seed, progress=True):
        from harness.imageio import read_image

        mean = lambda paths: float(np.mean([read_image(p).mean() for p in paths])) if paths else 0.0  # noqa: E731
        shift = mean(source) - mean(target) if target else 0.0
        (fit_dir / "fit.json").write_text(json.dumps({
            "shift": shift, "seed": seed, "source": [Path(p).stem for p in source],
            "target": [Path(p).stem for p in target]}))

    def load(self, fit_dir):
        self.shift = json.loads((fit_dir / "fit.json").read_text())["shift"]

    def adapt(self, image):
        return np.clip(image.astype(np.float32) + self.shift, 0, 255).astype(np.uint8)


@hookimpl
def harness_register_segmenters(register):
    register(ThresholdSegmenter)
    register(FeatureThreshold)


@hookimpl
def harness_register_adapters(register):
    register(Smooth)
    register(Explode)
    register(DieOnce)
    register(MeanShift)
