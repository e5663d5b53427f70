"""Adapter plugins: the contract every registered adapter keeps, and what each built-in one computes."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import plugins.adapters as builtin
from harness.degrade import degrade_image
from harness.errors import HarnessError
from harness.imageio import write_image
from harness.registry import Registry
from plugins.adapters.classical import CLASSICAL, BM3D
from plugins.adapters.fda import FDA, amplitude, window
from plugins.adapters.illumination import HistMatch, VMean, match_lut
from plugins.degradations import DomainB

REGISTRY = Registry()
REGISTRY.add(builtin)
NAMES = REGISTRY.names("adapter")


def texture(h: int, w: int, color: bool = False, seed: int = 0) -> np.ndarray:
    """Gradient + grain + a dark blob + a thin bright line: something every adapter changes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 80 + 70 * xx / w + 20 * np.sin(yy / 7.0) + rng.normal(0, 10, (h, w))
    img[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 6) ** 2] -= 50
    img[h // 4, :] += 60
    img = np.clip(img, 0, 255).astype(np.uint8)
    if color:
        img = np.dstack([img, np.roll(img, 3, axis=1), (0.6 * (255 - img)).astype(np.uint8)])
    return img


def frozen(image: np.ndarray) -> np.ndarray:
    """A read-only view: an adapter that edits its input in place fails loudly."""
    view = image.view()
    view.flags.writeable = False
    return view


def fit_files(folder: Path, fit_data: str) -> tuple[list[Path], list[Path]]:
    """Tiny gray training images as the host hands them to ``fit``: for "paired", B/x.png is the degraded
    A/x.png; for "unpaired", B holds degraded copies of other images; for "source", no B."""
    n, size, domain_b = 4, 32, DomainB()

    def write(path: Path, image: np.ndarray) -> Path:
        write_image(path, image)
        return path

    source = [write(folder / "A" / f"{i}.png", texture(size, size, seed=i)) for i in range(n)]
    if fit_data == "source":
        return source, []
    first = 0 if fit_data == "paired" else 100
    return source, [write(folder / "B" / f"{first + i}.png",
                          degrade_image(domain_b, texture(size, size, seed=first + i), str(first + i), 3, 0))
                    for i in range(n)]


@pytest.fixture(scope="module", params=NAMES)
def fitted(request, tmp_path_factory):
    """(class, params, fit_dir) per registered adapter, fitted once with quick_params when trainable."""
    cls = REGISTRY.get("adapter", request.param)
    if not cls.trainable:
        return cls, dict(cls.quick_params), None
    work = tmp_path_factory.mktemp(cls.name)
    source, target = fit_files(work / "images", cls.fit_data)
    cls(**cls.quick_params).fit(source, target, work / "fit", seed=0, progress=False)
    return cls, dict(cls.quick_params), work / "fit"


def ready(fitted):
    cls, params, fit_dir = fitted
    adapter = cls(**params)
    adapter.load(fit_dir)
    return adapter


def test_builtin_adapters_register_cleanly():
    assert not REGISTRY.errors
    assert {"identity", "nlm", "bilateral", "median", "gaussian", "bm3d", "wavelet", "tv",
            "clahe", "vmean", "histmatch", "fda"} <= set(NAMES)
    for name in NAMES:
        cls = REGISTRY.get("adapter", name)
        assert REGISTRY.entries[("adapter", name)].summary and cls.version
        assert cls.fit_data in ("source", "unpaired", "paired")
        assert set(cls.quick_params) <= set(cls.params)


def test_contract_shape_dtype_channels(fitted):
    adapter = ready(fitted)
    for image in (texture(199, 203), texture(45, 67, color=True, seed=1)):
        out = adapter.adapt(frozen(image))
        assert out.dtype == np.uint8 and out.shape == image.shape


def test_contract_deterministic(fitted):
    gray, color = texture(41, 37, seed=2), texture(33, 48, color=True, seed=3)
    first = ready(fitted)
    a = [first.adapt(gray), first.adapt(color)]
    assert all(np.array_equal(x, y) for x, y in zip(a, [first.adapt(gray), first.adapt(color)]))
    fresh = ready(fitted)
    assert all(np.array_equal(x, y) for x, y in zip(a, [fresh.adapt(gray), fresh.adapt(color)]))


def test_contract_batch_equals_single(fitted):
    adapter = ready(fitted)
    images = [texture(40, 40, seed=4), texture(29, 51, seed=5), texture(36, 44, color=True, seed=6)]
    batch = adapter.adapt_batch(images)
    assert len(batch) == len(images)
    for image, out in zip(images, batch):
        assert np.array_equal(out, adapter.adapt(image))


@pytest.mark.parametrize("cls", CLASSICAL, ids=[c.name for c in CLASSICAL])
def test_denoisers_undo_part_of_domain_b(cls):
    """Defaults are tuned for domain_b severity 3: each must cut the squared error of such an image by 30 %."""
    yy, xx = np.mgrid[0:96, 0:96]
    smooth = 100 + 30 * np.sin(xx / 11.0) * np.cos(yy / 13.0) + 10 * np.sin(yy / 3.0)
    smooth[(yy - 48) ** 2 + (xx - 30) ** 2 < 200] -= 40
    clean = np.clip(cv2.GaussianBlur(smooth, (0, 0), 1.0), 0, 255).astype(np.uint8)
    degraded = degrade_image(DomainB(), clean, "blob", 3, 0)
    out = cls().adapt(degraded)

    def mse(x):
        return float(np.mean((x.astype(float) - clean) ** 2))
    assert mse(out) < 0.7 * mse(degraded)


def test_bm3d_colour_is_cbm3d():
    import bm3d

    image = texture(32, 40, color=True, seed=7)
    expected = bm3d.bm3d_rgb(image[:, :, ::-1] / 255.0, 15 / 255.0)[:, :, ::-1] * 255.0
    assert np.abs(BM3D().adapt(image).astype(float) - expected).max() <= 1.0


@pytest.mark.parametrize("name, params, key", [
    ("median", {"ksize": 4}, "ksize"),
    ("median", {"ksize": 1}, "ksize"),
    ("gaussian", {"ksize": 2}, "ksize"),
    ("nlm", {"h": -1}, "h"),
    ("bilateral", {"d": True}, "d"),
    ("bm3d", {"stage": "soft"}, "stage"),
    ("wavelet", {"wavelet": "nope"}, "wavelet"),
    ("tv", {"weight": "0.1"}, "weight"),
    ("clahe", {"space": "rgb"}, "space"),
    ("vmean", {"target": 0}, "target"),
    ("histmatch", {"fit_images": 0}, "fit_images"),
    ("fda", {"beta": 0.9}, "beta"),
])
def test_bad_param_names_it(name, params, key):
    with pytest.raises(HarnessError, match=rf"'{name}'.*parameter '{key}'"):
        REGISTRY.create("adapter", name, params)


def test_bad_image_is_rejected():
    with pytest.raises(HarnessError, match="uint8"):
        VMean().adapt(np.zeros((8, 8), np.float32))


@pytest.mark.parametrize("color", [False, True])
def test_vmean_hits_the_domain_a_mean(color):
    image = (texture(50, 60, color=color) * 0.5).astype(np.uint8)
    out = VMean().adapt(image)
    value = out if out.ndim == 2 else out.max(axis=2)
    assert abs(float(value.mean()) - 108.0) < 0.5


def ramp(h: int, w: int, lo: int, hi: int) -> np.ndarray:
    """Every level in lo..hi-1 equally often."""
    return np.resize(np.arange(lo, hi, dtype=np.uint8), (h, w))


def cdf(image: np.ndarray) -> np.ndarray:
    return np.cumsum(np.bincount(image.ravel(), minlength=256)) / image.size


@pytest.mark.parametrize("reference, lo, hi", [("pooled", 100, 199), ("barycenter", 125, 174)])
def test_histmatch_maps_onto_the_reference_histogram(tmp_path, reference, lo, hi):
    """Two A images, uniform over 100..149 and 150..199: their pooled histogram is uniform over 100..199,
    the average of their quantile functions uniform over 125..174."""
    source = []
    for i, (a, b) in enumerate([(100, 150), (150, 200)]):
        write_image(tmp_path / f"a{i}.png", ramp(40, 50, a, b))
        source.append(tmp_path / f"a{i}.png")
    adapter = HistMatch(fit_images=8, reference=reference)
    adapter.fit(source, [], tmp_path / "fit", seed=0, progress=False)
    saved = json.loads((tmp_path / "fit" / HistMatch.FILE).read_text())
    assert saved["images"] == 2 and saved["reference"] == reference
    adapter.load(tmp_path / "fit")
    image = np.random.default_rng(0).integers(0, 50, (64, 64)).astype(np.uint8)
    out = adapter.adapt(image)
    assert np.abs(cdf(out) - cdf(np.arange(lo, hi + 1).repeat(40).astype(np.uint8))).max() < 0.03
    assert lo - 1 <= out.min() and out.max() <= hi + 1
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0), "matching must keep the order of grey levels"


def test_histmatch_keeps_hue_of_colour_images(tmp_path):
    write_image(tmp_path / "a.png", ramp(40, 50, 150, 250))
    adapter = HistMatch()
    adapter.fit([tmp_path / "a.png"], [], tmp_path / "fit", seed=0)
    adapter.load(tmp_path / "fit")
    image = np.dstack([ramp(30, 30, 20, 80), ramp(30, 30, 10, 70), ramp(30, 30, 40, 100)])
    out = adapter.adapt(image).astype(float)
    assert out.max(axis=2).mean() > 190
    ratio_in = image[:, :, 1] / image[:, :, 2]
    assert np.abs(out[:, :, 1] / out[:, :, 2] - ratio_in).max() < 0.03


def test_match_lut_identity_on_its_own_histogram():
    hist = np.bincount(ramp(16, 16, 0, 256).ravel(), minlength=256)
    assert np.array_equal(match_lut(hist, hist), np.arange(256))


@pytest.mark.parametrize("cls", [HistMatch, FDA])
def test_unfitted_source_adapters_fail_with_the_file(cls, tmp_path):
    with pytest.raises(HarnessError, match="not fitted"):
        cls().adapt(texture(16, 16))
    with pytest.raises(HarnessError, match=cls.FILE):
        cls().load(tmp_path)


def cosine(n: int, cycles: int, amp: float, axis: int = 1) -> np.ndarray:
    return amp * np.cos(2 * np.pi * cycles * np.mgrid[0:n, 0:n][axis] / n)


def test_fda_takes_low_amplitude_from_references_and_keeps_the_rest(tmp_path):
    """Two references with the same amplitude spectrum but opposite phase: their mean *image* is flat,
    their mean *amplitude* keeps the 1-cycle wave; the input's 16-cycle wave must survive untouched."""
    n = 64
    refs = [150 + cosine(n, 1, 30), 150 - cosine(n, 1, 30)]
    for i, ref in enumerate(refs):
        write_image(tmp_path / f"r{i}.png", np.rint(ref).astype(np.uint8))
    adapter = FDA(beta=0.05, references=2)  # b = 3: the window holds DC and the 1-cycle wave
    adapter.fit([tmp_path / "r0.png", tmp_path / "r1.png"], [], tmp_path / "fit", seed=0)
    adapter.load(tmp_path / "fit")
    image = np.rint(80 + cosine(n, 16, 20) + cosine(n, 2, 10, axis=0)).astype(np.uint8)
    out = adapter.adapt(image)

    amp_out, amp_in, amp_ref = amplitude(out), amplitude(image), amplitude(refs[0])
    win, c = window((n, n), 0.05), n // 2
    assert np.abs(amp_out[win] - amp_ref[win]).max() < 0.01 * amp_ref[c, c]
    assert abs(float(out.mean()) - 150) < 0.5
    assert abs(amp_out[c, c + 1] - n * n * 15) < 0.01 * n * n * 15  # the references' 1-cycle wave
    assert amp_out[c + 2, c] < 0.01 * amp_in[c + 2, c]  # the input's 2-cycle wave: replaced (refs have none)
    outside = np.ones((n, n), bool)
    outside[win] = False
    assert np.abs(amp_out - amp_in)[outside].max() < 0.01 * amp_in[c, c + 16]
    assert abs(amp_out[c, c + 16] - amp_in[c, c + 16]) < 0.01 * amp_in[c, c + 16]


def test_fda_picks_references_by_seed(tmp_path):
    source = []
    for i in range(12):
        write_image(tmp_path / f"s{i:02d}.png", texture(16, 16, seed=i))
        source.append(tmp_path / f"s{i:02d}.png")

    def picked(seed, folder):
        FDA(references=3).fit(source, [], tmp_path / folder, seed=seed)
        return json.loads((tmp_path / folder / FDA.FILE).read_text())["sources"]
    first = picked(0, "a")
    assert len(first) == 3 and first == picked(0, "b")
    assert any(picked(s, f"c{s}") != first for s in range(1, 4))


def test_fda_beta_zero_only_sets_the_mean(tmp_path):
    write_image(tmp_path / "r.png", np.full((20, 20), 120, np.uint8))
    adapter = FDA(beta=0.0, references=1)
    adapter.fit([tmp_path / "r.png"], [], tmp_path / "fit", seed=0)
    adapter.load(tmp_path / "fit")
    image = texture(30, 50)
    out = adapter.adapt(image)
    assert abs(float(out.mean()) - 120) < 0.5
    shifted = image.astype(float) - image.mean() + 120
    assert np.abs(out - shifted).max() <= 1.0


def test_clahe_raises_local_contrast():
    yy, xx = np.mgrid[0:64, 0:64]
    flat = (120 + 6 * np.sin(xx / 3.0) + 6 * np.cos(yy / 4.0)).astype(np.uint8)
    out = REGISTRY.create("adapter", "clahe").adapt(flat)
    assert out.std() > 2 * flat.std()
    color = np.dstack([flat, flat // 2, flat // 3])
    hsv = REGISTRY.create("adapter", "clahe", {"space": "hsv"}).adapt(color).astype(float)
    assert hsv.max(axis=2).std() > 2 * color.max(axis=2).std()
    assert np.abs(hsv[:, :, 1] / hsv[:, :, 0] - 0.5).max() < 0.05


def test_runtime_params_stay_out_of_the_cache_identity():
    from plugins.adapters.classical import BM3D

    assert BM3D(workers=1).identity() == BM3D(workers=4).identity()
    assert BM3D(sigma=10).identity() != BM3D().identity()
