"""A second camera's view of NEU-Seg: a real-style target the harness knows nothing about.

The published leaderboard ``leaderboards/neu-seg-targets-cpu.md`` needs one target that is not a registered
degradation, so that neither the adapters nor ``harness degrade estimate`` are told what changed. This script
renders the NEU-Seg train and test images (and their masks) as another camera would have taken them, with
operations outside the ``twin`` degradation's family (global linear brightness/contrast, additive Gaussian
noise, motion blur, JPEG), each image seeded from a hash of its name:

1. optics and resolution: a central square crop of ``CROP`` of the shorter side, resampled to ``SIZE`` x
   ``SIZE`` (bilinear for the image; the class map by nearest neighbour on the same coordinates, so the
   masks follow exactly);
2. illumination: a linear gradient of +-``GRADIENT`` in a direction drawn per image, times vignetting
   ``1 - VIGNETTE * r^2`` (r = 1 at the corners);
3. sensor noise, signal-dependent (Poisson-Gaussian): shot noise of a ``FULL_WELL``-electron full scale plus
   ``READ_NOISE`` grey levels of read noise;
4. a tone curve: gamma ``GAMMA`` (brightens mid-tones);
5. the camera's own JPEG files at quality ``JPEG_QUALITY``.

The export is a Roboflow-style COCO folder, the layout ``harness data prepare coco ROOT`` reads (train and
test kept as they are, val carved from train), one instance per 8-connected region of each class::

    OUT/train/<stem>.jpg   OUT/train/_annotations.coco.json
    OUT/test/<stem>.jpg    OUT/test/_annotations.coco.json

Usage (from the repository root; RELEASE defaults to ../shared/datasets/neu-seg, read only)::

    .venv/bin/python scripts/second_camera.py [RELEASE] --out OUT [--limit N]
    harness data prepare coco OUT --out ~/data/cam2               # labelled: oracle-T and evaluation
    harness data prepare images OUT/train --out ~/data/cam2-pool  # the train images, unlabelled: the pool

``--limit N`` takes the first N images (by name) of each release split, for quick looks and tests. OUT must
not exist or be empty. Bad input is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.data.coco import mask_to_annotation, write_json_atomic  # noqa: E402
from harness.data.masks import class_map_instances, pair_masks, read_class_map  # noqa: E402
from harness.data.neu_seg import NEU_CLASSES, find_neu_release  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.imageio import list_images, read_image  # noqa: E402

DEFAULT_RELEASE = ROOT.parent / "shared" / "datasets" / "neu-seg"
SPLITS = {"training": "train", "test": "test"}
ANNOTATIONS = "_annotations.coco.json"

CROP = 0.92
SIZE = 256
GRADIENT = 0.15
VIGNETTE = 0.30
FULL_WELL = 400.0
READ_NOISE = 2.0
GAMMA = 1.2
JPEG_QUALITY = 85


def image_rng(part: str, name: str) -> np.random.Generator:
    """A generator of the image's own: its output depends on nothing but its name and this script."""
    digest = hashlib.sha256(f"second-camera/{part}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def source_coords(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Source (y, x) of every output pixel centre: the central crop scaled to SIZE x SIZE."""
    side = CROP * min(height, width)
    scale = side / SIZE
    centres = (np.arange(SIZE) + 0.5) * scale - 0.5
    return centres + (height - side) / 2, centres + (width - side) / 2


def resample(image: np.ndarray, class_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear, class map nearest neighbour, both on the same source coordinates."""
    ys, xs = source_coords(*image.shape[:2])
    map_x, map_y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    out = cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    iy = np.clip(np.floor(ys + 0.5).astype(int), 0, image.shape[0] - 1)
    ix = np.clip(np.floor(xs + 0.5).astype(int), 0, image.shape[1] - 1)
    return out, class_map[np.ix_(iy, ix)]


def illumination(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gain field: a gradient in a random direction (at most +-GRADIENT) times radial vignetting."""
    h, w = shape
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    gradient = 1 + GRADIENT * (x * c + y * s) / (abs(c) + abs(s))
    return gradient * (1 - VIGNETTE * (x ** 2 + y ** 2) / 2)


def sensor(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson shot noise on the photo-electrons plus Gaussian read noise, in grey levels."""
    electrons = rng.poisson(np.clip(signal, 0, 255) * (FULL_WELL / 255)).astype(np.float64)
    return electrons * (255 / FULL_WELL) + rng.normal(0, READ_NOISE, signal.shape)


def tone(signal: np.ndarray) -> np.ndarray:
    return 255 * (np.clip(signal, 0, 255) / 255) ** (1 / GAMMA)


def capture(image: np.ndarray, class_map: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The second camera's picture (uint8, before JPEG) and its class map."""
    signal, class_map = resample(image, class_map)
    gain = illumination(signal.shape[:2], rng)
    signal = signal * (gain if signal.ndim == 2 else gain[:, :, None])
    picture = tone(sensor(signal, rng))
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8), class_map


def _export_split(part: str, pairs: list[tuple[Path, Path]], folder: Path) -> dict[str, int]:
    categories = [{"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(NEU_CLASSES)]
    images, annotations = [], []
    folder.mkdir(parents=True)
    for image_id, (image_path, mask_path) in enumerate(pairs, start=1):
        image = read_image(image_path)
        class_map = read_class_map(mask_path, len(NEU_CLASSES))
        if class_map.shape != image.shape[:2]:
            raise HarnessError(f"{mask_path}: mask is {class_map.shape[0]}x{class_map.shape[1]} but image "
                               f"{image_path.name} is {image.shape[0]}x{image.shape[1]}")
        picture, class_map = capture(image, class_map, image_rng(part, image_path.name))
        file_name = f"{image_path.stem}.jpg"
        ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise HarnessError(f"{folder / file_name}: could not encode JPEG")
        (folder / file_name).write_bytes(buf.tobytes())
        images.append({"id": image_id, "file_name": file_name, "width": SIZE, "height": SIZE})
        for category_id, mask in class_map_instances(class_map, len(NEU_CLASSES)):
            annotations.append(mask_to_annotation(mask, image_id, category_id, len(annotations) + 1))
    write_json_atomic(folder / ANNOTATIONS, {"images": images, "annotations": annotations, "categories": categories})
    return {"images": len(images), "instances": len(annotations)}


def export(release: str | Path, out: str | Path, limit: int | None = None) -> dict[str, dict[str, int]]:
    """Render the release's training and test splits into ``out`` (see the module docstring)."""
    release, out = Path(release), Path(out)
    if not release.is_dir():
        raise HarnessError(f"{release}: NEU-Seg release folder not found")
    if limit is not None and limit < 1:
        raise HarnessError(f"--limit must be a positive integer, got {limit}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HarnessError(f"{out}: exists and is not an empty folder; choose a new output folder")
    folders = find_neu_release(release)
    chosen = {part: pair_masks(list_images(images)[:limit], masks) for part, (images, masks) in folders.items()}
    return {SPLITS[part]: _export_split(part, pairs, out / SPLITS[part]) for part, pairs in chosen.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("release", nargs="?", default=str(DEFAULT_RELEASE),
                   help=f"NEU-Seg release folder (default {DEFAULT_RELEASE})")
    p.add_argument("--out", required=True, help="export folder (must not exist or be empty)")
    p.add_argument("--limit", type=int, help="only the first N images of each split")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        counts = export(args.release, args.out, args.limit)
    except HarnessError as exc:
        print(f"second_camera: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts), f"-> {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
