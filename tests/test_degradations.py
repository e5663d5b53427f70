"""Degradation plugins and the host-side degrade helpers: determinism, contract, severity, folders."""
from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import plugins.degradations as builtin
from harness.degrade import degrade_folder, degrade_image, image_rng
from harness.errors import HarnessError
from harness.imageio import read_image
from harness.registry import Registry
from plugins.degradations import DomainB, GaussianNoise, Jpeg, MotionBlur
from plugins.degradations.blur import motion_kernel

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = [GaussianNoise, MotionBlur, Jpeg, DomainB]
ids = [c.name for c in PLUGINS]


def texture(h: int = 48, w: int = 48, color: bool = False, seed: int = 0) -> np.ndarray:
    """Smooth gradient + grain + a dark blob: something every degradation visibly changes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 90 + 60 * xx / w + rng.normal(0, 12, (h, w))
    img[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 6) ** 2] = 30
    img = np.clip(img, 0, 255).astype(np.uint8)
    if color:
        img = np.dstack([img, np.roll(img, 3, axis=1), 255 - img])
    return img


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


@pytest.mark.parametrize("cls", PLUGINS, ids=ids)
def test_same_inputs_same_bytes_and_global_rng_untouched(cls):
    plugin, img = cls(), texture()
    np.random.seed(1)
    random.seed(1)
    first = degrade_image(plugin, img, "a", 3, 7)
    np.random.seed(999)
    random.seed(999)
    np.random.random(10)
    second = degrade_image(plugin, img, "a", 3, 7)
    assert digest(first) == digest(second)
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    degrade_image(plugin, img, "a", 3, 7)
    assert np.array_equal(np.random.get_state()[1], before), "plugin consumed global np.random state"


@pytest.mark.parametrize("cls", PLUGINS, ids=ids)
def test_processing_order_does_not_matter(cls):
    plugin = cls()
    images = {f"img{i}": texture(seed=i) for i in range(4)}
    forward = {k: digest(degrade_image(plugin, v, k, 2, 0)) for k, v in images.items()}
    backward = {k: digest(degrade_image(plugin, images[k], k, 2, 0)) for k in reversed(list(images))}
    assert forward == backward


def test_separate_processes_give_same_bytes():
    code = (
        "import hashlib, numpy as np\n"
        "from harness.degrade import degrade_image\n"
        "from plugins.degradations import GaussianNoise, MotionBlur, Jpeg, DomainB\n"
        "from tests.test_degradations import texture\n"
        "for c in (GaussianNoise, MotionBlur, Jpeg, DomainB):\n"
        "    print(hashlib.sha256(degrade_image(c(), texture(), 'k', 4, 3).tobytes()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    here = [digest(degrade_image(c(), texture(), "k", 4, 3)) for c in PLUGINS]
    assert runs[0] == runs[1] == here


def test_rng_depends_on_key_plugin_params_severity_seed():
    base = image_rng("a", "gaussian_noise", 3, 0, {"sigmas": [1, 2, 3, 4, 5]}).integers(1 << 62)
    assert base == image_rng("a", "gaussian_noise", 3, 0, {"sigmas": [1, 2, 3, 4, 5]}).integers(1 << 62)
    for args in [("b", "gaussian_noise", 3, 0), ("a", "jpeg", 3, 0), ("a", "gaussian_noise", 2, 0),
                 ("a", "gaussian_noise", 3, 1)]:
        assert image_rng(*args, {"sigmas": [1, 2, 3, 4, 5]}).integers(1 << 62) != base
    assert image_rng("a", "gaussian_noise", 3, 0, {"sigmas": [9, 2, 3, 4, 5]}).integers(1 << 62) != base
    img = texture()
    assert not np.array_equal(degrade_image(GaussianNoise(), img, "a", 3, 0), degrade_image(GaussianNoise(), img, "b", 3, 0))


@pytest.mark.parametrize("cls", PLUGINS, ids=ids)
@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (5, 7)], ids=["gray", "color", "tiny"])
def test_shape_and_dtype_preserved(cls, shape):
    img = texture(*shape[:2], color=len(shape) == 3)
    for severity in cls.severities:
        out = degrade_image(cls(), img, "x", severity, 0)
        assert out.shape == img.shape and out.dtype == np.uint8


def _noise_std(s: int) -> float:
    img = np.full((64, 64), 128, np.uint8)
    return float((degrade_image(GaussianNoise(), img, "x", s, 0).astype(float) - 128).std())


def test_noise_std_matches_table_and_grows():
    stds = [_noise_std(s) for s in GaussianNoise.severities]
    assert stds == sorted(stds) and len(set(stds)) == 5
    for s, std in zip(GaussianNoise.severities, stds):
        assert std == pytest.approx(GaussianNoise.levels[s]["sigma"], rel=0.1)


def test_blur_strength_grows():
    img = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    stds = [degrade_image(MotionBlur(), img, "x", s, 0).std() for s in MotionBlur.severities]
    assert all(a > b for a, b in zip(stds, stds[1:])), stds
    flat = np.full((20, 30), 77, np.uint8)
    assert np.array_equal(degrade_image(MotionBlur(), flat, "x", 5, 0), flat)


def test_motion_kernel_is_a_normalised_line():
    k = motion_kernel(7, 0.0)
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0)
    assert np.count_nonzero(k[3]) == 7 and np.count_nonzero(np.delete(k, 3, axis=0)) == 0
    assert np.allclose(motion_kernel(7, 90.0), k.T, atol=1e-6)
    assert motion_kernel(4, 30.0).shape == (5, 5)
    assert np.array_equal(motion_kernel(1, 10.0), np.ones((1, 1), np.float32))


@pytest.mark.parametrize("cls", [Jpeg, DomainB], ids=["jpeg", "domain_b"])
def test_error_grows_with_severity(cls):
    img = texture(64, 64)
    errs = [np.abs(degrade_image(cls(), img, "x", s, 0).astype(float) - img).mean() for s in cls.severities]
    assert all(a < b for a, b in zip(errs, errs[1:])), errs


def test_jpeg_uses_no_randomness_and_domain_b_is_the_chain():
    img = texture()
    assert np.array_equal(Jpeg().apply(img, 2, np.random.default_rng(1)), Jpeg().apply(img, 2, np.random.default_rng(2)))
    from plugins.degradations.blur import blur
    from plugins.degradations.jpeg import jpeg_roundtrip
    from plugins.degradations.noise import add_noise
    lv = DomainB.levels[3]
    rng = np.random.default_rng(4)
    expected = jpeg_roundtrip(blur(add_noise(img, lv["sigma"], rng), lv["length"], rng), lv["quality"])
    assert np.array_equal(DomainB().apply(img, 3, np.random.default_rng(4)), expected)


@pytest.mark.parametrize("severity", [0, 6, 7, True, -1])
def test_unknown_severity_raises(severity):
    with pytest.raises(HarnessError, match=r"degradation 'gaussian_noise': severity .* not in 1\.\.5"):
        degrade_image(GaussianNoise(), texture(), "x", severity, 0)


def test_param_overrides_are_validated_and_used():
    assert GaussianNoise(sigmas=[0, 0, 0, 0, 50]).levels[5] == {"sigma": 50}
    img = texture()
    assert np.array_equal(degrade_image(GaussianNoise(sigmas=[0, 0, 0, 0, 0]), img, "x", 3, 0), img)
    for cls, params in [(GaussianNoise, {"sigmas": [1, 2]}), (Jpeg, {"qualities": [0, 10, 20, 30, 40]}),
                        (MotionBlur, {"lengths": [1.5, 3, 5, 7, 9]}), (DomainB, {"sigmas": "12345"}),
                        (Jpeg, {"quality": 5})]:
        with pytest.raises(HarnessError, match=f"'{cls.name}'"):
            cls(**params)


def test_bad_plugin_output_names_the_plugin():
    class Shrinks(GaussianNoise):
        name = "shrinks"

        def apply(self, image, severity, rng):
            return image[:-1]

    class InPlace(GaussianNoise):
        name = "inplace"

        def apply(self, image, severity, rng):
            image += 1
            return image

    with pytest.raises(HarnessError, match="degradation 'shrinks' returned 47x48 uint8"):
        degrade_image(Shrinks(), texture(), "x", 1, 0)
    img = texture()
    with pytest.raises(ValueError):
        degrade_image(InPlace(), img, "x", 1, 0)
    assert np.array_equal(img, texture())


def _parse_table(doc: str) -> dict[int, list[float]]:
    rows = re.findall(r"^\|\s*(\d+)\s*\|(.+)\|\s*$", doc, flags=re.M)
    return {int(s): [float(v) for v in rest.split("|")] for s, rest in rows}


@pytest.mark.parametrize("cls", PLUGINS, ids=ids)
def test_docstring_table_matches_levels(cls):
    table = _parse_table(sys.modules[cls.__module__].__doc__)
    assert table == {s: [float(v) for v in lv.values()] for s, lv in cls.levels.items()}
    assert set(cls.levels) == set(cls.severities)
    assert cls().levels == cls.levels


def test_registration_hook_registers_the_four_the_twin_and_the_corruptions():
    from plugins.degradations.corruptions import BENCHMARK, CORRUPTIONS, HELD_OUT
    from plugins.degradations.twin import Twin

    got = []
    builtin.harness_register_degradations(register=got.append)
    assert got == PLUGINS + [Twin] + list(CORRUPTIONS)
    reg = Registry(strict=True)
    reg.add(builtin, origin="builtin")
    assert reg.names("degradation") == sorted(ids + ["twin"] + list(BENCHMARK) + list(HELD_OUT))


def _write_inputs(folder: Path) -> list[str]:
    folder.mkdir()
    cv2.imwrite(str(folder / "b.jpg"), texture(seed=1))
    cv2.imwrite(str(folder / "a.png"), texture(seed=2, color=True))
    cv2.imwrite(str(folder / "c.bmp"), texture(20, 31, seed=3))
    (folder / "notes.txt").write_text("not an image")
    return ["a", "b", "c"]


def test_degrade_folder_writes_one_png_per_input(tmp_path, capsys):
    stems = _write_inputs(tmp_path / "in")
    n = degrade_folder(DomainB(), 3, 0, tmp_path / "in", tmp_path / "out", progress=False)
    assert n == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{s}.png" for s in stems]
    assert capsys.readouterr().err == ""
    for s in stems:
        src = read_image(next((tmp_path / "in").glob(f"{s}.*")))
        out = read_image(tmp_path / "out" / f"{s}.png")
        assert np.array_equal(out, degrade_image(DomainB(), src, s, 3, 0))
    again = degrade_folder(DomainB(), 3, 0, tmp_path / "in", tmp_path / "par", progress=False, workers=2)
    assert again == 3
    for s in stems:
        assert (tmp_path / "par" / f"{s}.png").read_bytes() == (tmp_path / "out" / f"{s}.png").read_bytes()


def test_degrade_folder_names_corrupt_input(tmp_path):
    _write_inputs(tmp_path / "in")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(HarnessError, match=r"broken\.jpg"):
        degrade_folder(GaussianNoise(), 1, 0, tmp_path / "in", tmp_path / "out", progress=False)


def test_degrade_folder_rejects_bad_folders_and_severity(tmp_path):
    with pytest.raises(HarnessError, match="image folder not found"):
        degrade_folder(Jpeg(), 1, 0, tmp_path / "missing", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="no images"):
        degrade_folder(Jpeg(), 1, 0, tmp_path / "empty", tmp_path / "out", progress=False)
    _write_inputs(tmp_path / "in")
    with pytest.raises(HarnessError, match="severity 9 not in 1..5"):
        degrade_folder(Jpeg(), 9, 0, tmp_path / "in", tmp_path / "out", progress=False)
    with pytest.raises(HarnessError, match="must differ"):
        degrade_folder(Jpeg(), 1, 0, tmp_path / "in", tmp_path / "in", progress=False)
    cv2.imwrite(str(tmp_path / "in" / "a.jpg"), texture())
    with pytest.raises(HarnessError, match="same stem"):
        degrade_folder(Jpeg(), 1, 0, tmp_path / "in", tmp_path / "out", progress=False)
