"""Unlabelled pools: a folder of images (nested folders allowed) or a COCO file without annotations.

A pool is what an unpaired adapter fits on as domain B for a real target. Layout: ``images/pool/<relative
path>.png`` (the source's folders kept, each name made safe and unique), ``pool.json`` (COCO: the images,
an empty annotations list, no categories) and ``dataset.json`` (kind "pool", written last).
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from harness.data.coco import POOL, dataset_fingerprint, write_json_atomic
from harness.data.content import CONTENT_HASH, pixel_sha256
from harness.data.masks import (FORMAT_VERSION, escapes, inside, prepare_out, progress_bar, resize_image,
                                target_shape)
from harness.data.stats import laplacian_variance, normalize_v_mean, summarize
from harness.errors import HarnessError
from harness.imageio import IMAGE_SUFFIXES, read_image, write_image

CHANNELS = ("kept as read: grayscale files (and colour files whose three channels are equal) stay one channel, "
            "colour stays three (BGR); an alpha channel is dropped and 16-bit pixels become 8-bit")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: (name in the source, relative to its folder; file; (height, width) the source declares, or None)
Item = tuple[str, Path, tuple[int, int] | None]


def _safe(part: str) -> str:
    return (_UNSAFE.sub("_", part).lstrip(".") or "_")[:100]


def output_names(originals: list[str]) -> list[str]:
    """``pool/<dirs>/<stem>.png`` per source name: unsafe characters become ``_``, a name that collides
    (also ignoring case, for case-insensitive file systems) gets ``-2``, ``-3``... in the given order."""
    taken: set[str] = set()
    names = []
    for original in originals:
        rel = PurePosixPath(original)
        folder = "/".join(_safe(p) for p in rel.parts[:-1])
        stem, n = _safe(rel.stem), 1
        while True:
            name = "/".join(filter(None, (POOL, folder, f"{stem}{'' if n == 1 else f'-{n}'}.png")))
            if name.lower() not in taken:
                break
            n += 1
        taken.add(name.lower())
        names.append(name)
    return names


def find_images(folder: str | Path) -> list[Item]:
    """Every image file under ``folder`` (nested, sorted by relative path; hidden files and folders skipped).
    A file or folder that is a symlink leading outside ``folder`` is an error; a symlinked folder inside it
    is not followed (its files are found where it points)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"{folder}: image folder not found")
    found: list[Item] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            if (here / d).is_symlink():
                inside(here / d, folder, "folder")
        for name in filenames:
            path = here / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((path.relative_to(folder).as_posix(), inside(path, folder, "image"), None))
    if not found:
        raise HarnessError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its subfolders")
    return sorted(found, key=lambda item: item[0])


def coco_image_path(image: Any, index: int, image_dir: Path, json_path: Path) -> tuple[str, Path]:
    """(file_name, path) of a COCO image entry; a file_name leading outside ``image_dir`` is an error."""
    name = f"image {image['id']}" if isinstance(image, dict) and "id" in image else f"image #{index}"
    file_name = image.get("file_name") if isinstance(image, dict) else None
    if not isinstance(file_name, str) or not file_name:
        raise HarnessError(f"{json_path}: {name} file_name must be a non-empty string")
    path = image_dir / file_name
    target = escapes(path, image_dir)
    if target is not None:
        raise HarnessError(f"{json_path}: {name} file_name '{file_name}' leads to {target}, "
                           f"outside the image folder {image_dir}")
    return file_name, path


def write_pool(out: str | Path, items: list[Item], source: dict[str, Any], arguments: dict[str, Any],
               size: int | None = None, v_mean: float | None = None, progress: bool = True,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a pool dataset from ``items`` (every file must read; dataset.json last). Returns dataset.json."""
    out = Path(out)
    names = output_names([item[0] for item in items])
    prepare_out(out)
    images, sharpness, channels, widths, heights, hashes = [], [], Counter(), [], [], {}
    for image_id, ((original, path, declared), name) in enumerate(
            progress_bar(list(zip(items, names)), POOL, progress), start=1):
        image = read_image(path)
        if declared is not None and image.shape[:2] != declared:
            raise HarnessError(f"{path}: image is {image.shape[0]}x{image.shape[1]} but its COCO entry says "
                               f"{declared[0]}x{declared[1]}")
        image = resize_image(image, target_shape(*image.shape[:2], size))
        if v_mean is not None:
            image = normalize_v_mean(image, v_mean)
        write_image(out / "images" / name, image)
        h, w = image.shape[:2]
        channels[str(1 if image.ndim == 2 else image.shape[2])] += 1
        widths.append(w)
        heights.append(h)
        sharpness.append(laplacian_variance(image))
        images.append({"id": image_id, "file_name": f"images/{name}", "width": int(w), "height": int(h),
                       "original": original})
        hashes[f"images/{name}"] = pixel_sha256(image)
    write_json_atomic(out / f"{POOL}.json", {"images": images, "annotations": [], "categories": []})
    meta = {"format_version": FORMAT_VERSION, "kind": "pool", "source": source, "arguments": arguments,
            "classes": [], "v_mean_normalisation": v_mean,
            "splits": {POOL: {"images": len(images), "sharpness": summarize(sharpness)}},
            "size_range": {"width": [min(widths), max(widths)], "height": [min(heights), max(heights)]},
            "channels": dict(sorted(channels.items())), "channel_policy": CHANNELS,
            "fingerprint": dataset_fingerprint(out, (POOL,)), **(extra or {}), "content_hash": CONTENT_HASH,
            "sha256": hashes}
    write_json_atomic(out / "dataset.json", meta, indent=2)
    return meta


def prepare_images(folder: str | Path, out: str | Path, size: int | None = None, v_mean: float | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """`harness data prepare images FOLDER`: every image under FOLDER, of any size, becomes the pool."""
    folder = Path(folder)
    return write_pool(out, find_images(folder), source={"kind": "images", "path": str(folder.resolve())},
                      arguments={"size": size, "v_mean": v_mean}, size=size, v_mean=v_mean, progress=progress)


def is_pool_coco(data: Any) -> bool:
    """A COCO file whose annotations list is empty or missing describes an unlabelled pool."""
    return isinstance(data, dict) and data.get("annotations") in (None, [])


def prepare_coco_pool(json_path: str | Path, image_dir: str | Path, data: dict[str, Any], out: str | Path,
                      size: int | None = None, v_mean: float | None = None, progress: bool = True) -> dict[str, Any]:
    """The images a COCO file lists (categories are not needed and not kept) become the pool."""
    json_path, image_dir = Path(json_path), Path(image_dir)
    if not isinstance(data.get("images"), list):
        raise HarnessError(f"{json_path}: 'images' must be a list")
    items: list[Item] = []
    seen: set[str] = set()
    for i, image in enumerate(data["images"]):
        file_name, path = coco_image_path(image, i, image_dir, json_path)
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(image_dir))
        if rel.startswith(".."):  # reached through a symlinked folder inside image_dir
            rel = str(path.resolve().relative_to(image_dir.resolve()))
        rel = PurePosixPath(Path(rel).as_posix()).as_posix()
        if rel in seen:
            raise HarnessError(f"{json_path}: two images with file_name '{file_name}'")
        seen.add(rel)
        declared = (image["height"], image["width"]) if "height" in image and "width" in image else None
        items.append((rel, path, declared))
    if not items:
        raise HarnessError(f"{json_path}: no images and no annotations: neither a labelled dataset nor a pool")
    categories = [c.get("name") for c in data.get("categories") or [] if isinstance(c, dict)]
    return write_pool(out, items, size=size, v_mean=v_mean, progress=progress,
                      source={"kind": "coco", "json": str(json_path.resolve()), "images": str(image_dir.resolve())},
                      arguments={"size": size, "v_mean": v_mean},
                      extra={"import": {"pool": "the COCO file has no annotations", "ignored_categories": categories}})
