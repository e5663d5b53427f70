"""``ic_<name>``: the 19 corruptions of the ``imagecorruptions`` package (1.1.2; Michaelis et al. 2019, the
ImageNet-C set of Hendrycks & Dietterich) as degradations, severities 1..5 with the package's constants.

:data:`BENCHMARK` names the 15 benchmark corruptions (the mean-corruption-error set), :data:`HELD_OUT` the 4
held-out ("validation") ones that a robustness study keeps aside. Names carry the ``ic_`` prefix because
``gaussian_noise``, ``motion_blur`` and ``jpeg`` are the project's own, differently calibrated plugins.

How the package is wrapped, and why:

- Seeding: the package draws from the global ``np.random`` state. Each call seeds that state from ``rng``
  inside :func:`global_numpy_seed` (a lock, then ``get_state``/``seed``/``set_state``), so the output depends
  on ``rng`` alone and the caller's global state is left as it was. Other threads' own ``np.random`` draws
  are not under the lock: do not mix them with these plugins in one process.
- Shapes: the package wants HxWx3 of at least 32 px a side. Grey images are stacked to three channels and
  brought back with ``cv2.COLOR_RGB2GRAY`` (per-channel noise is therefore averaged: about 0.66 of its
  colour sigma); smaller images are reflect-padded (centred) to 32 px and cropped back. Output is ``uint8``
  truncated as ``imagecorruptions.corrupt`` does.
- Ported (same constants): ``glass_blur`` and ``gaussian_blur`` (``multichannel=`` is gone from
  scikit-image), ``fog`` (``np.float_`` is gone from numpy 2) and ``impulse_noise`` (scikit-image's
  ``random_noise`` draws from its own unseeded generator, so it is handed ``rng``). The ported four draw
  from ``rng`` directly. ``glass_blur``'s pixel loop is vectorised (:func:`glass_shuffle`).
- Import: the package is imported on first use; 1.1.2 imports ``pkg_resources``, which setuptools >= 81
  no longer ships, so a stand-in providing ``resource_filename`` (for the frost textures) is put in
  ``sys.modules`` for the duration of that import only.

Large images: ``frost`` scales its texture up to cover the image and ``fog`` grows its plasma map to the
next power of two of the longest side, both already in 1.1.2.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import threading
import types
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from harness.errors import HarnessError
from harness.interfaces import Degradation

PREFIX = "ic_"
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
HELD_OUT_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
BENCHMARK = tuple(PREFIX + c for c in BENCHMARK_CORRUPTIONS)
HELD_OUT = tuple(PREFIX + c for c in HELD_OUT_CORRUPTIONS)
MIN_SIDE = 32

_GLOBAL_RNG_LOCK = threading.Lock()
_IMPORT_LOCK = threading.Lock()


@contextmanager
def global_numpy_seed(seed: int) -> Iterator[None]:
    """Run a block with the global ``np.random`` state seeded to ``seed``; restore the caller's state after."""
    with _GLOBAL_RNG_LOCK:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def _resource_filename(module: str, path: str) -> str:
    return os.path.normpath(os.path.join(os.path.dirname(sys.modules[module].__file__), path))


@functools.cache
def package() -> types.ModuleType:
    """``imagecorruptions.corruptions``, imported on first use (it pulls in scikit-image and scipy)."""
    with _IMPORT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.interpolation, pkg_resources
        shim = None
        if importlib.util.find_spec("pkg_resources") is None:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = _resource_filename
            sys.modules["pkg_resources"] = shim
        try:
            return importlib.import_module("imagecorruptions.corruptions")
        except ImportError as exc:
            raise HarnessError(f"the ic_* degradations need the imagecorruptions package "
                               f"(pip install 'imagecorruptions>=1.1.2'): {exc}") from exc
        finally:
            if shim is not None and sys.modules.get("pkg_resources") is shim:
                del sys.modules["pkg_resources"]


# Ported corruptions: x is HxWx3 uint8, the result float in 0..255 like the package's.

def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian
    return gaussian(x, sigma=sigma, channel_axis=-1)


def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [1, 2, 3, 4, 6][severity - 1]
    return np.clip(_gaussian(x / 255., c), 0, 1) * 255


def glass_shuffle(x: np.ndarray, delta: int, offsets: np.ndarray) -> np.ndarray:
    """One pass of the package's pixel loop, vectorised; ``offsets[i, j] = (dx, dy)`` for the pixel at
    ``(H - delta - i, W - delta - j)``, each in ``[-delta, delta)``.

    The loop visits rows ``H-delta .. delta+1`` and, in each, columns ``W-delta .. delta+1``, both descending,
    and runs ``x[h, w], x[h+dy, w+dx] = x[h+dy, w+dx], x[h, w]``. On HxWx3 arrays both right-hand sides are
    views, so that copies rather than swaps (numpy/numpy#14428): ``x[h, w]`` takes its source's value at
    that moment. A source visited earlier (a larger flat index among visited pixels) already holds its new
    value, so each pixel ends with the value its chain of earlier-visited sources starts from; the chains
    are followed by pointer doubling.
    """
    h, w = x.shape[:2]
    rows, cols = np.arange(h - delta, delta, -1), np.arange(w - delta, delta, -1)
    if rows.size == 0 or cols.size == 0:
        return x.copy()
    hh, ww = np.meshgrid(rows, cols, indexing="ij")
    dst = (hh * w + ww).ravel()
    src = ((hh + offsets[..., 1]) * w + (ww + offsets[..., 0])).ravel()
    visited = np.zeros(h * w, bool)
    visited[dst] = True
    earlier = visited[src] & (src > dst)
    nxt = np.arange(h * w)
    nxt[dst[earlier]] = src[earlier]
    while True:
        jumped = nxt[nxt]
        if np.array_equal(jumped, nxt):
            break
        nxt = jumped
    source_of = np.arange(h * w)
    source_of[dst] = src
    flat = x.reshape(h * w, -1)
    out = flat.copy()
    out[dst] = flat[source_of[nxt[dst]]]
    return out.reshape(x.shape)


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma, delta, passes = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(_gaussian(x / 255., sigma) * 255)
    n_rows, n_cols = max(0, x.shape[0] - 2 * delta), max(0, x.shape[1] - 2 * delta)
    for _ in range(passes):
        x = glass_shuffle(x, delta, rng.integers(-delta, delta, size=(n_rows, n_cols, 2)))
    return np.clip(_gaussian(x / 255., sigma), 0, 1) * 255


def plasma_fractal(rng: np.random.Generator, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square height map, ``mapsize`` x ``mapsize`` (a power of two), in 0..1."""
    if mapsize & (mapsize - 1):
        raise HarnessError(f"plasma_fractal: mapsize {mapsize} is not a power of two")
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = (drgrid + np.roll(drgrid, 1, axis=0)) + (ulgrid + np.roll(ulgrid, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = (drgrid + np.roll(drgrid, 1, axis=1)) + (ulgrid + np.roll(ulgrid, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    amount, decay = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)][severity - 1]
    h, w = x.shape[:2]
    mapsize = 1 << (max(h, w) - 1).bit_length()
    x = x / 255.
    max_val = x.max()
    x = x + amount * plasma_fractal(rng, mapsize, decay)[:h, :w, np.newaxis]
    return np.clip(x * max_val / (max_val + amount), 0, 1) * 255


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.util import random_noise
    c = [.03, .06, .09, 0.17, 0.27][severity - 1]
    return np.clip(random_noise(x / 255., mode="s&p", amount=c, rng=rng), 0, 1) * 255


PORTED: dict[str, Callable[[np.ndarray, int, np.random.Generator], Any]] = {
    "gaussian_blur": gaussian_blur, "glass_blur": glass_blur, "fog": fog, "impulse_noise": impulse_noise,
}


def _run_package(corruption: str, x: np.ndarray, severity: int, rng: np.random.Generator) -> Any:
    from PIL import Image
    fn = getattr(package(), corruption)
    with global_numpy_seed(int(rng.integers(0, 2 ** 32))):
        return fn(Image.fromarray(x), severity)


def corrupt(corruption: str, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``corruption`` at ``severity`` on a uint8 HxW or HxWx3 image of any size; same shape and dtype out."""
    gray = image.ndim == 2
    rgb = np.repeat(image[..., np.newaxis], 3, axis=2) if gray else image
    h, w = rgb.shape[:2]
    ph, pw = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
    top, left = ph // 2, pw // 2
    if ph or pw:
        rgb = np.pad(rgb, ((top, ph - top), (left, pw - left), (0, 0)), mode="reflect")
    rgb = np.ascontiguousarray(rgb)
    if corruption in PORTED:
        out = PORTED[corruption](rgb, severity, rng)
    else:
        out = _run_package(corruption, rgb, severity, rng)
    out = np.uint8(np.asarray(out))[top:top + h, left:left + w]
    if gray:
        out = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(out)


class Corruption(Degradation):
    """Base of the ``ic_*`` plugins: ``corruption`` names the imagecorruptions function."""

    version = "1"
    corruption = ""

    def apply(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        return corrupt(self.corruption, image, severity, rng)


def _make(corruption: str, held_out: bool) -> type[Corruption]:
    cls_name = "IC" + "".join(part.title() for part in corruption.split("_"))
    role = ("held-out (validation) corruption, kept out of the benchmark mean" if held_out
            else "benchmark corruption (one of the 15)")
    summary = f"imagecorruptions {corruption}: {role}, severities 1..5"
    return type(cls_name, (Corruption,), {
        "__module__": __name__, "__qualname__": cls_name, "__doc__": f"imagecorruptions ``{corruption}``.",
        "name": PREFIX + corruption, "corruption": corruption, "summary": summary,
    })


CORRUPTIONS: tuple[type[Corruption], ...] = tuple(
    [_make(c, False) for c in BENCHMARK_CORRUPTIONS] + [_make(c, True) for c in HELD_OUT_CORRUPTIONS]
)
globals().update({cls.__name__: cls for cls in CORRUPTIONS})  # pickle finds them by module and name

__all__ = ["BENCHMARK", "HELD_OUT", "CORRUPTIONS", "Corruption", "corrupt", *(c.__name__ for c in CORRUPTIONS)]
