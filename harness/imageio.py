"""Image reading and writing with errors that name the file; grayscale stays 2-D, dtype stays uint8."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from harness import atomic
from harness.errors import HarnessError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted; a missing or image-less folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise HarnessError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image(path: str | Path, grayscale_if_possible: bool = True) -> np.ndarray:
    """Read an image as uint8: HxW for grayscale content, HxWx3 (BGR) otherwise.

    NEU-Seg stores grayscale content as 3-channel JPEG; collapsing equal channels keeps the
    "grayscale stays grayscale" contract without guessing from the file format.
    """
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: image not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise HarnessError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        else:
            raise HarnessError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if grayscale_if_possible and image.ndim == 3 and _channels_equal(image):
        image = np.ascontiguousarray(image[:, :, 0])
    return image


def _channels_equal(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2]))


def to_bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write atomically (temp file + rename) so a killed process never leaves a truncated image."""
    path = Path(path)
    if image.dtype != np.uint8:
        raise HarnessError(f"{path}: refusing to write {image.dtype} image; plugins must return uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise HarnessError(f"{path}: could not encode image")
    atomic.write_bytes(path, buf.tobytes())


def check_image(result: Any, shape: tuple[int, ...], where: str) -> None:
    """A plugin's output must be a uint8 array shaped like its input."""
    if not isinstance(result, np.ndarray) or result.dtype != np.uint8 or result.shape != shape:
        got = f"{getattr(result, 'shape', None)} {getattr(result, 'dtype', type(result).__name__)}"
        raise HarnessError(f"{where}: returned {got}, expected {shape} uint8")


def map_images(pairs: list[tuple[Path, Path]], fn: Callable[[list[np.ndarray], list[Path]], list], desc: str,
               chunk: int = 1, progress: bool = True) -> None:
    """Read each source of (source, destination) ``pairs``, ``chunk`` at a time, and write what
    ``fn(images, sources)`` returns for them after checking each result (networks batch a chunk)."""
    from tqdm import tqdm

    with tqdm(total=len(pairs), desc=desc, unit="img", leave=False, disable=not progress) as bar:
        for start in range(0, len(pairs), chunk):
            batch = pairs[start:start + chunk]
            images = [read_image(src) for src, _ in batch]
            results = fn(images, [src for src, _ in batch])
            if not isinstance(results, list) or len(results) != len(images):
                raise HarnessError(f"{desc}: returned {type(results).__name__} for a batch of {len(images)} images")
            for (src, dst), image, result in zip(batch, images, results):
                check_image(result, image.shape, f"{desc}: {src.name}")
                write_image(dst, result)
            bar.update(len(batch))
