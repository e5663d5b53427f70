"""DnCNN adapter: trained on clean/noisy pairs it restores held-out images better than doing nothing,
and its fit folder, inference and checkpoints behave like CycleGAN's."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as psnr

from harness.errors import HarnessError
from harness.imageio import write_image
from plugins.adapters.dncnn import DnCNN
from plugins.adapters.training import read_losses

PARAMS = {**DnCNN.quick_params, "iterations": 60, "device": "cpu", "threads": 1}


def pair(seed: int, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy): a disc and a dark line on a flat background, Gaussian noise sigma 20."""
    rng = np.random.default_rng(seed)
    clean = np.full((size, size), 100, np.uint8)
    cv2.circle(clean, (int(rng.integers(10, 30)), int(rng.integers(10, 30))), int(rng.integers(4, 10)), 190, -1)
    cv2.line(clean, (int(rng.integers(0, size)), 0), (int(rng.integers(0, size)), size - 1), 50, 2)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    return clean, noisy


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("dncnn-images")
    source, target = [], []
    for i in range(16):
        clean, noisy = pair(i)
        write_image(root / "A" / f"{i}.png", clean)
        write_image(root / "B" / f"{i}.png", noisy)
        source.append(root / "A" / f"{i}.png")
        target.append(root / "B" / f"{i}.png")
    return source, target


@pytest.fixture(scope="module")
def fitted(pairs, tmp_path_factory) -> Path:
    fit_dir = tmp_path_factory.mktemp("dncnn-fit")
    DnCNN(**PARAMS).fit(*pairs, fit_dir, seed=0, progress=False)
    return fit_dir


def loaded(fit_dir: Path, **params) -> DnCNN:
    adapter = DnCNN(**{**PARAMS, **params})
    adapter.load(fit_dir)
    return adapter


def test_beats_identity_psnr_on_held_out_pairs(fitted):
    held_out = [pair(1000 + i) for i in range(6)]
    restored = loaded(fitted).adapt_batch([noisy for _, noisy in held_out])
    before = np.mean([psnr(clean, noisy) for clean, noisy in held_out])
    after = np.mean([psnr(clean, out) for (clean, _), out in zip(held_out, restored)])
    assert after > before + 1.0


def test_fit_folder_and_loss_log(fitted):
    assert {p.name for p in fitted.iterdir()} == {"weights.pt", "model.json", "losses.csv"}
    rows = read_losses(fitted / "losses.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(5, 61, 5))
    assert np.mean([r["loss"] for r in rows[-3:]]) < np.mean([r["loss"] for r in rows[:3]])
    meta = json.loads((fitted / "model.json").read_text())
    assert meta["architecture"] == {"depth": 4, "width": 8, "norm": "batch"} and meta["iterations"] == 60
    assert torch.load(fitted / "weights.pt", weights_only=True)["body.0.weight"].shape == (8, 1, 3, 3)


def test_any_size_batched_and_deterministic(fitted):
    rng = np.random.default_rng(1)
    images = [pair(i)[1] for i in range(3)] + [rng.integers(0, 255, (37, 41), dtype=np.uint8),
                                               rng.integers(0, 255, (23, 30, 3), dtype=np.uint8)]
    batched, single = loaded(fitted, infer_batch=4), loaded(fitted, infer_batch=1)
    float_b, float_s = batched.restore(images), single.restore(images)
    assert max(float(np.abs(x - y).max()) for x, y in zip(float_b, float_s)) <= 1e-5
    for image, x, y in zip(images, batched.adapt_batch(images), [single.adapt(im) for im in images]):
        assert x.dtype == np.uint8 and x.shape == y.shape == image.shape
        assert int(np.abs(x.astype(int) - y).max()) <= 1
    assert np.array_equal(batched.adapt(images[3]), loaded(fitted).adapt(images[3]))


def test_resumes_from_checkpoint(pairs, fitted, tmp_path, monkeypatch):
    adapter = DnCNN(**PARAMS)
    save = adapter._save_checkpoint

    def save_then_die(state, path):
        save(state, path)
        if state["iteration"] == 30:
            raise KeyboardInterrupt

    monkeypatch.setattr(adapter, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        adapter.fit(*pairs, tmp_path, seed=0, progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 30
    DnCNN(**PARAMS).fit(*pairs, tmp_path, seed=0, progress=False)
    resumed = torch.load(tmp_path / "weights.pt", weights_only=True)
    straight = torch.load(fitted / "weights.pt", weights_only=True)
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_identity_ignores_runtime_params():
    base = DnCNN(**PARAMS).identity()
    assert DnCNN(**{**PARAMS, "infer_batch": 2, "threads": 2, "checkpoint_every": 7}).identity() == base
    assert DnCNN(**{**PARAMS, "width": 16}).identity() != base


@pytest.mark.parametrize("params, message", [
    ({"norm": "layer"}, "'norm' must be one of batch, group"),
    ({"depth": 1}, "'depth' must be an integer >= 2"),
    ({"device": "tpu"}, "device"),
])
def test_bad_params_are_named(params, message):
    with pytest.raises(HarnessError, match=message):
        DnCNN(**params)


def test_mismatched_pair_sizes_name_the_files(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((20, 20), np.uint8))
    write_image(tmp_path / "b.png", np.zeros((20, 24), np.uint8))
    with pytest.raises(HarnessError, match="b.png: 24x20 does not match"):
        DnCNN(**PARAMS).fit([tmp_path / "a.png"], [tmp_path / "b.png"], tmp_path / "fit", seed=0, progress=False)
