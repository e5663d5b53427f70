"""Generic converter: images + per-pixel class-id masks -> the prepared COCO layout.

Every source (NEU-Seg, a folder of masks, COCO imports, the synthetic generator) ends in
``write_prepared`` so that resizing, normalisation, file naming, statistics and dataset.json are
defined once.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from harness.data.coco import POOL, SPLITS, dataset_fingerprint, mask_to_annotation, write_json_atomic
from harness.data.content import CONTENT_HASH, pixel_sha256
from harness.data.stats import laplacian_variance, normalize_v_mean, summarize
from harness.errors import HarnessError
from harness.imageio import IMAGE_SUFFIXES, list_images, read_image, write_image

FORMAT_VERSION = 1

Instances = list[tuple[int, np.ndarray]]
#: (file stem, loader) where loader returns the final-size image and its (category_id, mask) instances
Sample = tuple[str, Callable[[], tuple[np.ndarray, Instances]]]


def target_shape(height: int, width: int, size: int | None) -> tuple[int, int]:
    """Output (h, w): the longer side becomes ``size``, aspect ratio kept; None keeps the input size."""
    if size is None:
        return height, width
    if size < 1:
        raise HarnessError(f"--size must be a positive integer, got {size}")
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == shape:
        return img
    shrinking = shape[0] * shape[1] < img.shape[0] * img.shape[1]
    return cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape[:2] == shape:
        return mask
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def class_map_instances(class_map: np.ndarray, num_classes: int) -> Instances:
    """One instance per 8-connected region of each class; their union is exactly the class's pixels."""
    instances: Instances = []
    for cls in range(1, num_classes + 1):
        binary = (class_map == cls).astype(np.uint8)
        total = int(binary.sum())
        if total == 0:
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        if int(stats[1:, cv2.CC_STAT_AREA].sum()) != total:
            raise RuntimeError(f"connected components of class {cls} do not cover its {total} pixels")
        for label in range(1, n):
            x, y, w, h = stats[label, :4]
            mask = np.zeros_like(binary)
            window = labels[y:y + h, x:x + w] == label
            mask[y:y + h, x:x + w] = window
            instances.append((cls, mask))
    return instances


def read_class_map(path: Path, num_classes: int) -> np.ndarray:
    class_map = read_image(path)
    if class_map.ndim != 2:
        raise HarnessError(f"{path}: class-id mask must have one channel (or equal channels)")
    if int(class_map.max(initial=0)) > num_classes:
        bad = sorted(int(v) for v in np.unique(class_map) if v > num_classes)
        raise HarnessError(f"{path}: unknown class id {bad[0]} (expected 0..{num_classes})")
    return class_map


def class_map_sample(image_path: Path, mask_path: Path, num_classes: int, size: int | None) -> Sample:
    def load() -> tuple[np.ndarray, Instances]:
        image = read_image(image_path)
        class_map = read_class_map(mask_path, num_classes)
        if class_map.shape != image.shape[:2]:
            raise HarnessError(f"{mask_path}: mask is {class_map.shape[0]}x{class_map.shape[1]} but image "
                               f"{image_path.name} is {image.shape[0]}x{image.shape[1]}")
        shape = target_shape(*image.shape[:2], size)
        class_map = resize_mask(class_map, shape)
        return resize_image(image, shape), class_map_instances(class_map, num_classes)

    return image_path.stem, load


def split_names(names: Sequence[str], fractions: dict[str, float], seed: int) -> dict[str, list[str]]:
    """Deterministic split of sorted names: each named split takes round(n * fraction) names, in order,
    from one seeded permutation; the rest is returned under "rest". A fraction of 1 takes everything (a
    labelled target that is only a test set)."""
    names = sorted(names)
    order = np.random.default_rng(seed).permutation(len(names))
    out: dict[str, list[str]] = {}
    start = 0
    for split, fraction in fractions.items():
        if not 0 <= fraction <= 1:
            raise HarnessError(f"{split} fraction must be in [0, 1], got {fraction}")
    if sum(fractions.values()) > 1 + 1e-9:
        raise HarnessError(" + ".join(f"{s} fraction {f}" for s, f in fractions.items()) + " is more than 1")
    for split, fraction in fractions.items():
        count = round(len(names) * fraction)
        out[split] = sorted(names[i] for i in order[start:start + count])
        start += count
    out["rest"] = sorted(names[i] for i in order[start:])
    return out


def escapes(path: Path, root: Path) -> Path | None:
    """Where ``path`` leads (symlinks followed) when that is outside ``root``, else None: a source must not
    pull other files into a prepared dataset, whose images later show in example panels."""
    try:
        target, base = path.resolve(), root.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise HarnessError(f"{path}: cannot resolve ({e})") from None
    return None if target.is_relative_to(base) else target


def inside(path: Path, root: Path, what: str) -> Path:
    target = escapes(path, root)
    if target is not None:
        raise HarnessError(f"{path}: {what} leads to {target}, outside {root}")
    return path


def pair_masks(images: list[Path], masks_dir: Path) -> list[tuple[Path, Path]]:
    """Pair each image (listed from its folder) with masks_dir/<stem>.png (any image suffix accepted for the
    mask); an image or mask that is a symlink leading out of its folder is an error."""
    by_stem: dict[str, Path] = {}
    if masks_dir.is_dir():
        # PNG sorts last by the key below, so it wins when a stem has several files
        for p in sorted(masks_dir.iterdir(), key=lambda p: (p.suffix.lower() == ".png", p.name)):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                by_stem[p.stem] = p
    pairs = []
    for image in images:
        if image.stem not in by_stem:
            raise HarnessError(f"{image}: no annotation mask {masks_dir / (image.stem + '.png')}")
        pairs.append((inside(image, image.parent, "image"), inside(by_stem[image.stem], masks_dir, "mask")))
    return pairs


_OUR_ENTRIES = {"images", "dataset.json", *(f"{s}.json" for s in (*SPLITS, POOL))}


def prepare_out(out: Path) -> None:
    """Refuse to write into a folder holding anything but a previous prepared dataset, then clear it."""
    if out.exists():
        if not out.is_dir():
            raise HarnessError(f"{out}: exists and is not a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OUR_ENTRIES and not p.name.startswith(".tmp-"))
        if foreign:
            raise HarnessError(f"{out}: not empty and not a prepared dataset (found '{foreign[0]}'); "
                               "choose a new output folder")
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def progress_bar(items: list, desc: str, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="img", file=sys.stderr, leave=False)


def write_prepared(out: str | Path, splits: dict[str, list[Sample]], classes: Sequence[str],
                   source: dict[str, Any], arguments: dict[str, Any], v_mean: float | None = None,
                   progress: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write images/<split>/<stem>.png, <split>.json for train/val/test and dataset.json (last, so a
    folder with dataset.json is complete). Returns the dataset.json content. A split left out of ``splits``
    (train and val of a test-only target) is not written, and dataset.json lists it under absent_splits."""
    out = Path(out)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or "test" not in splits:
        raise ValueError(f"write_prepared takes splits {SPLITS} (test required), got {sorted(splits)}")
    prepare_out(out)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    summary: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    for split in (s for s in SPLITS if s in splits):
        samples = sorted(splits[split], key=lambda s: s[0])
        stems = [s[0] for s in samples]
        if len(set(stems)) != len(stems):
            dup = next(s for s in stems if stems.count(s) > 1)
            raise HarnessError(f"{split}: two images named '{dup}' would both become images/{split}/{dup}.png")
        images, annotations, sharpness = [], [], []
        counts = {name: 0 for name in classes}
        for image_id, (stem, load) in enumerate(progress_bar(samples, split, progress), start=1):
            image, instances = load()
            if v_mean is not None:
                image = normalize_v_mean(image, v_mean)
            file_name = f"images/{split}/{stem}.png"
            write_image(out / file_name, image)
            sharpness.append(laplacian_variance(image))
            images.append({"id": image_id, "file_name": file_name, "width": int(image.shape[1]),
                           "height": int(image.shape[0])})
            hashes[file_name] = pixel_sha256(image)
            for category_id, mask in instances:
                if mask.shape != image.shape[:2]:
                    raise RuntimeError(f"{file_name}: instance mask {mask.shape} differs from image")
                annotations.append(mask_to_annotation(mask, image_id, category_id, len(annotations) + 1))
                counts[classes[category_id - 1]] += 1
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / f"{split}.json",
                          {"images": images, "annotations": annotations, "categories": categories})
        summary[split] = {"images": len(images), "instances": counts, "sharpness": summarize(sharpness)}
    absent = [s for s in SPLITS if s not in splits]
    meta = {"format_version": FORMAT_VERSION, "kind": "labelled", "source": source, "arguments": arguments,
            "classes": list(classes), "v_mean_normalisation": v_mean, "splits": summary,
            **({"absent_splits": absent} if absent else {}),
            "fingerprint": dataset_fingerprint(out, tuple(summary)), **(extra or {}), "content_hash": CONTENT_HASH,
            "sha256": hashes}
    write_json_atomic(out / "dataset.json", meta, indent=2)
    return meta


def prepare_masks(images_dir: str | Path, masks_dir: str | Path, classes: list[str], out: str | Path,
                  size: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                  v_mean: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Any folder of images with same-stem class-id PNG masks (pixel k = classes[k-1], 0 background).
    ``test_fraction`` 1 puts every image in test and writes no train or val split (``val_fraction`` unused)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if not classes:
        raise HarnessError("prepare_masks: at least one class name is needed")
    if not masks_dir.is_dir():
        raise HarnessError(f"{masks_dir}: mask folder not found")
    pairs = {img.stem: (img, mask) for img, mask in pair_masks(list_images(images_dir), masks_dir)}
    if test_fraction == 1:
        val_fraction = 0.0
    parts = split_names(list(pairs), {"test": test_fraction, "val": val_fraction}, seed)
    splits = {split: [class_map_sample(*pairs[n], len(classes), size) for n in parts[key]]
              for split, key in (("train", "rest"), ("val", "val"), ("test", "test"))
              if test_fraction < 1 or split == "test"}
    return write_prepared(
        out, splits, classes,
        source={"kind": "masks", "images": str(images_dir.resolve()), "masks": str(masks_dir.resolve())},
        arguments={"size": size, "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
                   "v_mean": v_mean},
        v_mean=v_mean, progress=progress)


def summary_table(meta: dict[str, Any], out: str | Path) -> str:
    """What `harness data prepare` / `data generate` print: per split the image and instance counts (in
    total and by class) and the image folder; dataset.json (``--json``) holds the full record."""
    from tabulate import tabulate

    out = Path(out)
    if meta.get("kind") == "pool":
        return _pool_table(meta, out)
    classes = meta["classes"]
    rows = []
    for split in (s for s in SPLITS if s in meta["splits"]):
        s = meta["splits"][split]
        counts = [s["instances"].get(name, 0) for name in classes]
        rows.append([split, s["images"], sum(counts), *counts, str(out / "images" / split)])
    lines = [tabulate(rows, headers=["split", "images", "instances", *classes, "folder"])]
    if meta.get("absent_splits"):
        lines.append(f"test only: no {' or '.join(s + '.json' for s in meta['absent_splits'])} "
                     "(--test-fraction 1): a target to evaluate on, not to train on")
    imported = meta.get("import") or {}
    if imported.get("dropped_categories"):
        lines.append(f"dropped categories without annotations: {', '.join(imported['dropped_categories'])}")
    if imported.get("skipped_crowd_annotations"):
        lines.append(f"skipped crowd annotations: {imported['skipped_crowd_annotations']}")
    lines.append(f"prepared dataset -> {out} (full record in {out / 'dataset.json'}; --json prints it)")
    return "\n".join(lines)


def _pool_table(meta: dict[str, Any], out: Path) -> str:
    from tabulate import tabulate

    pool, sizes = meta["splits"][POOL], meta["size_range"]
    width, height = ("-".join(dict.fromkeys(str(v) for v in sizes[k])) for k in ("width", "height"))
    channels = ", ".join(f"{c}-channel: {n}" for c, n in sorted(meta["channels"].items()))
    table = tabulate([[POOL, pool["images"], width, height, channels, str(out / "images" / POOL)]],
                     headers=["split", "images", "width", "height", "channels", "folder"])
    return "\n".join([table, f"unlabelled pool -> {out} (full record in {out / 'dataset.json'}; --json prints it)"])
