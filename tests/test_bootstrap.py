"""The bootstrap's AP is COCOeval's: all-ones counts give evaluate()'s numbers, other counts give COCOeval's on
the physically resampled data set (small random cases with crowds, ties, empty images and >100 detections)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from harness.errors import HarnessError
from harness.evaluation import evaluate
from harness.evaluation.bootstrap import (
    ap_from_weights,
    ap_from_weights_many,
    match,
    paired_bootstrap,
    paired_bootstrap_seeds,
    per_image_ap,
    per_image_delta,
)
from harness.evaluation.coco_eval import _results, load_ground_truth

H = W = 24
CATS = [{"id": c, "name": f"class{c}"} for c in (1, 2, 3, 4)]  # class 4 never has ground truth
METRICS = ("AP", "AP50", "AP75")


def rect_rle(x: int, y: int, w: int, h: int) -> dict:
    m = np.zeros((H, W), dtype=np.uint8)
    m[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def box_in_image(rng, x, y, w, h, jitter) -> list[int]:
    dx, dy, dw, dh = rng.integers(-jitter, jitter + 1, 4)
    x, y = int(np.clip(x + dx, 0, W - 2)), int(np.clip(y + dy, 0, H - 2))
    return [x, y, int(np.clip(w + dw, 1, W - x)), int(np.clip(h + dh, 1, H - y))]


def case(seed: int = 0, n_images: int = 14, unique_scores: bool = False, many: bool = True) -> tuple[dict, list]:
    """Random GT (some crowd, some images empty) and predictions (jittered hits, duplicates, strays, score ties;
    image 1 has no predictions, the last image 110 of one class). unique_scores: no ties within an image."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 * i, "height": H, "width": W} for i in range(1, n_images + 1)]
    anns, preds = [], []
    for img in images:
        boxes = []
        for _ in range(int(rng.integers(0, 4))):
            cat = int(rng.integers(1, 4))
            box = box_in_image(rng, *rng.integers(0, 14, 2), *rng.integers(5, 11, 2), jitter=0)
            anns.append({"id": 100 + len(anns), "image_id": img["id"], "category_id": cat, "bbox": box,
                         "segmentation": rect_rle(*box), "iscrowd": int(rng.random() < 0.15)})
            boxes.append((cat, box))
        if img["id"] == 10:
            continue
        cands = [(cat, box_in_image(rng, *box, jitter=1)) for cat, box in boxes for _ in range(int(rng.integers(0, 3)))]
        cands += [(int(rng.integers(1, 5)), box_in_image(rng, *rng.integers(0, 16, 2), *rng.integers(2, 9, 2), 0))
                  for _ in range(int(rng.integers(0, 3)))]
        ladder = rng.permutation(len(cands)) if unique_scores else rng.integers(0, 4, len(cands))
        scores = list(0.9 - 0.005 * ladder)
        if many and img is images[-1]:  # low-scored junk, 10 of it past COCO's 100 per image and class
            cands += [(1, box_in_image(rng, 2, 2, 8, 8, jitter=2)) for _ in range(110)]
            scores += [0.5 - 0.001 * (j % 60) for j in range(110)]
        for (cat, box), score in zip(cands, scores):
            mask = rect_rle(box[0], box[1], max(1, box[2] - 1), box[3])  # masks differ from boxes: segm != bbox
            preds.append({"image_id": img["id"], "category_id": cat, "bbox": box, "segmentation": mask,
                          "score": float(score)})
    return {"images": images, "annotations": anns, "categories": CATS}, preds


def evaluate_value(gt: dict, preds: list, iou_type: str, metric: str) -> float:
    [value] = [r["value"] for r in evaluate(gt, preds, [iou_type]) if r["metric"] == metric and r["category"] == "all"]
    return math.nan if value is None else value


def resampled(gt: dict, preds: list, counts: np.ndarray) -> tuple[dict, list]:
    """The data set holding image i counts[i] times, as consecutive images (ids 10*i+c sort right after 10*i)."""
    images, anns, out = [], [], []
    for img, n in zip(sorted(gt["images"], key=lambda im: im["id"]), counts):
        for c in range(int(n)):
            new_id = img["id"] + c
            images.append({**img, "id": new_id})
            anns += [{**a, "image_id": new_id} for a in gt["annotations"] if a["image_id"] == img["id"]]
            out += [{**p, "image_id": new_id} for p in preds if p["image_id"] == img["id"]]
    return {"images": images, "annotations": anns, "categories": gt["categories"]}, out


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_all_ones_equal_evaluate_and_cocoeval_stats(iou_type):
    gt, preds = case(seed=0)
    m = match(gt, preds, iou_type)
    for metric in METRICS:
        assert ap_from_weights(m, np.ones(m.n_images), metric) == pytest.approx(
            evaluate_value(gt, preds, iou_type, metric), abs=1e-9)
    coco_gt, _ = load_ground_truth(gt, need_segm=iou_type == "segm")
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, _results(coco_gt, preds, iou_type, "test"), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    expected = [ap_from_weights(m, np.ones(m.n_images), metric) for metric in METRICS]
    assert expected == pytest.approx(list(ev.stats[:3]), abs=1e-9)
    assert 0 < expected[0] < 1


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_counts_equal_cocoeval_on_the_resampled_data_set(iou_type):
    gt, preds = case(seed=1, unique_scores=True, many=False)
    m = match(gt, preds, iou_type)
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 4, size=(3, m.n_images))
    got = ap_from_weights_many(m, counts, "AP")
    for row, value in zip(counts, got):
        big_gt, big_preds = resampled(gt, preds, row)
        assert value == pytest.approx(evaluate_value(big_gt, big_preds, iou_type, "AP"), abs=1e-9)
    assert ap_from_weights(m, counts[0], "AP50") == pytest.approx(
        evaluate_value(*resampled(gt, preds, counts[0]), iou_type, "AP50"), abs=1e-9)


def test_per_image_ap_is_each_image_alone():
    gt, preds = case(seed=2)
    m = match(gt, preds, "bbox")
    for metric in METRICS:
        alone = per_image_ap(m, metric)
        np.testing.assert_allclose(alone, ap_from_weights_many(m, np.eye(m.n_images), metric), atol=1e-12)
    alone = per_image_ap(m)
    with_gt = {a["image_id"] for a in gt["annotations"] if not a["iscrowd"]}
    assert [math.isnan(v) for v in alone] == [i not in with_gt for i in m.image_ids]
    image_id = next(i for i in m.image_ids if i in with_gt and i != 10)
    one = {**gt, "images": [im for im in gt["images"] if im["id"] == image_id],
           "annotations": [a for a in gt["annotations"] if a["image_id"] == image_id]}
    expected = evaluate_value(one, [p for p in preds if p["image_id"] == image_id], "bbox", "AP")
    assert alone[m.image_ids.index(image_id)] == pytest.approx(expected, abs=1e-9)


def test_identical_sets_give_zero_and_equal_per_image_aps():
    gt, preds = case(seed=3)
    res = paired_bootstrap(gt, preds, copy.deepcopy(preds), "bbox", resamples=200)
    assert (res["delta"], res["lo"], res["hi"], res["significant"]) == (0.0, 0.0, 0.0, False)
    assert res["resamples"] == 200 and res["n_images"] == len(gt["images"]) and res["seed"] == 0
    rows = per_image_delta(gt, preds, preds, "segm")
    assert [r[0] for r in rows] == sorted(im["id"] for im in gt["images"])
    assert all(a == b or (math.isnan(a) and math.isnan(b)) for _, a, b in rows)


def perfect_case(n_images: int = 40) -> tuple[dict, list, list]:
    gt = {"images": [{"id": i, "height": H, "width": W} for i in range(1, n_images + 1)], "categories": CATS,
          "annotations": [{"id": 2 * i + j, "image_id": i, "category_id": 1 + j, "bbox": [2 + 10 * j, 3, 7, 9],
                           "segmentation": rect_rle(2 + 10 * j, 3, 7, 9), "iscrowd": 0}
                          for i in range(1, n_images + 1) for j in range(2)]}
    a = [{"image_id": g["image_id"], "category_id": g["category_id"], "bbox": g["bbox"],
          "segmentation": g["segmentation"], "score": 0.9} for g in gt["annotations"]]
    b = [p for k, p in enumerate(a) if k % 4 < 2]  # half the true positives removed
    return gt, a, b


@pytest.mark.parametrize("metric", METRICS)
def test_clearly_better_set_is_significant_with_the_right_sign(metric):
    gt, a, b = perfect_case()
    better = paired_bootstrap(gt, a, b, "segm", metric=metric, resamples=300)
    assert better["ap_a"] == pytest.approx(1.0) and better["ap_b"] == pytest.approx(0.5, abs=0.02)
    assert 0 < better["lo"] <= better["delta"] <= better["hi"] and better["significant"]
    worse = paired_bootstrap(gt, b, a, "segm", metric=metric, resamples=300)
    assert worse["delta"] == -better["delta"] and worse["hi"] < 0 and worse["significant"]


def test_deterministic_given_seed():
    gt, preds = case(seed=4)
    other = [{**p, "score": p["score"] * (0.5 if k % 3 else 1.0)} for k, p in enumerate(preds)]
    first = paired_bootstrap(gt, preds, other, "bbox", resamples=150, seed=7)
    assert paired_bootstrap(gt, preds, other, "bbox", resamples=150, seed=7) == first
    assert paired_bootstrap(gt, preds, other, "bbox", resamples=150, seed=8)["lo"] != first["lo"]
    assert first["lo"] <= first["delta"] <= first["hi"]


def test_seed_pairs_and_matched_sets():
    gt, a, b = perfect_case(20)
    one = paired_bootstrap(gt, a, b, "bbox", resamples=100)
    ma, mb = match(gt, a, "bbox"), match(gt, b, "bbox")
    twice = paired_bootstrap_seeds(gt, [(ma, mb), (a, b)], "bbox", resamples=100)
    assert {k: twice[k] for k in ("delta", "lo", "hi")} == {k: one[k] for k in ("delta", "lo", "hi")}
    assert twice["pairs"] == 2
    cancel = paired_bootstrap_seeds(gt, [(a, b), (b, a)], "bbox", resamples=100)
    assert (cancel["delta"], cancel["lo"], cancel["hi"], cancel["significant"]) == (0.0, 0.0, 0.0, False)
    with pytest.raises(HarnessError, match="matched for 'bbox'"):
        paired_bootstrap(gt, ma, b, "segm")


def test_empty_predictions_score_zero(tmp_path):
    gt, a, _ = perfect_case(10)
    m = match(gt, [], "segm")
    assert ap_from_weights(m, np.ones(10)) == 0.0
    assert list(per_image_ap(m)) == [0.0] * 10
    path = tmp_path / "a.json"
    path.write_text(json.dumps(a))
    res = paired_bootstrap(gt, [], path, "segm", resamples=50)
    assert res["delta"] == -1.0 and res["hi"] == -1.0 and res["significant"]
    no_gt = {**gt, "annotations": []}
    assert math.isnan(ap_from_weights(match(no_gt, a, "bbox"), np.ones(10)))
    assert math.isnan(paired_bootstrap(no_gt, a, a, "bbox", resamples=20)["delta"])


def test_bad_input_raises_harness_errors():
    gt, a, _ = perfect_case(5)
    with pytest.raises(HarnessError, match="image_id 99, which is not in the ground truth"):
        paired_bootstrap(gt, a, [{**a[0], "image_id": 99}], "bbox")
    with pytest.raises(HarnessError, match="boxes only"):
        match(gt, [{k: v for k, v in p.items() if k != "segmentation"} for p in a], "segm")
    with pytest.raises(HarnessError, match="missing key 'segmentation'"):
        match(gt, a + [{k: v for k, v in a[0].items() if k != "segmentation"}], "segm")
    with pytest.raises(HarnessError, match="iou_type"):
        match(gt, a, "keypoints")
    with pytest.raises(HarnessError, match="metric"):
        paired_bootstrap(gt, a, a, "bbox", metric="AP_small")
    for kwargs in ({"resamples": 0}, {"level": 1.0}, {"seed": 1.5}):
        with pytest.raises(HarnessError):
            paired_bootstrap(gt, a, a, "bbox", **kwargs)
    m = match(gt, a, "bbox")
    for weights in (np.ones(4), -np.ones(5), np.full(5, 0.5)):
        with pytest.raises(HarnessError, match="weights"):
            ap_from_weights(m, weights)
    with pytest.raises(HarnessError, match="different ground truths"):
        paired_bootstrap(gt, m, match(perfect_case(6)[0], a, "bbox"), "bbox")
