"""COCO-style evaluation of instance-segmentation predictions, returned as tidy rows.

pycocotools does the matching and precision accumulation. This module owns everything around it:
- input validation, so a bad file fails with a HarnessError naming the file and key instead of an
  AssertionError or KeyError deep inside pycocotools;
- building the result set itself instead of `COCO.loadRes`, which crashes on an empty list, sniffs the
  format from the first entry only, and (for segm) takes a detection's area from its box instead of its mask;
- renumbering ground-truth annotation ids from 1, because COCOeval treats a match to annotation id 0 as
  "unmatched" (it stores matched gt ids in an array where 0 means none);
- turning COCO's -1 sentinel into `value=None` plus a note saying why.

Box-only predictions (no prediction has 'segmentation') are still evaluated for bbox; their segm rows are
kept, with `value=None` and a note, so tables keep one shape. Predictions where only some entries have a
mask are rejected, because silently scoring a partial mask set would understate segm AP.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from harness.errors import HarnessError

IOU_TYPES = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
_AREA_INDEX = {"AP": 0, "AP50": 0, "AP75": 0, "AP_small": 1, "AP_medium": 2, "AP_large": 3}
_AREA_RANGE = {"AP_small": "area < 32²", "AP_medium": "32² ≤ area < 96²", "AP_large": "area ≥ 96²"}
BOXES_ONLY_NOTE = "segm not evaluated: predictions have no 'segmentation' (boxes only)"

Row = dict[str, Any]
PathLike = str | Path


def _read_json(path: PathLike) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"{p}: cannot read ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HarnessError(f"{p}: malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _require(obj: Any, key: str, where: str, source: str) -> Any:
    if not isinstance(obj, dict):
        raise HarnessError(f"{source}: {where} is not a JSON object")
    if key not in obj:
        raise HarnessError(f"{source}: {where} is missing key '{key}'")
    return obj[key]


def _bbox(value: Any, where: str, source: str) -> list[float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(_is_number(v) for v in value)):
        raise HarnessError(f"{source}: {where} 'bbox' must be [x, y, w, h] numbers, got {value!r}")
    if value[2] < 0 or value[3] < 0:
        raise HarnessError(f"{source}: {where} 'bbox' has negative width or height: {list(value)}")
    return [float(v) for v in value]


def _to_rle(segm: Any, h: int, w: int, where: str, source: str) -> dict:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) as a compressed RLE of the image size."""
    if isinstance(segm, list):
        ok = segm and all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_is_number(v) for v in p) for p in segm
        )
        if not ok:
            raise HarnessError(f"{source}: {where} 'segmentation' polygons must be lists of >= 3 x,y pairs")
        return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in segm], h, w))
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if not (isinstance(size, (list, tuple)) and list(size) == [h, w]):
            raise HarnessError(f"{source}: {where} 'segmentation' size is {size!r} but image is {h}x{w} (h, w)")
        counts = segm["counts"]
        if isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts):
            if sum(counts) != h * w:
                raise HarnessError(f"{source}: {where} 'segmentation' RLE counts sum to {sum(counts)}, not {h * w}")
            return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        if isinstance(counts, (str, bytes)) and counts:
            return {"size": [h, w], "counts": counts}
    raise HarnessError(f"{source}: {where} 'segmentation' must be polygons or an RLE dict with 'size' and 'counts'")


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _positive_int(obj: dict, key: str, where: str, source: str) -> int:
    value = _require(obj, key, where, source)
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0):
        raise HarnessError(f"{source}: {where} '{key}' must be a positive integer, got {value!r}")
    return int(value)


def load_ground_truth(gt: PathLike | dict, need_segm: bool = True) -> tuple[COCO, str]:
    """Validated COCO ground truth and the name to use for it in messages; a dict argument is not modified."""
    if isinstance(gt, (str, Path)):
        source, data = str(gt), _read_json(gt)
    elif isinstance(gt, dict):
        source, data = "<ground-truth dict>", copy.deepcopy(gt)
    else:
        raise HarnessError(f"ground truth must be a path or a COCO dict, got {type(gt).__name__}")
    if not isinstance(data, dict):
        raise HarnessError(f"{source}: expected a COCO object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise HarnessError(f"{source}: missing key '{key}' (a list)")

    images: dict[Any, dict] = {}
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        img_id = _require(img, "id", where, source)
        if img_id in images:
            raise HarnessError(f"{source}: {where} repeats image id {img_id!r}")
        images[img_id] = {
            "id": img_id,
            "height": _positive_int(img, "height", where, source),
            "width": _positive_int(img, "width", where, source),
        }
    categories: dict[Any, dict] = {}
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]"
        cat_id = _require(cat, "id", where, source)
        if cat_id in categories:
            raise HarnessError(f"{source}: {where} repeats category id {cat_id!r}")
        categories[cat_id] = {"id": cat_id, "name": str(_require(cat, "name", where, source))}

    anns = []
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        img_id = _require(ann, "image_id", where, source)
        cat_id = _require(ann, "category_id", where, source)
        if img_id not in images:
            raise HarnessError(f"{source}: {where} has image_id {img_id!r}, which is not in 'images'")
        if cat_id not in categories:
            raise HarnessError(f"{source}: {where} has category_id {cat_id!r}, which is not in 'categories'")
        out = {
            "id": len(anns) + 1,
            "image_id": img_id,
            "category_id": cat_id,
            "bbox": _bbox(_require(ann, "bbox", where, source), where, source),
            "iscrowd": int(bool(ann.get("iscrowd", 0))),
        }
        rle = None
        if need_segm or ("area" not in ann and "segmentation" in ann):
            img = images[img_id]
            rle = _to_rle(_require(ann, "segmentation", where, source), img["height"], img["width"], where, source)
            out["segmentation"] = rle
        if "area" in ann:
            if not (_is_number(ann["area"]) and ann["area"] >= 0):
                raise HarnessError(f"{source}: {where} 'area' must be a number >= 0, got {ann['area']!r}")
            out["area"] = float(ann["area"])
        else:
            out["area"] = float(mask_utils.area(rle)) if rle is not None else out["bbox"][2] * out["bbox"][3]
        anns.append(out)
    dataset = {"images": list(images.values()), "categories": list(categories.values()), "annotations": anns}
    return _coco(dataset), source


def _check_predictions(data: Any, source: str) -> list[dict]:
    if not isinstance(data, list):
        raise HarnessError(f"{source}: predictions must be a JSON list of result objects")
    for i, p in enumerate(data):
        where = f"prediction [{i}]"
        for key in ("image_id", "category_id", "score"):
            _require(p, key, where, source)
        if not _is_number(p["score"]):
            raise HarnessError(f"{source}: {where} 'score' must be a finite number, got {p['score']!r}")
        if "bbox" in p:
            _bbox(p["bbox"], where, source)
        elif "segmentation" not in p:
            raise HarnessError(f"{source}: {where} is missing key 'bbox' (and has no 'segmentation')")
    return data


def load_predictions(path: PathLike) -> list[dict]:
    """COCO result list from a JSON file, checked for the keys every result needs."""
    return _check_predictions(_read_json(path), str(path))


def _results(coco_gt: COCO, preds: list[dict], iou_type: str, source: str) -> COCO:
    """The result set pycocotools' loadRes would build, without its failure modes (see module docstring)."""
    anns = []
    for i, p in enumerate(preds):
        where = f"prediction [{i}]"
        img = coco_gt.imgs.get(p["image_id"])
        if img is None:
            raise HarnessError(f"{source}: {where} has image_id {p['image_id']!r}, which is not in the ground truth")
        if p["category_id"] not in coco_gt.cats:
            raise HarnessError(
                f"{source}: {where} has category_id {p['category_id']!r}, which is not a ground-truth category"
            )
        ann = {"id": i + 1, "image_id": p["image_id"], "category_id": p["category_id"],
               "score": float(p["score"]), "iscrowd": 0}
        rle = None
        if iou_type == "segm" or "bbox" not in p:
            rle = _to_rle(_require(p, "segmentation", where, source), img["height"], img["width"], where, source)
        if iou_type == "segm":
            ann["segmentation"] = rle
            ann["area"] = float(mask_utils.area(rle))
            ann["bbox"] = mask_utils.toBbox(rle).tolist()
        else:
            ann["bbox"] = _bbox(p["bbox"], where, source) if "bbox" in p else mask_utils.toBbox(rle).tolist()
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        anns.append(ann)
    return _coco({"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                  "annotations": anns})


def _mean_valid(precision: np.ndarray) -> float | None:
    valid = precision[precision > -1]
    if valid.size == 0:
        return None
    value = float(valid.mean())
    return value if math.isfinite(value) else None


def _rows(iou_type: str, coco_gt: COCO, ev: COCOeval) -> list[Row]:
    precision = ev.eval["precision"]  # [iou thr, recall thr, class, area range, max dets]
    thresholds = ev.params.iouThrs
    max_dets = ev.params.maxDets.index(100)
    iou_index = {
        "AP50": np.flatnonzero(np.isclose(thresholds, 0.50)),
        "AP75": np.flatnonzero(np.isclose(thresholds, 0.75)),
    }
    rows = []
    for metric in METRICS:
        t = iou_index.get(metric, slice(None))
        value = _mean_valid(precision[t, :, :, _AREA_INDEX[metric], max_dets])
        note = ""
        if value is None:
            note = (f"no ground-truth objects of this size ({_AREA_RANGE[metric]})" if metric in _AREA_RANGE
                    else "no ground-truth instances in the evaluated images")
        rows.append({"iou_type": iou_type, "metric": metric, "category": "all", "value": value, "note": note})
    for k, cat_id in enumerate(ev.params.catIds):
        name = coco_gt.cats[cat_id]["name"]
        value = _mean_valid(precision[:, :, k, 0, max_dets])
        note = "" if value is not None else f"no ground-truth instances of class '{name}' in the evaluated images"
        rows.append({"iou_type": iou_type, "metric": "AP", "category": name, "value": value, "note": note})
    return rows


def _unevaluated_rows(iou_type: str, coco_gt: COCO, note: str) -> list[Row]:
    names = ["all"] * len(METRICS) + [coco_gt.cats[c]["name"] for c in sorted(coco_gt.getCatIds())]
    metrics = list(METRICS) + ["AP"] * (len(names) - len(METRICS))
    return [{"iou_type": iou_type, "metric": m, "category": n, "value": None, "note": note}
            for m, n in zip(metrics, names)]


def read_predictions(predictions: PathLike | list[dict]) -> tuple[str, list[dict]]:
    """(name for messages, checked results) from a results file or an in-memory list."""
    if isinstance(predictions, (str, Path)):
        return str(predictions), load_predictions(predictions)
    if isinstance(predictions, list):
        return "<predictions list>", _check_predictions(predictions, "<predictions list>")
    raise HarnessError(f"predictions must be a path or a list of result dicts, got {type(predictions).__name__}")


def evaluate(
    gt: PathLike | dict,
    predictions: PathLike | list[dict],
    iou_types: Sequence[str] = IOU_TYPES,
) -> list[Row]:
    """COCO AP rows: per iou_type, the six summary metrics over all classes, then AP per class.

    Each row is {"iou_type", "metric", "category", "value" (0..1 or None), "note" (why None, else "")}.
    """
    iou_types = tuple(iou_types)
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise HarnessError(f"iou_types must be a non-empty subset of {list(IOU_TYPES)}, got {list(iou_types)}")
    coco_gt, _ = load_ground_truth(gt, need_segm="segm" in iou_types)
    source, preds = read_predictions(predictions)

    without_mask = [i for i, p in enumerate(preds) if "segmentation" not in p]
    boxes_only = bool(preds) and len(without_mask) == len(preds)
    if "segm" in iou_types and without_mask and not boxes_only:
        raise HarnessError(f"{source}: prediction [{without_mask[0]}] is missing key 'segmentation' "
                           f"(other predictions have one; give all or none)")

    rows: list[Row] = []
    for iou_type in iou_types:
        if iou_type == "segm" and boxes_only:
            rows += _unevaluated_rows(iou_type, coco_gt, BOXES_ONLY_NOTE)
            continue
        coco_dt = _results(coco_gt, preds, iou_type, source)
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
        rows += _rows(iou_type, coco_gt, ev)
    return rows


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def summary_table(rows: Iterable[Row]) -> str:
    """Plain-text table: one line per (metric, category), one column per iou_type, AP ×100; notes below."""
    rows = list(rows)
    if not rows:
        return "(no evaluation rows)"
    iou_types = list(dict.fromkeys(r["iou_type"] for r in rows))
    keys = list(dict.fromkeys((r["metric"], r["category"]) for r in rows))
    cells = {(r["metric"], r["category"], r["iou_type"]): r.get("value") for r in rows}
    table = [["metric", "category", *iou_types]]
    table += [[m, c, *(_fmt(cells.get((m, c, t))) for t in iou_types)] for m, c in keys]
    widths = [max(len(line[j]) for line in table) for j in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) if j < 2 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths)))
             .rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))

    notes: dict[str, list[str]] = {}
    for r in rows:
        if r.get("note"):
            label = f"{r['iou_type']} {r['metric']}" + ("" if r["category"] == "all" else f" [{r['category']}]")
            notes.setdefault(r["note"], []).append(label)
    if notes:
        lines.append("")
        lines += [f"* {', '.join(labels)}: {note}" for note, labels in notes.items()]
    return "\n".join(lines)
