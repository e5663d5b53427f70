"""COCO instance-segmentation JSON: loading with validation, writing, and content fingerprints."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from harness import atomic
from harness.errors import HarnessError
from harness.hashing import file_digest, stable_hash

SPLITS = ("train", "val", "test")
#: the one split of an unlabelled pool dataset (``harness data prepare images``)
POOL = "pool"

_REQUIRED = {
    "image": ("id", "file_name", "width", "height"),
    "annotation": ("id", "image_id", "category_id", "segmentation"),
    "category": ("id", "name"),
}


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = None) -> None:
    """Temp file + rename, so readers never see half a JSON file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic.mkstemp(path.parent, suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_segmentation(rle: dict[str, Any]) -> np.ndarray:
    """Decode an RLE whose counts are str (as stored in our JSON) to an HxW uint8 mask."""
    counts = rle["counts"]
    return mask_utils.decode({"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts})


def mask_to_annotation(mask: np.ndarray, image_id: int, category_id: int, ann_id: int) -> dict[str, Any]:
    rle = encode_mask(mask)
    bbox = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()})
    return {"id": int(ann_id), "image_id": int(image_id), "category_id": int(category_id), "segmentation": rle,
            "area": int(np.count_nonzero(mask)), "bbox": [float(v) for v in bbox], "iscrowd": 0}


def _entry_name(kind: str, entry: Any, index: int) -> str:
    if isinstance(entry, dict) and "id" in entry:
        return f"{kind} {entry['id']}"
    return f"{kind} #{index}"


def validate_coco(data: Any, source: str) -> dict[str, Any]:
    """Check structure and references; errors name ``source`` and the offending key."""
    if not isinstance(data, dict):
        raise HarnessError(f"{source}: top level must be a JSON object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise HarnessError(f"{source}: missing key '{key}'")
        if not isinstance(data[key], list):
            raise HarnessError(f"{source}: '{key}' must be a list")
    ids: dict[str, set] = {}
    for key, kind in (("images", "image"), ("categories", "category"), ("annotations", "annotation")):
        seen: set = set()
        for i, entry in enumerate(data[key]):
            name = _entry_name(kind, entry, i)
            if not isinstance(entry, dict):
                raise HarnessError(f"{source}: {name} is not an object")
            for req in _REQUIRED[kind]:
                if req not in entry:
                    raise HarnessError(f"{source}: {name} has no '{req}'")
            if entry["id"] in seen:
                raise HarnessError(f"{source}: duplicate {kind} id {entry['id']}")
            seen.add(entry["id"])
        ids[kind] = seen
    for ann in data["annotations"]:
        if ann["image_id"] not in ids["image"]:
            raise HarnessError(f"{source}: annotation {ann['id']} refers to unknown image_id {ann['image_id']}")
        if ann["category_id"] not in ids["category"]:
            raise HarnessError(
                f"{source}: annotation {ann['id']} refers to unknown category_id {ann['category_id']}")
    return data


def read_coco_json(path: str | Path) -> Any:
    """The parsed file, not yet validated (a COCO file without annotations is a pool, see harness.data.pool)."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: COCO JSON not found{_why_absent(path)}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: malformed JSON ({e})") from None


def load_coco(path: str | Path) -> dict[str, Any]:
    return validate_coco(read_coco_json(path), str(path))


def dataset_meta(data_dir: str | Path) -> dict[str, Any] | None:
    """The folder's dataset.json, or None where there is none (or it is unreadable)."""
    try:
        meta = json.loads((Path(data_dir) / "dataset.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _why_absent(path: Path) -> str:
    """Why a split JSON of a prepared dataset is missing, when its dataset.json says so."""
    meta = dataset_meta(path.parent) or {}
    split = path.name[:-len(".json")] if path.name.endswith(".json") else None
    if meta.get("kind") == "pool" and split != POOL:
        return f" ({path.parent} is an unlabelled pool: it has only {POOL}.json)"
    if split in (meta.get("absent_splits") or []):
        return (f" ({path.parent} has no {split} split: it was prepared with --test-fraction 1, test only; "
                "it can be evaluated on, not trained on)")
    return ""


def present_splits(data_dir: str | Path) -> tuple[str, ...]:
    """The splits a prepared folder holds: those its dataset.json lists, else those whose JSON exists."""
    data_dir = Path(data_dir)
    meta = dataset_meta(data_dir)
    if meta is not None and isinstance(meta.get("splits"), dict):
        return tuple(s for s in (*SPLITS, POOL) if s in meta["splits"])
    return tuple(s for s in (*SPLITS, POOL) if (data_dir / f"{s}.json").is_file()) or SPLITS


def load_split(data_dir: str | Path, split: str) -> dict[str, Any]:
    return load_coco(Path(data_dir) / f"{split}.json")


def chosen(images: list[dict[str, Any]], limit: int | None, sample: int | None = None) -> list[dict[str, Any]]:
    """The evaluated images, in id order: all, the first ``limit`` by id, or ``sample`` images chosen by a hash
    of their file names. Files are often sorted by class, so a sample is a fair subset where a prefix is not;
    hashing names (not drawing from an RNG) keeps an image's membership independent of the others."""
    ordered = sorted(images, key=lambda im: im["id"])
    if sample:
        keep = {im["id"] for im in sorted(ordered, key=lambda im: stable_hash(["sample", im["file_name"]]))[:sample]}
        ordered = [im for im in ordered if im["id"] in keep]
    return ordered[:limit] if limit else ordered


def first_images(coco: dict[str, Any], limit: int | None, sample: int | None = None) -> dict[str, Any]:
    """The split restricted to the images ``chosen`` picks (the ones the stages adapt and predict)."""
    if not limit and not sample:
        return coco
    keep = {img["id"] for img in chosen(coco["images"], limit, sample)}
    return {**coco, "images": [im for im in coco["images"] if im["id"] in keep],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}


def image_records(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Image entries of a split sorted by id, each with ``path`` (absolute) and its ``annotations``."""
    data_dir = Path(data_dir)
    data = load_split(data_dir, split)
    by_image: dict[Any, list] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    return [{**img, "path": (data_dir / img["file_name"]).resolve(), "annotations": by_image[img["id"]]}
            for img in sorted(data["images"], key=lambda im: im["id"])]


def dataset_fingerprint(data_dir: str | Path, splits: tuple[str, ...] | None = None) -> str:
    """Hash of the split JSONs and every referenced image's bytes: moving the folder keeps it. By default the
    splits the folder holds (``present_splits``): a test-only dataset or a pool has fewer than three."""
    data_dir = Path(data_dir)
    parts = {}
    for split in present_splits(data_dir) if splits is None else splits:
        json_path = data_dir / f"{split}.json"
        records = image_records(data_dir, split)
        missing = [r["path"] for r in records if not r["path"].is_file()]
        if missing:
            raise HarnessError(f"{json_path}: referenced image {missing[0]} not found")
        parts[split] = {"json": file_digest(json_path), "images": [file_digest(r["path"]) for r in records]}
    return stable_hash(parts)
