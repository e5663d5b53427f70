"""The residual CycleGAN (profile key ``generator: residual``, shipped as ``cpu-residual``): at iteration 0 it is
the identity bit for bit, so it cannot make an image worse before training earns a change; it learns, is
deterministic for a seed, reloads to the same outputs and resumes exactly (the kill test is in test_resume.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from harness.errors import HarnessError
from plugins.adapters.cyclegan import CONFIG_DIR, CycleGAN, Trainer
from plugins.adapters.nets import ResidualGenerator, ResnetGenerator, generator
from plugins.adapters.training import read_losses
from test_cyclegan import Interrupted, images, shapes  # noqa: F401 - images is a fixture

CPU = torch.device("cpu")


def residual_profile(path, **changes):
    """The tiny ``test`` profile with residual generators (seconds on 32 px images)."""
    settings = {**yaml.safe_load((CONFIG_DIR / "cyclegan-test.yaml").read_text()), "generator": "residual", **changes}
    path.write_text(yaml.safe_dump(settings))
    return str(path)


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return residual_profile(tmp_path_factory.mktemp("residual") / "residual.yaml")


@pytest.fixture(scope="module")
def fitted(images, profile, tmp_path_factory):
    fit_dir = tmp_path_factory.mktemp("residual-fit")
    CycleGAN(profile=profile, device="cpu", threads=1).fit(*images, fit_dir, seed=0, progress=False)
    return fit_dir


def loaded(fit_dir, profile) -> CycleGAN:
    adapter = CycleGAN(profile=profile, device="cpu", threads=1)
    adapter.load(fit_dir)
    return adapter


def test_at_iteration_0_both_generators_are_the_identity_bit_for_bit(images, profile, tmp_path):
    adapter = CycleGAN(profile=profile, device="cpu", threads=1)
    trainer = Trainer(adapter, *images, tmp_path, seed=0, device=CPU)
    every_level = np.tile(np.arange(256, dtype=np.uint8), (6, 1))  # each grey level through the uint8 round trip
    rng = np.random.default_rng(0)
    odd = rng.integers(0, 256, (37, 41), dtype=np.uint8)  # padded to a multiple of 4 and cropped back
    colour = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    for name in ("G_BA", "G_AB"):
        adapter.generator, adapter.device = trainer.nets[name].eval(), CPU
        for image in (every_level, odd, colour, shapes(3, noisy=True)):
            assert np.array_equal(adapter.adapt(image), image), name
        x = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
        assert torch.equal(trainer.nets[name](x), x)


def test_zero_residual_survives_the_reference_weight_init():
    from plugins.adapters.nets import init_weights

    net = ResidualGenerator(1, 1, 4, 1)
    init_weights(net, generator=torch.Generator().manual_seed(0))
    assert net.residual[-1].weight.abs().sum() > 0  # what Trainer then undoes with zero_residual
    net.zero_residual()
    x = torch.rand(1, 1, 8, 8) * 2 - 1
    assert torch.equal(net(x), x)
    assert isinstance(generator({"channels": 1, "ngf": 4, "n_blocks": 1}), ResnetGenerator)
    assert isinstance(generator({"channels": 1, "ngf": 4, "n_blocks": 1, "generator": "residual"}), ResidualGenerator)


def test_it_learns_away_from_the_identity(fitted, profile):
    rows = read_losses(fitted / "losses.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(5, 61, 5))
    disc = [r["D_A"] + r["D_B"] for r in rows]
    cycle = [r["cycle"] for r in rows]
    assert np.mean(disc[-3:]) < 0.8 * np.mean(disc[:3])  # the discriminators learn to tell A from B
    assert np.mean(cycle[-3:]) < 0.5 * np.mean(cycle[:3])
    noisy = shapes(7, noisy=True)
    out = loaded(fitted, profile).adapt(noisy)
    assert out.dtype == np.uint8 and out.shape == noisy.shape and not np.array_equal(out, noisy)


def test_same_seed_same_generator_and_reload_gives_identical_outputs(images, fitted, profile, tmp_path):
    again = tmp_path / "again"
    CycleGAN(profile=profile, device="cpu", threads=1).fit(*images, again, seed=0, progress=False)
    a = torch.load(fitted / "generator.pt", weights_only=True)
    b = torch.load(again / "generator.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("residual.") for k in a)
    batch = [shapes(i, noisy=True) for i in range(4)]
    first = loaded(fitted, profile).adapt_batch(batch)
    assert all(np.array_equal(x, y) for x, y in zip(first, loaded(again, profile).adapt_batch(batch)))
    assert all(np.array_equal(x, y) for x, y in zip(first, loaded(fitted, profile).adapt_batch(batch)))


def test_interrupted_residual_fit_resumes_exactly(images, fitted, profile, tmp_path, monkeypatch):
    adapter = CycleGAN(profile=profile, device="cpu", threads=1)
    save = adapter._save_checkpoint

    def save_then_die(state, path):
        save(state, path)
        if state["iteration"] == 40:
            raise Interrupted

    monkeypatch.setattr(adapter, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        adapter.fit(*images, tmp_path, seed=0, progress=False)
    CycleGAN(profile=profile, device="cpu", threads=1).fit(*images, tmp_path, seed=0, progress=False)
    a = torch.load(tmp_path / "generator.pt", weights_only=True)
    b = torch.load(fitted / "generator.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_shipped_cpu_residual_profile():
    s = CycleGAN(profile="cpu-residual").settings
    assert s["generator"] == "residual" and s["channels"] == 1 and s["crop_size"] == 128
    assert (s["lambda_cycle"], s["lambda_identity"], s["lr"], s["beta1"]) == (10.0, 0.5, 0.0002, 0.5)
    assert s["schedule"] == {"iterations": 2800, "decay_start": 1400}
    assert CycleGAN(profile="cpu").settings["generator"] == "resnet"  # profiles without the key keep ResNet G


def test_a_bad_generator_names_the_file(tmp_path):
    path = residual_profile(tmp_path / "bad.yaml", generator="unet")
    with pytest.raises(HarnessError, match="'generator' must be one of resnet, residual") as err:
        CycleGAN(profile=path)
    assert path in str(err.value)
