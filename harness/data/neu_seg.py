"""NEU-Seg release (images/{training,test}/*.jpg + annotations/{training,test}/*.png) -> prepared layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.data.masks import class_map_sample, pair_masks, split_names, write_prepared
from harness.imageio import list_images
from harness.errors import HarnessError

NEU_CLASSES = ["inclusion", "patches", "scratches"]


def find_neu_release(root: str | Path) -> dict[str, tuple[Path, Path]]:
    """{"training"|"test": (image folder, annotation folder)} or HarnessError naming what is missing."""
    root = Path(root)
    folders = {}
    for part in ("training", "test"):
        images, masks = root / "images" / part, root / "annotations" / part
        for folder in (images, masks):
            if not folder.is_dir():
                raise HarnessError(f"{folder}: not found; expected the NEU-Seg release layout "
                                   "images/{training,test}/*.jpg and annotations/{training,test}/*.png")
        folders[part] = (images, masks)
    return folders


def prepare_neu_seg(root: str | Path, out: str | Path, size: int | None = None, val_fraction: float = 0.1,
                    seed: int = 0, v_mean: float | None = 108.0, progress: bool = True) -> dict[str, Any]:
    """val = a seeded fraction of the release training split; test = the release test split.

    ``v_mean`` (default 108, domain A of the seed report) rescales each image's mean brightness.
    """
    root = Path(root)
    folders = find_neu_release(root)
    pairs = {part: {img.stem: (img, mask) for img, mask in pair_masks(list_images(images), masks)}
             for part, (images, masks) in folders.items()}
    parts = split_names(list(pairs["training"]), {"val": val_fraction}, seed)
    n = len(NEU_CLASSES)
    splits = {
        "train": [class_map_sample(*pairs["training"][s], n, size) for s in parts["rest"]],
        "val": [class_map_sample(*pairs["training"][s], n, size) for s in parts["val"]],
        "test": [class_map_sample(*pairs["test"][s], n, size) for s in sorted(pairs["test"])],
    }
    return write_prepared(
        out, splits, NEU_CLASSES,
        source={"kind": "neu-seg", "path": str(root.resolve())},
        arguments={"size": size, "val_fraction": val_fraction, "seed": seed, "v_mean": v_mean},
        v_mean=v_mean, progress=progress)
