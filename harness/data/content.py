"""Per-image content hashes, and the overlap of an unlabelled pool with a labelled split.

The hashes live in dataset.json (``sha256``: file_name -> hash), outside the split JSONs, so recording
them changed no dataset's fingerprint. A hash is SHA-256 of the decoded pixels (a shape header, then the
uint8 bytes; equal-channel colour collapsed to grayscale as ``read_image`` does), not of the file bytes:
the same picture re-encoded (another PNG compression level or library version, a JPEG source prepared
twice, other metadata) must still count as the same image, or a pool could leak evaluated images past the
check. Images that differ in any pixel (another ``--size`` or ``--v-mean``) do not match: this finds
exact copies, not near duplicates.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from harness.data.coco import POOL, dataset_meta, image_records
from harness.imageio import read_image

#: what dataset.json says about the ``sha256`` field of every image entry
CONTENT_HASH = ("sha256 of the decoded pixels (header 'HxWxC', then the uint8 bytes, BGR for colour; "
                "equal-channel colour counts as grayscale), so re-encoding a file keeps its hash")


def pixel_sha256(image: np.ndarray) -> str:
    if image.ndim == 3 and all(np.array_equal(image[:, :, 0], image[:, :, c]) for c in (1, 2)):
        image = image[:, :, 0]
    channels = 1 if image.ndim == 2 else image.shape[2]
    h = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}x{channels}\n".encode())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _hashes(data_dir: Path, split: str) -> dict[str, list[Path]]:
    """sha256 -> image paths of a split, from dataset.json's ``sha256`` map (file_name -> hash); an image
    it lacks (a folder prepared before hashes were recorded) is hashed from its file."""
    recorded = (dataset_meta(data_dir) or {}).get("sha256") or {}
    out: dict[str, list[Path]] = {}
    for rec in image_records(data_dir, split):
        digest = recorded.get(rec["file_name"]) or pixel_sha256(read_image(rec["path"]))
        out.setdefault(digest, []).append(rec["path"])
    return out


def pool_overlap(pool_dir: str | Path, data_dir: str | Path, split: str = "test") -> list[tuple[Path, Path]]:
    """(pool image, split image) pairs with the same content, sorted: what a target's pool must not share with
    the split its cells evaluate."""
    pool, labelled = _hashes(Path(pool_dir), POOL), _hashes(Path(data_dir), split)
    return sorted((p, q) for digest in pool.keys() & labelled.keys() for p in pool[digest] for q in labelled[digest])
