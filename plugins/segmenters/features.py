"""Pooled FPN features of every image a segmenter predicts, captured by forward hooks in the predict pass itself.

What the feature gap (``harness.evaluation.featuregap``) compares: how far the images a cell's segmenter sees are
from the source domain *as that segmenter sees them*, with no downloaded network and no second pass over the
images. An image's vector is the mean of each FPN level over the part of the level its own pixels cover (batch
padding left out, so the vector does not depend on which images share its batch), the levels concatenated:
5 x 128 = 640 values for the `cpu` profiles. The means are taken in float64 by numpy, whose pairwise summation does
not depend on the thread count, so a vector is the same in the reference and the fast path.
"""
from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path

import numpy as np

from harness.errors import HarnessError



class FeatureTap:
    """Collects one vector per image id; safe with several batches in flight (each lane has its own thread)."""

    def __init__(self):
        self.rows: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def expect(self, ids: list[int], sizes: list[tuple[int, int]], batch_hw: tuple[int, int]) -> None:
        """The next feature maps this thread computes belong to images ``ids`` of (height, width) ``sizes``,
        padded into a batch of ``batch_hw``."""
        self._local.pending = (list(ids), list(sizes), tuple(int(v) for v in batch_hw))

    def add(self, levels) -> None:
        pending = getattr(self._local, "pending", None)
        if pending is None:
            return
        self._local.pending = None
        ids, sizes, (bh, bw) = pending
        maps = [np.asarray(level.detach().float().cpu(), dtype=np.float64) for level in levels]
        with self._lock:
            for i, (image_id, (h, w)) in enumerate(zip(ids, sizes)):
                parts = []
                for m in maps:
                    lh, lw = m.shape[-2:]
                    vh, vw = max(1, math.ceil(h * lh / bh)), max(1, math.ceil(w * lw / bw))
                    parts.append(m[i, :, :vh, :vw].mean(axis=(1, 2)))
                self.rows[int(image_id)] = np.concatenate(parts).astype(np.float32)

    def save(self, path: Path, ids: list[int]) -> None:
        """``ids`` (the predicted images, in order) and their vectors as one N x D float32 matrix, the .npz that
        ``harness.evaluation.featuregap.load_features`` reads."""
        from harness.atomic import mkstemp

        missing = [i for i in ids if int(i) not in self.rows]
        if missing:
            raise HarnessError(f"{path}: no features captured for image id {missing[0]} (of {len(missing)})")
        matrix = np.stack([self.rows[int(i)] for i in ids]) if ids else np.zeros((0, 0), np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = mkstemp(path.parent, suffix=".npz")
        with open(fd, "wb") as f:
            np.savez(f, ids=np.asarray(ids, dtype=np.int64), features=matrix)
        Path(tmp).replace(path)


def write_predictions(records, images: list[dict], out_json: Path, features_out: Path | None) -> None:
    """``Segmenter.predict`` of the built-in segmenters: ``records(tap)`` (the COCO results, collecting features
    into ``tap`` on the way when it is not None) into ``out_json``, and with ``features_out`` the features too."""
    from harness.data.coco import write_json_atomic

    tap = FeatureTap() if features_out else None
    write_json_atomic(out_json, records(tap))
    if tap is not None:
        tap.save(Path(features_out), [rec["id"] for rec in images])


@contextlib.contextmanager
def mmdet_hooks(model, tap: FeatureTap | None):
    """While predicting: the data preprocessor's output tells the tap the batch's image ids and sizes, the neck's
    (the backbone's without one) gives it the feature maps."""
    if tap is None:
        yield
        return

    def after_preprocess(module, args, output):
        metas = [s.metainfo for s in output["data_samples"]]
        tap.expect([m["img_id"] for m in metas], [tuple(m["img_shape"][:2]) for m in metas],
                   tuple(metas[0]["batch_input_shape"][:2]))

    top = model.neck if getattr(model, "with_neck", False) else model.backbone
    handles = [model.data_preprocessor.register_forward_hook(after_preprocess),
               top.register_forward_hook(lambda module, args, output: tap.add(list(output)))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def tv_hooks(model, tap: FeatureTap | None):
    """While predicting a torchvision model: the transform's output gives the batch's sizes, the backbone's the
    feature maps; the batch's image ids come from ``tv_next``, called before each batch."""
    if tap is None:
        yield
        return

    def after_transform(module, args, output):
        batch = output[0]
        tap.expect(tap._local.ids, [tuple(s) for s in batch.image_sizes], tuple(batch.tensors.shape[-2:]))

    def after_backbone(module, args, output):
        tap.add(list(output.values()) if isinstance(output, dict) else [output])

    handles = [model.transform.register_forward_hook(after_transform),
               model.backbone.register_forward_hook(after_backbone)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def tv_next(tap: FeatureTap | None, ids: list[int]) -> None:
    """The image ids of the batch this thread hands the torchvision model next."""
    if tap is not None:
        tap._local.ids = list(ids)
