"""Host side of degradations: per-image seeding, contract checks, and degrading a folder of images.

Each image gets its own generator seeded from (image key, plugin name + params, severity, seed), so a
degraded image never depends on which other images were processed, in what order, or in which process.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from harness.errors import HarnessError
from harness.hashing import seed_from
from harness.imageio import list_images, read_image, write_image
from harness.interfaces import Degradation



def image_rng(image_key: str, plugin: str, severity: int, seed: int,
              params: dict[str, Any] | None = None) -> np.random.Generator:
    return np.random.default_rng(seed_from("degrade", str(image_key), plugin, params or {}, int(severity), int(seed)))


def severity_range(severities: tuple[int, ...]) -> str:
    s = sorted(severities)
    return f"{s[0]}..{s[-1]}" if s == list(range(s[0], s[-1] + 1)) else ", ".join(map(str, s))


def per_severity(plugin: Degradation, key: str, kind: type, lo: float, hi: float) -> list:
    """``plugin.config[key]`` checked as one ``kind`` value in ``lo..hi`` per severity, so that a bad
    override fails when the plugin is built rather than halfway through a folder."""
    values = plugin.config[key]
    n = len(plugin.severities)
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__") or len(values) != n:
        raise HarnessError(f"degradation '{plugin.name}': '{key}' must be a list of {n} values "
                           f"(one per severity), got {values!r}")
    out = []
    for v in values:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
        if not ok or (kind is int and v != int(v)):
            raise HarnessError(f"degradation '{plugin.name}': '{key}' value {v!r} is not {kind.__name__} in {lo}..{hi}")
        out.append(kind(v))
    return out


def _shape(image: np.ndarray) -> str:
    return "x".join(map(str, image.shape)) + f" {image.dtype}"


def degrade_image(plugin: Degradation, image: np.ndarray, image_key: str, severity: int, seed: int) -> np.ndarray:
    """Apply ``plugin`` at ``severity`` with the image's own generator; enforce the plugin contract."""
    if isinstance(severity, bool) or severity not in plugin.severities:
        raise HarnessError(f"degradation '{plugin.name}': severity {severity} not in {severity_range(plugin.severities)}")
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise HarnessError(f"{image_key}: expected a uint8 HxW or HxWx3 image, got {_shape(image)}")
    frozen = image.view()
    frozen.flags.writeable = False  # a plugin that edits its input in place fails loudly
    rng = image_rng(image_key, plugin.name, severity, seed, plugin.config)
    out = plugin.apply(frozen, int(severity), rng)
    if not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != np.uint8:
        got = _shape(out) if isinstance(out, np.ndarray) else type(out).__name__
        raise HarnessError(f"degradation '{plugin.name}' returned {got} for a {_shape(image)} input ({image_key})")
    return out


def unique_stem_images(in_dir: str | Path) -> list[Path]:
    """Images of ``in_dir``; two files with one stem would both be written as ``<stem>.png``."""
    files = list_images(in_dir)
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise HarnessError(f"{p}: same stem as {seen[p.stem].name}; both would be written as {p.stem}.png")
        seen[p.stem] = p
    return files


def _degrade_file(job: tuple[Degradation, int, int, Path, Path]) -> None:
    plugin, severity, seed, src, dst = job
    write_image(dst, degrade_image(plugin, read_image(src), src.stem, severity, seed))


def degrade_folder(plugin: Degradation, severity: int, seed: int, in_dir: str | Path, out_dir: str | Path,
                   progress: bool = True, workers: int = 1) -> int:
    """Degrade every image in ``in_dir`` into ``out_dir/<stem>.png``; returns the number written.

    Output is PNG so the only compression artifacts are the ones the plugin chose. ``workers > 1``
    uses a process pool; results are identical because each image is seeded on its own.
    """
    files = unique_stem_images(in_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(in_dir).resolve():
        raise HarnessError(f"{out_dir}: output folder must differ from the input folder")
    if isinstance(severity, bool) or severity not in plugin.severities:
        raise HarnessError(f"degradation '{plugin.name}': severity {severity} not in {severity_range(plugin.severities)}")
    jobs = [(plugin, severity, seed, src, out_dir / f"{src.stem}.png") for src in files]
    bar = tqdm(total=len(jobs), desc=f"{plugin.name} s{severity}", unit="img", disable=not progress)
    with bar:
        for _ in _run(jobs, workers):
            bar.update()
    return len(jobs)


def _run(jobs: list, workers: int) -> Iterator[None]:
    if workers <= 1 or len(jobs) < 2:
        yield from map(_degrade_file, jobs)
        return
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(_degrade_file, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    finally:
        pool.shutdown(cancel_futures=True)
