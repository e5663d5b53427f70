"""Every resumable training gives the same bits whether it ran straight through or was SIGKILLed and resumed:
both segmenters' ``train`` and the CycleGAN (ResNet and residual generators) and DnCNN fits. Each is killed twice, at the start of an iteration
and then halfway through writing its next checkpoint, resumed to the end, and compared with an uninterrupted
run tensor by tensor (``torch.equal``: weights and optimiser state), threads pinned to one."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT, subprocess_env  # noqa: E402
from harness import checkpoints  # noqa: E402
from harness.imageio import write_image  # noqa: E402
from plugins.segmenters.mmengine_resume import latest_checkpoint  # noqa: E402

DRIVER = ROOT / "tests" / "kill_driver.py"

#: trainer -> (params, iteration to die at, checkpoint interval): the kill lands after the first checkpoint,
#: the resumed run then dies inside its next checkpoint write, and the last run resumes from the first again
PLANS = {
    "mmdet": ({"max_iters": 6, "threads": 1, "checkpoint_interval": 2}, 3, 2),
    # the augmentation runs in two data-loader workers, each with its own seeded streams
    "mmdet-workers": ({"max_iters": 6, "threads": 1, "checkpoint_interval": 2, "config": "WORKERS"}, 3, 2),
    # a fine-tune: starts from another model's weights (``init``), which a resume must not load again
    "mmdet-finetune": ({"max_iters": 6, "threads": 1, "checkpoint_interval": 2}, 3, 2),
    "tv": ({"max_iters": 6, "threads": 1, "checkpoint_interval": 2}, 3, 2),
    "cyclegan": ({"profile": "test", "device": "cpu", "threads": 1}, 30, 20),
    # residual generators (``generator: residual``, as in the cpu-residual profile) on the test profile's sizes
    "cyclegan-residual": ({"profile": "RESIDUAL", "device": "cpu", "threads": 1}, 30, 20),
    "dncnn": ({"depth": 4, "width": 8, "patch": 16, "iterations": 30, "batch": 8, "checkpoint_every": 10,
               "log_every": 5, "device": "cpu", "threads": 1}, 15, 10),
}


def leaves(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in leaves(val, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in leaves(val, f"{prefix}/{i}").items()}
    return {prefix: obj}


def assert_identical(a: dict, b: dict) -> None:
    la, lb = leaves(a), leaves(b)
    assert la.keys() == lb.keys()
    tensors = 0
    for key in la:
        if isinstance(la[key], torch.Tensor):
            assert torch.equal(la[key], lb[key]), key
            tensors += 1
        else:
            assert la[key] == lb[key], key
    assert tensors > 0


def final_state(trainer: str, out: Path) -> dict:
    """Every model and optimiser tensor the finished training leaves (plus counters and schedules)."""
    if trainer == "mmdet":
        ckpt = checkpoints.load(latest_checkpoint(out / "work"), mmengine=True)
        return {k: ckpt[k] for k in ("state_dict", "optimizer", "param_schedulers")} | {"iter": ckpt["meta"]["iter"]}
    if trainer == "tv":
        return torch.load(out / "work" / "last.pth", weights_only=True)
    return torch.load(out / "final_state.pt", weights_only=True)


def drive(tmp_path: Path, spec: dict, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return subprocess.run([sys.executable, str(DRIVER), str(path)], env=subprocess_env(), capture_output=True,
                          text=True, timeout=600, start_new_session=True)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[list[str], list[str]]:
    """Clean and noisy 32-px images (paired for DnCNN; CycleGAN reads them as unpaired A and B)."""
    root = tmp_path_factory.mktemp("resume-images")
    rng = np.random.default_rng(0)
    clean, noisy = [], []
    for i in range(8):
        image = np.full((32, 32), 90, np.uint8)
        image[int(rng.integers(0, 16)):, int(rng.integers(0, 16)):int(rng.integers(17, 32))] = 200
        write_image(root / "A" / f"{i}.png", image)
        write_image(root / "B" / f"{i}.png", np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8))
        clean.append(str(root / "A" / f"{i}.png"))
        noisy.append(str(root / "B" / f"{i}.png"))
    return clean, noisy


@pytest.mark.parametrize("case", list(PLANS))
def test_killed_and_resumed_training_equals_an_uninterrupted_one(case, dataset, pairs, tmp_path):
    params, kill_iter, interval = PLANS[case]
    trainer = case
    if trainer.startswith("mmdet"):
        pytest.importorskip("mmdet")
        from plugins.segmenters.mmdet_mask_rcnn import CONFIG_DIR, PROFILE_CONFIGS

        if params.get("config") == "WORKERS":
            config = tmp_path / "workers.py"
            config.write_text(f"_base_ = {str(CONFIG_DIR / PROFILE_CONFIGS['tiny'])!r}\n"
                              "train_dataloader = dict(num_workers=2, persistent_workers=True)\n")
            params = {**params, "config": str(config)}
        trainer = "mmdet"
    if case == "cyclegan-residual":
        import yaml

        from plugins.adapters.cyclegan import CONFIG_DIR

        profile = tmp_path / "residual.yaml"
        profile.write_text(yaml.safe_dump({**yaml.safe_load((CONFIG_DIR / "cyclegan-test.yaml").read_text()),
                                           "generator": "residual"}))
        params, trainer = {**params, "profile": str(profile)}, "cyclegan"
    base = {"trainer": trainer, "params": params, "data": str(dataset), "source": pairs[0], "target": pairs[1]}
    if case == "mmdet-finetune":
        init = drive(tmp_path, {**base, "params": {"max_iters": 2, "threads": 1}, "out": str(tmp_path / "init")},
                     "init")
        assert init.returncode == 0, init.stderr[-3000:]
        base["init"] = str(tmp_path / "init" / "model.pth")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    done = drive(tmp_path, {**base, "out": str(straight)}, "straight")
    assert done.returncode == 0, done.stderr[-3000:]

    killed = drive(tmp_path, {**base, "out": str(resumed), "kill_at_iter": kill_iter}, "kill-iter")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    killed = drive(tmp_path, {**base, "out": str(resumed), "kill_in_save": 1}, "kill-save")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list(resumed.rglob(".tmp-*")), "the second kill landed inside a checkpoint write"
    done = drive(tmp_path, {**base, "out": str(resumed)}, "resume")
    assert done.returncode == 0, done.stderr[-3000:]

    assert_identical(final_state(trainer, resumed), final_state(trainer, straight))
    if trainer == "tv":
        assert json.loads((resumed / "train_stats.json").read_text())["resumed_from"] == interval
    if trainer in ("mmdet", "tv"):
        a = torch.load(resumed / "model.pth", weights_only=True)["state_dict"]
        b = torch.load(straight / "model.pth", weights_only=True)["state_dict"]
        assert_identical(a, b)
    else:
        weights = "generator.pt" if trainer == "cyclegan" else "weights.pt"
        assert_identical(torch.load(resumed / weights, weights_only=True),
                         torch.load(straight / weights, weights_only=True))
        assert not (resumed / "checkpoint.pt").exists()
    assert not list(resumed.rglob(".tmp-*")), "the resumed run cleared the interrupted write"
