"""COCO JSON import (Roboflow exports and plain COCO) -> prepared layout.

Instances are kept as the source annotated them (no merging into connected components): a COCO
source already says what an instance is, and overlapping instances cannot be rebuilt from a class map.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from harness.data.coco import SPLITS, decode_segmentation, read_coco_json, validate_coco
from harness.data.masks import Instances, Sample, resize_image, resize_mask, split_names, target_shape, write_prepared
from harness.data.pool import coco_image_path, is_pool_coco, prepare_coco_pool
from harness.errors import HarnessError
from harness.imageio import read_image

ROBOFLOW_SPLITS = {"train": "train", "valid": "val", "val": "val", "test": "test"}
ROBOFLOW_JSON = "_annotations.coco.json"


def find_roboflow_splits(root: str | Path) -> dict[str, tuple[Path, Path]]:
    """root/{train,valid,test}/_annotations.coco.json -> {"train"|"val"|"test": (json, image folder)}."""
    root = Path(root)
    found: dict[str, tuple[Path, Path]] = {}
    for folder, split in ROBOFLOW_SPLITS.items():
        json_path = root / folder / ROBOFLOW_JSON
        if json_path.is_file() and split not in found:
            found[split] = (json_path, json_path.parent)
    if "train" not in found:
        raise HarnessError(f"{root}: not a Roboflow COCO export (no train/{ROBOFLOW_JSON})")
    return found


def _segmentation_rle(seg: Any, h: int, w: int, where: str) -> dict[str, Any]:
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, list)]
        if not seg or len(polys) != len(seg) or any(
                len(p) < 6 or len(p) % 2 or not all(isinstance(v, (int, float)) for v in p) for p in polys):
            raise HarnessError(f"{where}: segmentation must be polygons [[x1, y1, x2, y2, x3, y3, ...], ...]")
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            raise HarnessError(f"{where}: RLE size {seg['size']} differs from image size [{h}, {w}]")
        if isinstance(seg["counts"], list):
            return mask_utils.frPyObjects(seg, h, w)
        return seg
    raise HarnessError(f"{where}: unsupported segmentation (expected polygons or RLE)")


def _categories(datas: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, dict[Any, int]], list[str]]:
    """Merge categories by name over splits, drop Roboflow's empty parent placeholder, number 1..K.

    Returns (class names, per split {source category id -> new id}, dropped names)."""
    names: list[str] = []
    supers: dict[str, Any] = {}
    used: set[str] = set()
    for data in datas.values():
        id_to_name = {c["id"]: str(c["name"]) for c in data["categories"]}
        for cat in sorted(data["categories"], key=lambda c: c["id"]):
            if cat["name"] not in names:
                names.append(str(cat["name"]))
                supers[str(cat["name"])] = cat.get("supercategory")
        used.update(id_to_name[a["category_id"]] for a in data["annotations"])
    dropped = [n for n in names if n not in used and len(names) > 1
               and all(supers[o] == n for o in names if o != n)]
    classes = [n for n in names if n not in dropped]
    mapping = {split: {c["id"]: classes.index(str(c["name"])) + 1 for c in data["categories"]
                       if str(c["name"]) in classes} for split, data in datas.items()}
    return classes, mapping, dropped


def _coco_sample(image: dict[str, Any], anns: list[dict[str, Any]], image_dir: Path, json_path: Path,
                 cat_map: dict[Any, int], size: int | None) -> Sample:
    _, path = coco_image_path(image, 0, image_dir, json_path)

    def load() -> tuple[np.ndarray, Instances]:
        img = read_image(path)
        h, w = img.shape[:2]
        if (h, w) != (image["height"], image["width"]):
            raise HarnessError(f"{path}: image is {h}x{w} but {json_path.name} says "
                               f"{image['height']}x{image['width']}")
        shape = target_shape(h, w, size)
        instances: Instances = []
        for ann in anns:
            rle = _segmentation_rle(ann["segmentation"], h, w, f"{json_path}: annotation {ann['id']}")
            mask = resize_mask(decode_segmentation(rle), shape)
            if mask.any():
                instances.append((cat_map[ann["category_id"]], mask))
        return resize_image(img, shape), instances

    return Path(image["file_name"]).stem, load


def prepare_coco(sources: dict[str, tuple[Path, Path]], out: str | Path, size: int | None = None,
                 val_fraction: float = 0.1, seed: int = 0, test_fraction: float = 0.2,
                 v_mean: float | None = None, progress: bool = True) -> dict[str, Any]:
    """sources: split -> (coco json, image folder). A missing val (or test) split is carved from train
    with a seeded permutation; a carved ``test_fraction`` of 1 takes all of train (no train.json, no carved
    val). Crowd annotations are skipped and counted in dataset.json. One COCO file whose annotations list is
    empty or missing is an unlabelled pool (``harness.data.pool``)."""
    unknown = sorted(set(sources) - set(SPLITS))
    if unknown:
        raise HarnessError(f"unknown split '{unknown[0]}' (expected {', '.join(SPLITS)})")
    if "train" not in sources:
        raise HarnessError("a COCO import needs a train split")
    sources = {s: (Path(j), Path(d)) for s, (j, d) in sources.items()}
    raw = {split: read_coco_json(json_path) for split, (json_path, _) in sources.items()}
    if len(raw) == 1 and is_pool_coco(raw["train"]):
        return prepare_coco_pool(*sources["train"], raw["train"], out, size=size, v_mean=v_mean, progress=progress)
    datas = {split: validate_coco(raw[split], str(sources[split][0])) for split in raw}
    classes, mapping, dropped = _categories(datas)
    if not classes:
        raise HarnessError(f"{sources['train'][0]}: no categories")
    samples: dict[str, dict[str, Sample]] = {}
    crowd = 0
    for split, data in datas.items():
        json_path, image_dir = sources[split]
        by_image: dict[Any, list] = {img["id"]: [] for img in data["images"]}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                crowd += 1
            elif ann["category_id"] in mapping[split]:
                by_image[ann["image_id"]].append(ann)
        samples[split] = {}
        for img in data["images"]:
            stem, load = _coco_sample(img, by_image[img["id"]], image_dir, json_path, mapping[split], size)
            if stem in samples[split]:
                raise HarnessError(f"{json_path}: two images named '{stem}' (image {img['id']})")
            samples[split][stem] = (stem, load)
    carve = {s: f for s, f in (("test", test_fraction), ("val", val_fraction)) if s not in samples}
    test_only = carve.get("test") == 1
    if test_only and "val" in carve:
        carve["val"] = 0.0
    if carve:
        parts = split_names(list(samples["train"]), carve, seed)
        for split in carve:
            samples[split] = {n: samples["train"][n] for n in parts[split]}
        samples["train"] = {n: samples["train"][n] for n in parts["rest"]}
    absent = ({"train"} | ({"val"} & set(carve))) if test_only else set()
    return write_prepared(
        out, {split: list(samples[split].values()) for split in SPLITS if split not in absent}, classes,
        source={"kind": "coco", "splits": {s: {"json": str(j.resolve()), "images": str(d.resolve())}
                                           for s, (j, d) in sources.items()}},
        arguments={"size": size, "val_fraction": carve.get("val", val_fraction), "test_fraction": test_fraction,
                   "seed": seed, "v_mean": v_mean, "carved_from_train": sorted(carve)},
        v_mean=v_mean, progress=progress,
        extra={"import": {"dropped_categories": dropped, "skipped_crowd_annotations": crowd}})
