"""The degradation twin: ``harness degrade estimate`` recovers known parameters on synthetic images, the ``twin``
plugin is deterministic and reproduces its parameters' statistics, and the CLI's YAML is a matrix entry.

Stated tolerances (10 synthetic 96-px textures, 12 synthetic reference images): sigma within 2 grey levels,
blur length within 2 px, offset within 2 grey levels, gain within 0.15, JPEG quality exact from JPEG files and
within 10..40 for a true 20 from blockiness (PNG files)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from harness import config
from harness.cli import main
from harness.degrade import degrade_image
from harness.errors import HarnessError
from harness.estimate import MIN_IMAGES, estimate, features, jpeg_file_quality, synthetic_reference
from harness.registry import default_registry
from plugins.degradations.twin import Twin

SHAPE = (96, 96)


def _targets(folder: Path, params: dict, n: int = 10, jpeg: bool = False, seed: int = 7) -> Path:
    """Synthetic textures (not the estimator's own reference seed) degraded by a known twin."""
    folder.mkdir(parents=True)
    plugin = Twin(**{k: v for k, v in params.items() if not (jpeg and k == "quality")})
    for i, im in enumerate(synthetic_reference(n, SHAPE, seed=seed)):
        out = degrade_image(plugin, im, f"t{i}", 1, 0)
        if jpeg:
            cv2.imwrite(str(folder / f"t{i}.jpg"), out, [cv2.IMWRITE_JPEG_QUALITY, params["quality"]])
        else:
            cv2.imwrite(str(folder / f"t{i}.png"), out)
    return folder


def test_jpeg_quality_is_read_from_the_files_quantisation_table(tmp_path):
    im = synthetic_reference(1, SHAPE)[0]
    for q in (10, 25, 50, 75, 95):
        cv2.imwrite(str(tmp_path / f"{q}.jpg"), im, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert jpeg_file_quality(tmp_path / f"{q}.jpg") == q
    cv2.imwrite(str(tmp_path / "a.png"), im)
    assert jpeg_file_quality(tmp_path / "a.png") is None


@pytest.mark.parametrize("params,tol", [
    ({"sigma": 10.0}, {"sigma": 2.0, "length": 2}),
    ({"length": 7}, {"sigma": 2.0, "length": 2}),
    ({"offset": 20.0, "gain": 1.5}, {"offset": 2.0, "gain": 0.15}),
])
def test_estimator_recovers_known_parameters(tmp_path, params, tol):
    est = estimate(_targets(tmp_path / "t", params), reference_images=12)
    truth = {**Twin.params, **params}
    for key, t in tol.items():
        assert abs(est.params[key] - truth[key]) <= t, (key, est.params)


def test_estimator_reads_jpeg_quality_from_files_and_blockiness(tmp_path):
    est = estimate(_targets(tmp_path / "j", {"quality": 20}, jpeg=True), reference_images=12)
    assert est.params["quality"] == 20 and est.jpeg_files == 10
    est = estimate(_targets(tmp_path / "p", {"quality": 20}), reference_images=12)
    assert est.jpeg_files == 0 and est.params["quality"] is not None and 10 <= est.params["quality"] <= 40


def test_twin_is_deterministic_for_a_seed_and_reproduces_its_statistics():
    plugin = Twin(sigma=8.0, length=5, quality=40, gain=1.3, offset=-10.0)
    im = synthetic_reference(1, (128, 128))[0]
    a, b = (degrade_image(plugin, im, "x", 1, 3) for _ in range(2))
    assert np.array_equal(a, b) and not np.array_equal(a, degrade_image(plugin, im, "x", 1, 4))
    assert a.shape == im.shape and a.dtype == np.uint8
    clean, out = features(im), features(a)
    assert abs(out["v_mean"] - (clean["v_mean"] - 10)) < 1.5
    assert abs(out["coarse"] / clean["coarse"] - 1.3) < 0.15
    noisy = features(degrade_image(Twin(sigma=8.0), im, "x", 1, 3))
    assert abs(noisy["n1"] - 8.0) < 1.0
    colour = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
    assert degrade_image(plugin, colour, "x", 1, 3).shape == colour.shape


def test_twin_rejects_bad_params():
    with pytest.raises(HarnessError, match="'quality' value 0 is not int in 1..100"):
        Twin(quality=0)
    with pytest.raises(HarnessError, match="unknown parameter 'sigmas'"):
        Twin(sigmas=[1, 2, 3, 4, 5])


def test_cli_writes_an_entry_a_matrix_accepts(tmp_path, capsys):
    folder = _targets(tmp_path / "t", {"sigma": 6.0, "quality": 30}, jpeg=True)
    out = tmp_path / "twin.yaml"
    assert main(["degrade", "estimate", str(folder), "--out", str(out), "--reference-images", "8"]) == 0
    printed = capsys.readouterr().out
    assert "noise sigma" in printed and "JPEG quality" in printed and "IQR" in printed
    entry = yaml.safe_load(out.read_text())
    assert entry["name"] == "twin" and entry["severities"] == [1] and entry["params"]["quality"] == 30
    raw = {"dataset": str(tmp_path), "segmenters": [{"name": "tv-mask-rcnn", "train_on": {"augment": [entry]}}],
           "degradations": ["none", entry]}
    cfg = config.parse(raw, tmp_path / "m.yaml")
    config.check_plugins(cfg, default_registry())  # the twin plugin and its params
    assert cfg.degradations[1].name == "twin" and cfg.degradations[1].params == entry["params"]
    assert cfg.segmenters[0].train_on["augment"][0]["severities"] == [1]


def test_too_few_images_and_a_grey_colour_mix_are_one_line_errors(tmp_path, capsys):
    few = tmp_path / "few"
    few.mkdir()
    for i, im in enumerate(synthetic_reference(MIN_IMAGES - 1, SHAPE)):
        cv2.imwrite(str(few / f"{i}.png"), im)
    assert main(["degrade", "estimate", str(few), "--out", str(tmp_path / "a.yaml")]) == 2
    assert capsys.readouterr().err == f"harness: error: {few}: 7 image(s); estimating a twin needs at least 8\n"
    cv2.imwrite(str(few / "c.png"), cv2.cvtColor(synthetic_reference(1, SHAPE, seed=3)[0], cv2.COLOR_GRAY2BGR)
                + np.array([0, 0, 40], np.uint8))
    assert main(["degrade", "estimate", str(few), "--out", str(tmp_path / "a.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"harness: error: {few}: mixes grayscale (0.png, 7 in all) and colour (c.png, 1 in all)")
    assert err.count("\n") == 1 and not (tmp_path / "a.yaml").exists()
