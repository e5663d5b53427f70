"""CycleGAN adapter: it learns (the cycle loss falls), its fit folder reloads to the same outputs,
inference is size- and batch-independent, and an interrupted fit resumes where its checkpoint left off."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from harness.errors import HarnessError
from harness.imageio import write_image
from plugins.adapters.cyclegan import CONFIG_DIR, CycleGAN, schedule_length
from plugins.adapters.training import read_losses

PARAMS = {"profile": "test", "device": "cpu", "threads": 1}


def shapes(seed: int, noisy: bool, size: int = 32) -> np.ndarray:
    """A disc and a rectangle outline on a flat background; domain B adds strong grain."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size), 90, np.uint8)
    cv2.circle(image, (int(rng.integers(8, 24)), int(rng.integers(8, 24))), int(rng.integers(3, 8)), 200, -1)
    corner = tuple(int(v) for v in rng.integers(0, 16, 2))
    cv2.rectangle(image, corner, tuple(int(v) for v in rng.integers(16, 32, 2)), 40, 2)
    if noisy:
        image = np.clip(image + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)
    return image


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """12 clean A images and 12 noisy B images of *other* shapes (unpaired)."""
    root = tmp_path_factory.mktemp("cyclegan-images")
    a, b = [], []
    for i in range(12):
        write_image(root / "A" / f"{i}.png", shapes(i, noisy=False))
        write_image(root / "B" / f"{i}.png", shapes(100 + i, noisy=True))
        a.append(root / "A" / f"{i}.png")
        b.append(root / "B" / f"{i}.png")
    return a, b


@pytest.fixture(scope="module")
def fitted(images, tmp_path_factory) -> Path:
    fit_dir = tmp_path_factory.mktemp("cyclegan-fit")
    CycleGAN(**PARAMS).fit(*images, fit_dir, seed=0, progress=False)
    return fit_dir


def loaded(fit_dir: Path, **params) -> CycleGAN:
    adapter = CycleGAN(**{**PARAMS, **params})
    adapter.load(fit_dir)
    return adapter


def plain_values_only(obj) -> bool:
    """What torch's weights-only unpickler needs no allow-list for."""
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and plain_values_only(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(plain_values_only(v) for v in obj)
    return obj is None or isinstance(obj, (torch.Tensor, bool, int, float, str))


def test_fit_learns_and_leaves_a_complete_fit_folder(fitted):
    assert {p.name for p in fitted.iterdir()} == {"generator.pt", "model.json", "losses.csv"}
    rows = read_losses(fitted / "losses.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(5, 61, 5))
    cycle = [r["cycle"] for r in rows]
    assert np.mean(cycle[-3:]) < 0.85 * np.mean(cycle[:3])
    assert rows[0]["lr"] == pytest.approx(0.002) and rows[-1]["lr"] < 0.0005  # linear decay in the second half
    assert all(rows[i]["seconds"] < rows[i + 1]["seconds"] for i in range(len(rows) - 1))
    meta = json.loads((fitted / "model.json").read_text())
    assert meta["iterations"] == 60 and meta["profile"]["ngf"] == 8
    assert meta["final_losses"]["cycle"] == pytest.approx(cycle[-1], rel=1e-4)
    weights = torch.load(fitted / "generator.pt", weights_only=True)
    assert plain_values_only(weights) and "model.1.weight" in weights  # the B->A generator alone


def test_fresh_instance_reproduces_outputs(fitted):
    image = shapes(7, noisy=True)
    out = loaded(fitted).adapt(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(out, image)
    assert np.array_equal(out, loaded(fitted).adapt(image))


def test_batched_matches_one_at_a_time(fitted):
    rng = np.random.default_rng(3)
    images = [shapes(i, noisy=True) for i in range(5)] + [rng.integers(0, 255, (37, 41), dtype=np.uint8)]
    images.insert(2, rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    batched, single = loaded(fitted, batch=4), loaded(fitted, batch=1)
    float_b, float_s = batched.translate(images), single.translate(images)
    assert max(float(np.abs(x - y).max()) for x, y in zip(float_b, float_s)) <= 1e-5
    for image, x, y in zip(images, batched.adapt_batch(images), [single.adapt(im) for im in images]):
        assert x.shape == y.shape == image.shape
        assert int(np.abs(x.astype(int) - y).max()) <= 1


def test_any_size_and_channel_count(fitted):
    adapter = loaded(fitted)
    gray = np.random.default_rng(0).integers(0, 255, (37, 41), dtype=np.uint8)
    color = np.dstack([gray, gray[::-1], 255 - gray])
    for image in (gray, color, gray[:5, :3], gray[:, :, None]):
        out = adapter.adapt(image)
        assert out.dtype == np.uint8 and out.shape == image.shape
    # a 1-channel model adapts each colour channel as a gray image
    out = adapter.adapt(color)
    assert np.array_equal(out[:, :, 0], adapter.adapt(gray)) and np.array_equal(out[:, :, 2], adapter.adapt(255 - gray))


class Interrupted(Exception):
    pass


def test_interrupted_fit_resumes_from_its_checkpoint(images, fitted, tmp_path, monkeypatch):
    fit_dir = tmp_path / "fit"
    adapter = CycleGAN(**PARAMS)
    save = adapter._save_checkpoint

    def save_then_die(state, path):
        save(state, path)
        if state["iteration"] == 40:
            raise Interrupted

    monkeypatch.setattr(adapter, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        adapter.fit(*images, fit_dir, seed=0, progress=False)
    assert not (fit_dir / "generator.pt").exists()
    state = torch.load(fit_dir / "checkpoint.pt", weights_only=True)
    assert plain_values_only(state) and state["iteration"] == 40
    assert {"G_AB", "G_BA", "D_A", "D_B", "opt_G", "opt_D", "sched_G", "sched_D", "pool_A", "pool_B"} <= set(state)
    assert len(state["pool_A"]) == 10  # the test profile's pool is full after 40 iterations
    with (fit_dir / "losses.csv").open("a") as f:  # a row logged after the last checkpoint, then killed
        f.write("45,9,9,9,9,9,0.001,9\n")

    CycleGAN(**PARAMS).fit(*images, fit_dir, seed=0, progress=False)
    rows = read_losses(fit_dir / "losses.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(5, 61, 5))
    assert not (fit_dir / "checkpoint.pt").exists()
    # the resumed fit is the uninterrupted one: same data order, pools, optimiser and LR state
    resumed = torch.load(fit_dir / "generator.pt", weights_only=True)
    straight = torch.load(fitted / "generator.pt", weights_only=True)
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)
    for row, ref in zip(rows, read_losses(fitted / "losses.csv")):
        assert {k: v for k, v in row.items() if k != "seconds"} == {k: v for k, v in ref.items() if k != "seconds"}


def test_checkpoint_from_another_seed_is_refused(images, tmp_path, monkeypatch):
    adapter = CycleGAN(**PARAMS)
    save = adapter._save_checkpoint

    def save_then_die(state, path):
        save(state, path)
        raise Interrupted

    monkeypatch.setattr(adapter, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        adapter.fit(*images, tmp_path, seed=0, progress=False)
    with pytest.raises(HarnessError, match="checkpoint.pt"):
        CycleGAN(**PARAMS).fit(*images, tmp_path, seed=1, progress=False)


def write_profile(path: Path, **changes) -> Path:
    settings = yaml.safe_load((CONFIG_DIR / "cyclegan-test.yaml").read_text())
    settings.update(changes)
    path.write_text(yaml.safe_dump({k: v for k, v in settings.items() if v != "DROP"}))
    return path


def test_identity_follows_the_profile_file_not_runtime_params(tmp_path):
    path = write_profile(tmp_path / "mine.yaml")
    first = CycleGAN(profile=str(path)).identity()
    assert CycleGAN(profile=str(path), batch=2, threads=1, device="cpu").identity() == first
    write_profile(path, lr=0.001)
    assert CycleGAN(profile=str(path)).identity() != first


@pytest.mark.parametrize("changes, message", [
    ({"ngf_typo": 3}, "unknown key 'ngf_typo'"),
    ({"ndf": "DROP"}, "missing key 'ndf'"),
    ({"crop_size": 30}, "'crop_size' must be a multiple of 4"),
    ({"channels": 2}, "'channels' must be 1 or 3"),
    ({"schedule": {"iterations": 10}}, "'schedule' must be"),
    ({"lr": -1}, "'lr' must be a number"),
])
def test_bad_profile_names_file_and_key(tmp_path, changes, message):
    path = write_profile(tmp_path / "bad.yaml", **changes)
    with pytest.raises(HarnessError, match=message) as err:
        CycleGAN(profile=str(path))
    assert str(path) in str(err.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(HarnessError, match=r"profile 'nope'.*known: cpu, cpu-full8, cpu-residual, cpu-residual-full8, seed, test"):
        CycleGAN(profile="nope")


def test_shipped_profiles():
    seed = CycleGAN(profile="seed").settings
    assert (seed["channels"], seed["ngf"], seed["ndf"], seed["n_blocks"]) == (3, 64, 64, 9)
    assert (seed["load_size"], seed["crop_size"], seed["pool_size"]) == (286, 256, 50)
    assert seed["schedule"] == {"epochs": 20, "decay_epochs": 20}
    assert (seed["lambda_cycle"], seed["lambda_identity"], seed["lr"], seed["beta1"]) == (10.0, 0.5, 0.0002, 0.5)
    cpu = CycleGAN(profile="cpu").settings
    assert cpu["channels"] == 1 and "iterations" in cpu["schedule"]


def test_epoch_schedules_count_the_larger_domain():
    settings = {"schedule": {"epochs": 20, "decay_epochs": 20}, "batch_size": 1}
    assert schedule_length(settings, 900, 1800) == (72000, 36000)
    assert schedule_length({**settings, "batch_size": 4}, 10, 9) == (120, 60)
    assert schedule_length({"schedule": {"iterations": 7500, "decay_start": 3750}}, 1, 1) == (7500, 3750)
