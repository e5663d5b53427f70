"""The ic_* degradations (imagecorruptions): contract on grey, tiny and colour images, seeding that ignores order,
process and thread, severity ordering, and the ported pieces (glass_blur's vectorised loop, large images)."""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from harness.degrade import degrade_image
from harness.registry import Registry
from plugins.degradations.corruptions import (
    BENCHMARK, CORRUPTIONS, HELD_OUT, corrupt, global_numpy_seed, glass_shuffle, package,
)

ROOT = Path(__file__).resolve().parents[1]
ids = [c.name for c in CORRUPTIONS]
#: (plugin, severity) pairs that cannot change a grey image: saturation of a grey pixel is 0, and
#: severities 1..3 only scale it
GREY_UNCHANGED = {("ic_saturate", 1), ("ic_saturate", 2), ("ic_saturate", 3)}


def texture(h: int, w: int, color: bool = False, seed: int = 0) -> np.ndarray:
    """Gradient + grain + a dark blob, so that blurs, noise and tone changes all show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 90 + 60 * xx / w + rng.normal(0, 12, (h, w))
    img[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 6) ** 2] = 30
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.dstack([img, np.roll(img, 3, axis=1), 255 - img]) if color else img


IMAGES = {"grey200": texture(200, 200), "grey20x23": texture(20, 23, seed=1), "colour64x80": texture(64, 80, True, 2)}


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


def test_sets_and_registration():
    assert len(BENCHMARK) == 15 and len(HELD_OUT) == 4 and not set(BENCHMARK) & set(HELD_OUT)
    assert ids == [*BENCHMARK, *HELD_OUT] and all(n.startswith("ic_") for n in ids)
    assert len({c.__name__ for c in CORRUPTIONS}) == 19
    for cls in CORRUPTIONS:
        assert ("held-out" in cls.summary) == (cls.name in HELD_OUT)
        assert pickle.loads(pickle.dumps(cls())).name == cls.name
    reg = Registry().load_entry_points()
    assert {("degradation", n) for n in ids} <= set(reg.entries)
    assert "pkg_resources" not in sys.modules or hasattr(sys.modules["pkg_resources"], "working_set")


@pytest.mark.parametrize("cls", CORRUPTIONS, ids=ids)
def test_shape_dtype_change_determinism_severity(cls):
    plugin = cls()
    for key, img in IMAGES.items():
        outs = {}
        for s in (1, 5):
            out = degrade_image(plugin, img, key, s, 0)
            assert out.shape == img.shape and out.dtype == np.uint8, (key, s)
            if not (img.ndim == 2 and (cls.name, s) in GREY_UNCHANGED):
                assert mad(out, img) > 0.5, f"{key} severity {s} left the image (nearly) as it was"
            outs[s] = out
        assert np.array_equal(plugin.apply(img, 5, np.random.default_rng(9)),
                              plugin.apply(img, 5, np.random.default_rng(9)))
        assert mad(outs[5], img) > mad(outs[1], img), f"{key}: severity 5 is not further from clean than 1"


@pytest.mark.parametrize("cls", CORRUPTIONS, ids=ids)
def test_order_and_global_state_do_not_matter(cls):
    plugin, x, y = cls(), texture(40, 36, seed=3), texture(40, 36, seed=4)
    np.random.seed(1)
    alone = degrade_image(plugin, x, "x", 3, 0)
    np.random.seed(123)
    degrade_image(plugin, y, "y", 3, 0)
    state = np.random.get_state()[1].copy()
    after = degrade_image(plugin, x, "x", 3, 0)
    assert np.array_equal(alone, after)
    assert np.array_equal(np.random.get_state()[1], state), "caller's np.random state changed"


def _digests(severity: int) -> list[str]:
    x = texture(36, 40, color=True, seed=5)
    return [digest(degrade_image(cls(), x, "p", severity, 1)) for cls in CORRUPTIONS]


def _one(cls) -> str:
    return digest(degrade_image(cls(), texture(36, 40, color=True, seed=5), "p", 2, 1))


def test_same_bytes_in_a_fresh_process_a_process_pool_and_threads():
    here = _digests(2)
    code = "from tests.test_corruptions import _digests\nprint('\\n'.join(_digests(2)))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"}
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == here
    with ProcessPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(_one, CORRUPTIONS)) == here
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(_one, CORRUPTIONS * 2)) == here * 2


def _glass_loop(x: np.ndarray, delta: int, offsets: np.ndarray) -> np.ndarray:
    """imagecorruptions 1.1.2's loop, verbatim but for the offsets it is handed."""
    x = x.copy()
    for i, h in enumerate(range(x.shape[0] - delta, delta, -1)):
        for j, w in enumerate(range(x.shape[1] - delta, delta, -1)):
            dx, dy = offsets[i, j]
            h_prime, w_prime = h + dy, w + dx
            x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


@pytest.mark.parametrize("h,w,delta", [(30, 34, 1), (27, 31, 4), (9, 8, 4)])
def test_glass_shuffle_matches_the_reference_loop(h, w, delta):
    rng = np.random.default_rng(h * w)
    x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    offsets = rng.integers(-delta, delta, size=(max(0, h - 2 * delta), max(0, w - 2 * delta), 2))
    assert np.array_equal(glass_shuffle(x, delta, offsets), _glass_loop(x, delta, offsets))


@pytest.mark.parametrize("name,shape", [("frost", (40, 1000)), ("fog", (300, 40)), ("zoom_blur", (1, 5)),
                                        ("frost", (3, 2, 3))])
def test_large_thin_and_tiny_images(name, shape):
    img = texture(*shape[:2], color=len(shape) == 3)
    out = corrupt(name, img, 5, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)


def test_global_seed_context_restores_state_on_error():
    package()
    assert "pkg_resources" not in sys.modules or hasattr(sys.modules["pkg_resources"], "working_set")
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    with pytest.raises(RuntimeError), global_numpy_seed(1):
        np.random.random(5)
        raise RuntimeError
    assert np.array_equal(np.random.get_state()[1], before)
