"""Hand-built COCO cases whose AP is derived by hand (20x20 images keep it fast)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harness.errors import HarnessError
from harness.evaluation import evaluate, load_predictions, summary_table
from harness.evaluation.coco_eval import BOXES_ONLY_NOTE

H = W = 20
CATS = [{"id": 1, "name": "inclusion"}, {"id": 2, "name": "patches"}, {"id": 3, "name": "scratches"}]


def rect_rle(x: int, y: int, w: int, h: int) -> dict:
    m = np.zeros((H, W), dtype=np.uint8)
    m[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def gt_ann(ann_id: int, image_id: int, cat: int, box: tuple[int, int, int, int], polygon: bool = False) -> dict:
    x, y, w, h = box
    segm = [[x, y, x + w, y, x + w, y + h, x, y + h]] if polygon else rect_rle(*box)
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": list(box), "area": w * h,
            "iscrowd": 0, "segmentation": segm}


def pred(image_id: int, cat: int, box: tuple[int, int, int, int], score: float = 1.0) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score,
            "segmentation": rect_rle(*box)}


def make_gt(anns: list[dict], n_images: int = 1) -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "height": H, "width": W} for i in range(1, n_images + 1)]
    return {"images": images, "annotations": anns, "categories": CATS}


def value(rows: list[dict], iou_type: str, metric: str, category: str = "all") -> float | None:
    [row] = [r for r in rows if (r["iou_type"], r["metric"], r["category"]) == (iou_type, metric, category)]
    return row["value"]


def note(rows: list[dict], iou_type: str, metric: str, category: str = "all") -> str:
    [row] = [r for r in rows if (r["iou_type"], r["metric"], r["category"]) == (iou_type, metric, category)]
    return row["note"]


# One object of every class over two images; the first has id 0, which raw COCOeval would never count as matched.
BOXES = [(1, 1, (2, 2, 6, 6)), (1, 2, (10, 3, 8, 4)), (2, 3, (4, 8, 12, 9))]


@pytest.fixture
def perfect_gt() -> dict:
    return make_gt([gt_ann(i, img, cat, box) for i, (img, cat, box) in enumerate(BOXES)], n_images=2)


def test_perfect_predictions_score_one_everywhere(perfect_gt, capsys):
    rows = evaluate(perfect_gt, [pred(img, cat, box) for img, cat, box in BOXES])
    assert capsys.readouterr().out == ""
    for iou_type in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75", "AP_small"):
            assert value(rows, iou_type, metric) == pytest.approx(1.0)
        for name in ("inclusion", "patches", "scratches"):
            assert value(rows, iou_type, "AP", name) == pytest.approx(1.0)
        # All objects are < 32² px: COCO reports -1 for the other size ranges.
        assert value(rows, iou_type, "AP_medium") is None
        assert note(rows, iou_type, "AP_medium") == "no ground-truth objects of this size (32² ≤ area < 96²)"
        assert note(rows, iou_type, "AP_large") == "no ground-truth objects of this size (area ≥ 96²)"
    assert {r["metric"] for r in rows if r["category"] != "all"} == {"AP"}
    assert len(rows) == 2 * (6 + 3)


def test_polygon_ground_truth_and_paths(tmp_path, perfect_gt):
    gt = copy.deepcopy(perfect_gt)
    gt["annotations"][0]["segmentation"] = [[2, 2, 8, 2, 8, 8, 2, 8]]
    del gt["annotations"][0]["area"]  # filled from the mask
    poly_rle = mask_utils.merge(mask_utils.frPyObjects([[2.0, 2, 8, 2, 8, 8, 2, 8]], H, W))
    preds = [pred(img, cat, box) for img, cat, box in BOXES]
    preds[0]["segmentation"] = {"size": [H, W], "counts": poly_rle["counts"].decode("ascii")}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    rows = evaluate(tmp_path / "gt.json", str(tmp_path / "pred.json"))
    assert value(rows, "segm", "AP") == pytest.approx(1.0)
    assert value(rows, "bbox", "AP") == pytest.approx(1.0)


def test_known_shift_gives_exact_fraction_of_thresholds():
    # GT box x 4..14, prediction x 6..16, same rows (height 10): intersection 8*10 = 80,
    # union 100 + 100 - 80 = 120, IoU = 2/3 (boxes and masks alike, both pixel-aligned).
    # COCO thresholds 0.50, 0.55, ..., 0.95: matched (precision 1 at every recall) for the 4 thresholds
    # 0.50..0.65 <= 2/3, unmatched (precision 0) for the 6 above, so AP = 4/10 = 0.4, AP50 = 1, AP75 = 0.
    gt = make_gt([gt_ann(1, 1, 1, (4, 5, 10, 10))])
    rows = evaluate(gt, [pred(1, 1, (6, 5, 10, 10), score=0.8)])
    for iou_type in ("bbox", "segm"):
        assert value(rows, iou_type, "AP") == pytest.approx(0.4)
        assert value(rows, iou_type, "AP", "inclusion") == pytest.approx(0.4)
        assert value(rows, iou_type, "AP50") == pytest.approx(1.0)
        assert value(rows, iou_type, "AP75") == pytest.approx(0.0)
        assert value(rows, iou_type, "AP_small") == pytest.approx(0.4)  # area 100 < 32²


def test_false_positive_ranked_first_halves_ap():
    # Detections sorted by score: FP (0.95) then TP (0.9). Cumulative precision/recall: (0, 0) then (0.5, 1).
    # COCO makes precision monotone from the right, so it is 0.5 at every recall threshold 0..1: AP = 0.5.
    # Ranked below the TP, the same FP comes after recall already reached 1 with precision 1: AP stays 1.
    gt = make_gt([gt_ann(1, 1, 1, (2, 2, 6, 6))])
    tp, fp_box = (2, 2, 6, 6), (12, 12, 5, 5)
    high = evaluate(gt, [pred(1, 1, tp, 0.9), pred(1, 1, fp_box, 0.95)])
    low = evaluate(gt, [pred(1, 1, tp, 0.9), pred(1, 1, fp_box, 0.5)])
    for iou_type in ("bbox", "segm"):
        assert value(high, iou_type, "AP") == pytest.approx(0.5)
        assert value(high, iou_type, "AP50") == pytest.approx(0.5)
        assert value(low, iou_type, "AP") == pytest.approx(1.0)


def test_class_without_ground_truth_is_none_with_note():
    gt = make_gt([gt_ann(1, 1, 1, (2, 2, 6, 6)), gt_ann(2, 1, 3, (10, 10, 8, 3))])
    # inclusion and scratches perfect, a 'patches' false positive that has nothing to match.
    rows = evaluate(gt, [pred(1, 1, (2, 2, 6, 6)), pred(1, 3, (10, 10, 8, 3)), pred(1, 2, (12, 2, 4, 4), 0.99)])
    for iou_type in ("bbox", "segm"):
        assert value(rows, iou_type, "AP", "patches") is None
        assert note(rows, iou_type, "AP", "patches") == (
            "no ground-truth instances of class 'patches' in the evaluated images")
        assert value(rows, iou_type, "AP", "inclusion") == pytest.approx(1.0)
        # The class without GT is left out of the mean, as COCO does.
        assert value(rows, iou_type, "AP") == pytest.approx(1.0)


def test_no_predictions_gives_zero_where_ground_truth_exists():
    gt = make_gt([gt_ann(1, 1, 1, (2, 2, 6, 6))])
    rows = evaluate(gt, [])
    for iou_type in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75", "AP_small"):
            assert value(rows, iou_type, metric) == 0.0
        assert value(rows, iou_type, "AP", "inclusion") == 0.0
        assert value(rows, iou_type, "AP", "scratches") is None
        assert value(rows, iou_type, "AP_large") is None
    assert all(r["value"] is None or (isinstance(r["value"], float) and not math.isnan(r["value"])) for r in rows)


def test_ground_truth_dict_is_not_modified(perfect_gt):
    before = copy.deepcopy(perfect_gt)
    evaluate(perfect_gt, [pred(img, cat, box) for img, cat, box in BOXES])
    assert perfect_gt == before


def test_boxes_only_predictions_skip_segm_with_note(perfect_gt):
    preds = [pred(img, cat, box) for img, cat, box in BOXES]
    for p in preds:
        del p["segmentation"]
    rows = evaluate(perfect_gt, preds)
    assert value(rows, "bbox", "AP") == pytest.approx(1.0)
    segm = [r for r in rows if r["iou_type"] == "segm"]
    assert len(segm) == 9 and all(r["value"] is None and r["note"] == BOXES_ONLY_NOTE for r in segm)


def test_some_predictions_without_mask_is_an_error(perfect_gt, tmp_path):
    preds = [pred(img, cat, box) for img, cat, box in BOXES]
    del preds[1]["segmentation"]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(preds))
    with pytest.raises(HarnessError, match=r"mixed\.json: prediction \[1\] is missing key 'segmentation'"):
        evaluate(perfect_gt, path)
    assert value(evaluate(perfect_gt, path, iou_types=("bbox",)), "bbox", "AP") == pytest.approx(1.0)


def test_mask_only_predictions_get_box_from_mask(perfect_gt):
    preds = [pred(img, cat, box) for img, cat, box in BOXES]
    for p in preds:
        del p["bbox"]
    rows = evaluate(perfect_gt, preds)
    assert value(rows, "bbox", "AP") == pytest.approx(1.0)
    assert value(rows, "segm", "AP") == pytest.approx(1.0)


@pytest.mark.parametrize("mutate, message", [
    (lambda ps: ps[0].update(image_id=99), r"bad\.json: prediction \[0\] has image_id 99, which is not in the"),
    (lambda ps: ps[2].update(category_id=7), r"bad\.json: prediction \[2\] has category_id 7"),
    (lambda ps: ps[1].pop("score"), r"bad\.json: prediction \[1\] is missing key 'score'"),
    (lambda ps: ps[0].pop("image_id"), r"bad\.json: prediction \[0\] is missing key 'image_id'"),
    (lambda ps: ps[0].update(score=float("nan")), r"bad\.json: prediction \[0\] 'score' must be a finite number"),
    (lambda ps: ps[0].update(bbox=[1, 2, 3]), r"bad\.json: prediction \[0\] 'bbox' must be \[x, y, w, h\]"),
    (lambda ps: ps[0]["segmentation"].update(size=[10, 10]), r"bad\.json: prediction \[0\] 'segmentation' size"),
])
def test_bad_predictions_name_the_file_and_key(perfect_gt, tmp_path, mutate, message):
    preds = [pred(img, cat, box) for img, cat, box in BOXES]
    mutate(preds)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(preds))
    with pytest.raises(HarnessError, match=message):
        evaluate(perfect_gt, path)


def test_unreadable_prediction_files(tmp_path, perfect_gt):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1,')
    with pytest.raises(HarnessError, match=r"broken\.json: malformed JSON"):
        load_predictions(broken)
    with pytest.raises(HarnessError, match=r"missing\.json: file not found"):
        evaluate(perfect_gt, tmp_path / "missing.json")
    obj = tmp_path / "obj.json"
    obj.write_text('{"annotations": []}')
    with pytest.raises(HarnessError, match=r"obj\.json: predictions must be a JSON list"):
        load_predictions(obj)


def test_bad_ground_truth_names_the_file_and_key(tmp_path, perfect_gt):
    gt = copy.deepcopy(perfect_gt)
    del gt["annotations"][1]["bbox"]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(HarnessError, match=r"gt\.json: annotations\[1\] is missing key 'bbox'"):
        evaluate(path, [])
    del gt["categories"]
    path.write_text(json.dumps(gt))
    with pytest.raises(HarnessError, match=r"gt\.json: missing key 'categories'"):
        evaluate(path, [])
    with pytest.raises(HarnessError, match="iou_types"):
        evaluate(perfect_gt, [], iou_types=("keypoints",))


def test_summary_table_layout():
    gt = make_gt([gt_ann(1, 1, 1, (4, 5, 10, 10))])
    table = summary_table(evaluate(gt, [pred(1, 1, (6, 5, 10, 10))]))
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "category", "bbox", "segm"]
    assert lines[2].split() == ["AP", "all", "40.00", "40.00"]
    assert lines[3].split() == ["AP50", "all", "100.00", "100.00"]
    assert lines[4].split() == ["AP75", "all", "0.00", "0.00"]
    assert [line.split() for line in lines if line.startswith("AP_medium")] == [["AP_medium", "all", "—", "—"]]
    assert "AP patches" not in table and ["AP", "patches", "—", "—"] in [line.split() for line in lines]
    assert "* bbox AP [patches], segm AP [patches]: no ground-truth instances of class 'patches'" in table
    assert summary_table([]) == "(no evaluation rows)"
