"""Paired bootstrap over test images of the COCO AP difference between two prediction sets.

Matching detections to ground truth is the slow part of COCO evaluation and does not depend on which
images a resample draws, so `match` runs pycocotools' COCOeval.evaluate() once per prediction set (area
range 'all', 100 detections per image and class, the result set built by coco_eval's helpers so the
numbers are harness.evaluation.evaluate's) and keeps flat arrays. A resample is then a vector of image
counts, and AP under it is COCOeval.accumulate's algorithm on count-weighted cumulative sums: the
detection ranking is the full set's (mergesort on score over the images in id order), so it is sorted
once, and 1000 resamples are a few matrix operations per class.

Ties: an image drawn k times contributes each of its detections k times, the k copies adjacent in the
ranking (weighted cumulative sums). That is exactly COCOeval on a data set holding the k copies as
consecutive images, unless one image has several detections of one class with equal scores: COCOeval
would then interleave the copies (d1 d2 d1 d2 instead of d1 d1 d2 d2). With counts 0/1 (and all ones)
it is exactly COCOeval. Classes without non-ignored ground truth in a resample are left out of the mean,
as COCOeval's -1 does; a resample without any ground truth has AP nan and is left out of the interval.
"""
from __future__ import annotations

import contextlib
import io
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from harness.errors import HarnessError
from harness.evaluation.coco_eval import IOU_TYPES, _results, load_ground_truth, read_predictions

METRICS = ("AP", "AP50", "AP75")
_CHUNK_ELEMENTS = 1 << 21  # resamples x detections of one class per block: ~16 MB per float array

PathLike = str | Path


@dataclass(frozen=True, eq=False)
class Matched:
    """One prediction set matched to the ground truth once; detections of class k are cat_start[k]:cat_start[k+1],
    in COCOeval.accumulate's order. Arrays are (T, N) over IoU thresholds x detections, npig is (K, I)."""

    iou_type: str
    image_ids: tuple
    category_ids: tuple
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    cat_start: np.ndarray
    score: np.ndarray
    image: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    npig: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.image_ids)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _predictions(predictions: PathLike | list[dict], iou_type: str) -> tuple[str, list[dict]]:
    source, preds = read_predictions(predictions)
    if iou_type == "segm":
        without_mask = [i for i, p in enumerate(preds) if "segmentation" not in p]
        if without_mask and len(without_mask) == len(preds):
            raise HarnessError(f"{source}: segm needs masks, but no prediction has 'segmentation' (boxes only)")
        if without_mask:
            raise HarnessError(f"{source}: prediction [{without_mask[0]}] is missing key 'segmentation' "
                               f"(other predictions have one; give all or none)")
    return source, preds


def _check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise HarnessError(f"iou_type must be one of {list(IOU_TYPES)}, got {iou_type!r}")


def _match(coco_gt: COCO, predictions: PathLike | list[dict], iou_type: str) -> Matched:
    source, preds = _predictions(predictions, iou_type)
    coco_dt = _results(coco_gt, preds, iou_type, source)
    ev = COCOeval(coco_gt, coco_dt, iou_type)
    ev.params.areaRng = ev.params.areaRng[:1]  # 'all' only: the other ranges would quadruple evaluateImg's work
    ev.params.areaRngLbl = ev.params.areaRngLbl[:1]
    ev.params.maxDets = [100]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    p = ev.params
    n_img, n_cat, n_thr = len(p.imgIds), len(p.catIds), len(p.iouThrs)
    npig = np.zeros((n_cat, n_img), dtype=np.int64)
    starts, scores, images, dtm, dtig = [0], [], [], [], []
    for k in range(n_cat):
        cs, ci, cm, cg = [], [], [], []
        for i in range(n_img):
            e = ev.evalImgs[k * n_img + i]
            if e is None:
                continue
            npig[k, i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            if len(e["dtScores"]):
                cs.append(np.asarray(e["dtScores"], dtype=float))
                ci.append(np.full(len(e["dtScores"]), i, dtype=np.int64))
                cm.append(np.asarray(e["dtMatches"]) != 0)
                cg.append(np.asarray(e["dtIgnore"], dtype=bool))
        if cs:
            s = np.concatenate(cs)
            order = np.argsort(-s, kind="mergesort")
            scores.append(s[order])
            images.append(np.concatenate(ci)[order])
            dtm.append(np.concatenate(cm, axis=1)[:, order])
            dtig.append(np.concatenate(cg, axis=1)[:, order])
        starts.append(starts[-1] + sum(len(x) for x in cs))
    empty2 = np.zeros((n_thr, 0), dtype=bool)
    return Matched(
        iou_type=iou_type,
        image_ids=tuple(_plain(i) for i in p.imgIds),
        category_ids=tuple(_plain(c) for c in p.catIds),
        iou_thresholds=np.asarray(p.iouThrs, dtype=float),
        recall_thresholds=np.asarray(p.recThrs, dtype=float),
        cat_start=np.asarray(starts, dtype=np.int64),
        score=np.concatenate(scores) if scores else np.zeros(0),
        image=np.concatenate(images) if images else np.zeros(0, dtype=np.int64),
        matched=np.concatenate(dtm, axis=1) if dtm else empty2,
        ignored=np.concatenate(dtig, axis=1) if dtig else empty2,
        npig=npig,
    )


def match(gt: PathLike | dict, predictions: PathLike | list[dict], iou_type: str) -> Matched:
    """Match a prediction set to the ground truth once, for any number of `ap_from_weights` calls."""
    _check_iou_type(iou_type)
    coco_gt, _ = load_ground_truth(gt, need_segm=iou_type == "segm")
    return _match(coco_gt, predictions, iou_type)


def _threshold_index(matched: Matched, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise HarnessError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if metric == "AP":
        return np.arange(len(matched.iou_thresholds))
    return np.flatnonzero(np.isclose(matched.iou_thresholds, 0.50 if metric == "AP50" else 0.75))


def _min_tp(npig: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per row, the least integer tp with tp / npig >= threshold, in the float arithmetic COCOeval uses for recall."""
    n = npig[:, None]
    need = np.ceil(thresholds[None, :] * n)
    for _ in range(3):
        need = need - (((need - 1) / n >= thresholds) & (need >= 1))
        need = need + (need / n < thresholds)
    return need


def _curve_ap(tp: np.ndarray, fp: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Mean 101-point interpolated precision (T, R) from cumulative weighted tp and fp (T, R, S) and `_min_tp`'s
    need (R, 101); tp is modified.

    Recall is a step function of the integer cumulative tp, so COCO's searchsorted of recall thresholds is
    one searchsorted of the least tp reaching each threshold in the row-offset, flattened cumulative tp.
    """
    n_thr, n_rows, n_col = tp.shape
    if n_col == 0:
        return np.zeros((n_thr, n_rows))
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.flip(np.maximum.accumulate(np.flip(precision, axis=2), axis=2), axis=2).ravel()
    big = max(float(tp[:, :, -1].max()), float(need.max())) + 1
    offset = (np.arange(n_thr * n_rows, dtype=float) * big).reshape(n_thr, n_rows, 1)
    tp += offset
    pos = np.searchsorted(tp.ravel(), (need[None] + offset).ravel(), side="left").reshape(n_thr, n_rows, -1)
    inside = pos - (np.arange(n_thr * n_rows) * n_col).reshape(n_thr, n_rows, 1) < n_col
    q = np.where(inside, precision[np.minimum(pos, tp.size - 1)], 0.0)
    return q.mean(axis=2)


def _weighted_ap(tp: np.ndarray, ignored: np.ndarray, det_w: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Mean over thresholds of one class's AP (R,) under detection weights det_w (R, D).

    Only true-positive positions can be where a recall threshold is first reached, and the envelope's
    maximum over a suffix starting at one is reached at one, so the curve is kept at those positions only:
    fp there is all detections so far minus tps minus ignored ones.
    """
    seen = np.cumsum(det_w, axis=1)
    ap = np.zeros(det_w.shape[0])
    for tp_t, ig_t in zip(tp, ignored):
        cols = np.flatnonzero(tp_t)
        if cols.size == 0:
            continue
        tp_cum = np.cumsum(det_w[:, cols], axis=1)
        fp_cum = seen[:, cols] - tp_cum
        skipped = np.flatnonzero(ig_t)
        if skipped.size:
            ig_cum = np.concatenate([np.zeros((det_w.shape[0], 1)), np.cumsum(det_w[:, skipped], axis=1)], axis=1)
            fp_cum -= ig_cum[:, np.searchsorted(skipped, cols)]
        ap += _curve_ap(tp_cum[None], fp_cum[None], need)[0]
    return ap / len(tp)


def _weights(matched: Matched, weights: Any) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != matched.n_images:
        raise HarnessError(f"weights must have one entry per image ({matched.n_images}), got shape {np.shape(weights)}")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and np.all(w == np.round(w))):
        raise HarnessError("weights must be counts (non-negative integers)")
    return w


def ap_from_weights_many(matched: Matched, weights: Any, metric: str = "AP") -> np.ndarray:
    """COCO AP (R,) for R count vectors (R, n_images) at once: image i counts weights[r, i] times; nan: no GT."""
    t_index = _threshold_index(matched, metric)
    w = _weights(matched, weights)
    n_rows = w.shape[0]
    total, classes = np.zeros(n_rows), np.zeros(n_rows)
    for k in range(len(matched.category_ids)):
        lo, hi = matched.cat_start[k], matched.cat_start[k + 1]
        npig = w @ matched.npig[k].astype(float)
        rows = np.flatnonzero(npig > 0)
        if rows.size == 0:
            continue
        m, ig = matched.matched[t_index, lo:hi], matched.ignored[t_index, lo:hi]
        image = matched.image[lo:hi]
        step = max(1, _CHUNK_ELEMENTS // max(1, hi - lo))
        for s in range(0, rows.size, step):
            r = rows[s:s + step]
            total[r] += _weighted_ap(m & ~ig, ig, w[r][:, image], _min_tp(npig[r], matched.recall_thresholds))
        classes[rows] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(classes > 0, total / np.maximum(classes, 1), np.nan)


def ap_from_weights(matched: Matched, weights: Any, metric: str = "AP") -> float:
    """COCO AP where image i counts weights[i] times (all ones: evaluate()'s value); nan when no GT counts."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1:
        raise HarnessError(f"weights must be one vector of {matched.n_images} counts, got shape {w.shape}")
    return float(ap_from_weights_many(matched, w[None], metric)[0])


def per_image_ap(matched: Matched, metric: str = "AP") -> np.ndarray:
    """AP of each image alone (n_images,), equal to ap_from_weights with one-hot weights; nan: image has no GT."""
    t_index = _threshold_index(matched, metric)
    n_img, n_thr = matched.n_images, len(t_index)
    total, classes = np.zeros(n_img), np.zeros(n_img)
    for k in range(len(matched.category_ids)):
        lo, hi = matched.cat_start[k], matched.cat_start[k + 1]
        rows = np.flatnonzero(matched.npig[k] > 0)
        if rows.size == 0:
            continue
        image = matched.image[lo:hi]
        order = np.argsort(image, kind="stable")
        counts = np.bincount(image, minlength=n_img)
        width = int(counts[rows].max()) if hi > lo else 0
        slot = np.arange(hi - lo) - np.repeat(np.cumsum(counts) - counts, counts)
        row_of = np.full(n_img, -1)
        row_of[rows] = np.arange(rows.size)
        keep = row_of[image[order]] >= 0
        det, r, c = order[keep], row_of[image[order]][keep], slot[keep]
        m, ig = matched.matched[t_index, lo:hi][:, det], matched.ignored[t_index, lo:hi][:, det]
        tp, fp = np.zeros((n_thr, rows.size, width)), np.zeros((n_thr, rows.size, width))
        tp[:, r, c] = m & ~ig
        fp[:, r, c] = ~m & ~ig
        need = _min_tp(matched.npig[k, rows].astype(float), matched.recall_thresholds)
        ap = _curve_ap(np.cumsum(tp, axis=2), np.cumsum(fp, axis=2), need)
        total[rows] += ap.mean(axis=0)
        classes[rows] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(classes > 0, total / np.maximum(classes, 1), np.nan)


def _matched_sets(gt: PathLike | dict, sets: Sequence[Any], iou_type: str) -> list[Matched]:
    """Match every set, loading the ground truth once; a Matched given in place of predictions is reused."""
    _check_iou_type(iou_type)
    coco_gt = None
    out = []
    for preds in sets:
        if isinstance(preds, Matched):
            out.append(preds)
            continue
        if coco_gt is None:
            coco_gt, _ = load_ground_truth(gt, need_segm=iou_type == "segm")
        out.append(_match(coco_gt, preds, iou_type))
    first = out[0]
    for m in out:
        if m.iou_type != iou_type:
            raise HarnessError(f"a Matched set was matched for {m.iou_type!r}, not {iou_type!r}")
        if m.image_ids != first.image_ids or m.category_ids != first.category_ids:
            raise HarnessError("prediction sets were matched against different ground truths "
                               "(image or class ids differ)")
    return out


def resample_counts(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_images) bootstrap counts: each row draws n_images images with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(resamples, n_images))
    flat = draws + (np.arange(resamples) * n_images)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n_images).reshape(resamples, n_images).astype(float)


def paired_bootstrap_seeds(
    gt: PathLike | dict,
    pairs: Sequence[tuple[Any, Any]],
    iou_type: str,
    metric: str = "AP",
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Bootstrap of the mean over pairs (one per training seed) of AP_a - AP_b, every pair under the same
    image resamples. Each element of a pair is a predictions path, a result list, or a `Matched`."""
    if not (isinstance(resamples, numbers.Integral) and not isinstance(resamples, bool) and resamples >= 1):
        raise HarnessError(f"resamples must be a positive integer, got {resamples!r}")
    if not (isinstance(level, numbers.Real) and 0 < level < 1):
        raise HarnessError(f"level must be between 0 and 1, got {level!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise HarnessError(f"seed must be an integer, got {seed!r}")
    if metric not in METRICS:
        raise HarnessError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    pairs = list(pairs)
    if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
        raise HarnessError("pairs must be a non-empty list of (predictions_a, predictions_b)")
    matched = _matched_sets(gt, [x for pair in pairs for x in pair], iou_type)
    n_images = matched[0].n_images
    counts = resample_counts(n_images, int(resamples), int(seed))
    ones = np.ones((1, n_images))
    full = np.array([ap_from_weights_many(m, ones, metric)[0] for m in matched])
    diffs = np.mean([ap_from_weights_many(a, counts, metric) - ap_from_weights_many(b, counts, metric)
                     for a, b in zip(matched[0::2], matched[1::2])], axis=0)
    ap_a, ap_b = float(np.mean(full[0::2])), float(np.mean(full[1::2]))
    finite = diffs[np.isfinite(diffs)]
    if finite.size:
        lo, hi = (float(v) for v in np.percentile(finite, [50 * (1 - level), 50 * (1 + level)]))
    else:
        lo = hi = float("nan")
    return {
        "delta": ap_a - ap_b,
        "lo": lo,
        "hi": hi,
        "significant": bool(lo > 0 or hi < 0),
        "resamples": int(resamples),
        "n_images": n_images,
        "seed": int(seed),
        "level": float(level),
        "metric": metric,
        "iou_type": iou_type,
        "ap_a": ap_a,
        "ap_b": ap_b,
        "pairs": len(pairs),
    }


def paired_bootstrap(
    gt: PathLike | dict,
    preds_a: Any,
    preds_b: Any,
    iou_type: str,
    metric: str = "AP",
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Percentile interval of AP_a - AP_b over image resamples shared by a and b (the pairing).

    Returns delta (on the full set), lo, hi, significant (interval excludes 0), resamples, n_images, seed,
    plus level, metric, iou_type, ap_a, ap_b and pairs (1). preds_* are paths, result lists or `Matched`.
    """
    return paired_bootstrap_seeds(gt, [(preds_a, preds_b)], iou_type, metric, resamples, seed, level)


def per_image_delta(
    gt: PathLike | dict, preds_a: Any, preds_b: Any, iou_type: str, metric: str = "AP"
) -> list[tuple[Any, float, float]]:
    """(image_id, AP_a, AP_b) per image in id order, each image scored alone; nan where it has no GT.
    Sort by AP_a - AP_b to find the images where a lost the most."""
    a, b = _matched_sets(gt, [preds_a, preds_b], iou_type)
    ap_a, ap_b = per_image_ap(a, metric), per_image_ap(b, metric)
    return [(image_id, float(x), float(y)) for image_id, x, y in zip(a.image_ids, ap_a, ap_b)]
