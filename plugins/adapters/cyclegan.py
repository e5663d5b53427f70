"""CycleGAN (Zhu et al. 2017) as an unpaired B -> A adapter.

The model is a profile file, ``configs/adapters/cyclegan-<profile>.yaml`` (or a path to one's own
YAML), whose content digest is part of the adapter's identity: editing it changes every cache key the
adapter feeds. Training follows the reference implementation (ResNet generators, 70x70 PatchGAN,
LSGAN, cycle and identity losses, image pools, Adam with a constant-then-linear learning rate, resize
to ``load_size``, random ``crop_size`` crop, horizontal flip) and is resumable: ``checkpoint.pt`` in the
fit folder holds everything the loop needs, as tensors and plain values only.

Fit folder: ``losses.csv`` (means over each ``log_every`` interval; ``seconds`` = training time so
far), then at the end ``generator.pt`` (the B -> A generator's state dict) and ``model.json`` (profile,
iterations, final losses); ``checkpoint.pt`` is removed once those are written.

Channels: a 1-channel model adapts each channel of a colour image as its own gray image; a 3-channel
model gets gray images replicated and returns the mean of its output channels. Any size: images are
reflect-padded to a multiple of 4 (the generator's two stride-2 stages) and cropped back.

Generators: the reference's ResNet generator, or with ``generator: residual`` in the profile (``cpu-residual``)
G(x) = clamp(x + r(x), -1, 1) with r's last convolution zeroed after the weight init, so that both generators
start as the exact identity and every change has to be earned against the discriminators.

torch is imported where it is used, so that loading the plugin registry does not load it. Nothing is tuned
on data: the profiles are the reference implementation's settings, the ``cpu`` one shrunk to a time budget.
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import yaml

from harness.errors import HarnessError
from harness.hashing import file_digest, seed_from
from harness.imageio import read_image
from harness.interfaces import Adapter
from plugins.adapters import training as T

if TYPE_CHECKING:
    import torch
    from torch import nn

CONFIG_DIR = Path(os.environ.get("HARNESS_CONFIGS", Path(__file__).resolve().parents[2] / "configs")) / "adapters"

INT_KEYS = {"ngf": 1, "ndf": 1, "n_blocks": 0, "n_layers_d": 1, "load_size": 8, "crop_size": 8, "batch_size": 1,
            "pool_size": 0, "checkpoint_every": 1, "log_every": 1}
FLOAT_KEYS = {"lr": 0.0, "beta1": 0.0, "lambda_cycle": 0.0, "lambda_identity": 0.0}
OTHER_KEYS = ("channels", "flip", "schedule", "fit_images")
#: keys a profile may leave out, with their default (added after the first profiles: those keep their digest)
OPTIONAL_KEYS = {"generator": "resnet"}
GENERATORS = ("resnet", "residual")
SCHEDULES = ({"iterations", "decay_start"}, {"epochs", "decay_epochs"})
#: the generator's input sides must be multiples of this (two stride-2 stages), and at least MIN_SIDE
#: (so that its residual blocks, at a quarter of the size, can reflect-pad)
MULTIPLE, MIN_SIDE = 4, 8


def read_profile(path: Path) -> dict[str, Any]:
    """The profile's settings, every key checked (a typo fails before any training)."""
    where = str(path)
    try:
        prof = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HarnessError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(prof, dict):
        raise HarnessError(f"{where}: must be a mapping of settings")
    known = set(INT_KEYS) | set(FLOAT_KEYS) | set(OTHER_KEYS) | set(OPTIONAL_KEYS)
    for key in sorted(set(prof) - known):
        raise HarnessError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")
    for key in sorted(known - set(prof) - set(OPTIONAL_KEYS)):
        raise HarnessError(f"{where}: missing key '{key}'")
    prof = {**OPTIONAL_KEYS, **prof}
    if prof["generator"] not in GENERATORS:
        raise HarnessError(f"{where}: 'generator' must be one of {', '.join(GENERATORS)}, got {prof['generator']!r}")
    for key, lo in INT_KEYS.items():
        T.check_int(where, key, prof[key], lo)
    for key, lo in FLOAT_KEYS.items():
        T.check_float(where, key, prof[key], lo)
    T.check_int(where, "fit_images", prof["fit_images"], 1, none=True)
    if prof["channels"] not in (1, 3):
        raise HarnessError(f"{where}: 'channels' must be 1 or 3, got {prof['channels']!r}")
    if not isinstance(prof["flip"], bool):
        raise HarnessError(f"{where}: 'flip' must be true or false, got {prof['flip']!r}")
    if prof["crop_size"] > prof["load_size"] or prof["crop_size"] % MULTIPLE:
        raise HarnessError(f"{where}: 'crop_size' must be a multiple of {MULTIPLE} and "
                           f"<= load_size ({prof['load_size']}), got {prof['crop_size']!r}")
    sched = prof["schedule"]
    if not isinstance(sched, dict) or set(sched) not in SCHEDULES:
        raise HarnessError(f"{where}: 'schedule' must be {{iterations: N, decay_start: M}} or "
                           f"{{epochs: N, decay_epochs: M}}, got {sched!r}")
    for key, value in sched.items():
        T.check_int(where, f"schedule.{key}", value, 1 if key in ("iterations", "epochs") else 0)
    if "iterations" in sched and sched["decay_start"] > sched["iterations"]:
        raise HarnessError(f"{where}: 'schedule.decay_start' must be <= schedule.iterations")
    return prof


def schedule_length(prof: dict[str, Any], n_a: int, n_b: int) -> tuple[int, int]:
    """(total iterations, iteration where the linear decay starts); an epoch is max(|A|, |B|) images,
    as in the reference's unaligned dataset."""
    sched = prof["schedule"]
    if "iterations" in sched:
        return int(sched["iterations"]), int(sched["decay_start"])
    per_epoch = math.ceil(max(n_a, n_b) / prof["batch_size"])
    return per_epoch * (sched["epochs"] + sched["decay_epochs"]), per_epoch * sched["epochs"]


class ImagePool:
    """The reference's history of generated images: once full, each query returns, with probability
    1/2, an older fake (replaced by the new one), which keeps the discriminators from oscillating."""

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        import torch

        if self.size == 0:
            return batch
        out = []
        for image in batch.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif rng.random() > 0.5:
                j = int(rng.integers(0, self.size))
                out.append(self.images[j])
                self.images[j] = image.clone()
            else:
                out.append(image)
        return torch.cat(out)


class CycleGAN(Adapter):
    """Unpaired CycleGAN; adapts with the B -> A generator."""

    name = "cyclegan"
    version = "1"
    summary = "CycleGAN B->A (ResNet G, PatchGAN D, LSGAN); the model is configs/adapters/cyclegan-<profile>.yaml"
    trainable = True
    fit_data = "unpaired"
    params = {
        "profile": "cpu",   # seed | cpu | cpu-residual | cpu-full8 | cpu-residual-full8 | test, or a YAML path
        "device": "auto",   # auto | cpu | cuda | cuda:N
        "threads": 0,       # torch CPU threads; 0 = torch's default
        "batch": 8,         # inference batch size
    }
    quick_params = {"profile": "test", "threads": 1}  # one thread: faster than two for 32 px, and on a busy CPU
    #: change how fast it runs, never what it computes: kept out of the identity so that changing them
    #: neither refits (a model fitted on a GPU serves on a CPU) nor re-adapts
    runtime_params = ("device", "threads", "batch")

    def __init__(self, **params: Any):
        super().__init__(**params)
        where = f"adapter '{self.name}': param"
        T.check_int(where, "threads", self.config["threads"], 0)
        T.check_int(where, "batch", self.config["batch"], 1)
        T.check_device(where, self.config["device"])
        self.settings = read_profile(self.profile_path())
        self.generator: nn.Module | None = None
        self.channels = int(self.settings["channels"])

    def profile_path(self) -> Path:
        profile = str(self.config["profile"])
        if profile.endswith((".yaml", ".yml")):
            path = Path(profile).expanduser()
        else:
            path = CONFIG_DIR / f"cyclegan-{profile}.yaml"
        if not path.is_file():
            known = sorted(p.stem.removeprefix("cyclegan-") for p in CONFIG_DIR.glob("cyclegan-*.yaml"))
            raise HarnessError(f"adapter '{self.name}': profile '{profile}': {path} not found "
                               f"(known: {', '.join(known) or 'none'}; set HARNESS_CONFIGS to the configs/ folder)")
        return path

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["profile_digest"] = file_digest(self.profile_path())
        return ident

    def build(self) -> dict[str, nn.Module]:
        from plugins.adapters.nets import PatchDiscriminator, generator

        s, c = self.settings, self.channels
        return {"G_AB": generator(s), "G_BA": generator(s),
                "D_A": PatchDiscriminator(c, s["ndf"], s["n_layers_d"]),
                "D_B": PatchDiscriminator(c, s["ndf"], s["n_layers_d"])}

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, source: list[Path], target: list[Path], fit_dir: Path, seed: int, progress: bool = True) -> None:
        import torch

        if not source or not target:
            raise HarnessError(f"adapter '{self.name}': fit needs domain-A (source) and domain-B (target) images, "
                               f"got {len(source)} and {len(target)}")
        fit_dir = Path(fit_dir)
        fit_dir.mkdir(parents=True, exist_ok=True)
        device = T.resolve_device(str(self.config["device"]))
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed crop size: pick the fastest kernels once
        try:
            with T.torch_threads(int(self.config["threads"])):
                Trainer(self, list(map(Path, source)), list(map(Path, target)), fit_dir, seed, device).fit(progress)
        finally:
            torch.backends.cudnn.benchmark = benchmark

    def _save_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        from harness import checkpoints

        checkpoints.save(state, path)

    def budget(self, out_dir: Path) -> dict[str, Any] | None:
        """From the fit's model.json; seconds are the loop's own, summed over resumes."""
        meta = T.fit_meta(out_dir)
        if meta is None:
            return None
        prof = meta["profile"]
        total, _ = schedule_length(prof, meta["images"]["A"], meta["images"]["B"])
        return {"iterations": meta["iterations"], "schedule_iterations": total, "batch": prof["batch_size"],
                "crop": prof["crop_size"], "seconds": meta["train_seconds"], "device": meta["device"]}

    # -- adapt -----------------------------------------------------------------------------------
    def load(self, fit_dir: Path | None) -> None:
        from plugins.adapters.nets import generator

        self.device = T.resolve_device(str(self.config["device"]))
        self.generator, meta = T.load_fitted(self.name, fit_dir, "generator.pt", self.device,
                                             build=lambda m: generator(m["profile"]))
        prof = meta["profile"]
        self.channels = int(prof["channels"])

    def translate(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """B -> A as float images in [-1, 1], each shaped like its input (2-D or HxWxC)."""
        import torch

        T.check_images(self.name, images, self.generator)

        inputs, merge = T.split_channels(images, self.channels)
        with T.torch_threads(int(self.config["threads"])), T.exact_convolutions(self.device), \
                torch.inference_mode():
            outputs = T.run_batched(inputs, int(self.config["batch"]), self._forward)
        return merge(outputs)

    def _forward(self, images: list[np.ndarray]) -> list[np.ndarray]:
        h, w = images[0].shape[:2]
        x = T.pad_to_multiple(T.to_tensor(images, self.device), MULTIPLE, MIN_SIDE)
        y = self.generator(x)[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()
        return list(y)

    def adapt_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [T.to_uint8(y) for y in self.translate(images)]

    def adapt(self, image: np.ndarray) -> np.ndarray:
        return self.adapt_batch([image])[0]


class Trainer(T.FitLoop):
    """One fit: the reference's optimize_parameters loop (G step, then both D steps on pooled fakes)."""

    losses = ("G_gan", "cycle", "idt", "D_A", "D_B")

    def __init__(self, adapter: CycleGAN, source: list[Path], target: list[Path], fit_dir: Path, seed: int,
                 device: torch.device):
        import torch

        from plugins.adapters.nets import init_weights

        self.adapter, self.seed = adapter, seed
        self.s = s = adapter.settings
        self.digest = file_digest(adapter.profile_path())
        rng = np.random.default_rng(seed_from("cyclegan", "fit", seed))
        self.images_a = self._load(T.subset(source, s["fit_images"], rng))
        self.images_b = self._load(T.subset(target, s["fit_images"], rng))
        total, self.decay_start = schedule_length(s, len(self.images_a), len(self.images_b))
        super().__init__(fit_dir, device, rng, {"profile_digest": self.digest, "seed": seed}, total,
                         s["log_every"], s["checkpoint_every"], adapter._save_checkpoint)

        gen = torch.Generator().manual_seed(seed_from("cyclegan", "init", seed))
        self.nets = {k: init_weights(net, generator=gen).to(device).train() for k, net in adapter.build().items()}
        for net in self.nets.values():
            if hasattr(net, "zero_residual"):
                net.zero_residual()
        betas = (s["beta1"], 0.999)
        self.opt_g = torch.optim.Adam(itertools.chain(self.nets["G_AB"].parameters(), self.nets["G_BA"].parameters()),
                                      lr=s["lr"], betas=betas)
        self.opt_d = torch.optim.Adam(itertools.chain(self.nets["D_A"].parameters(), self.nets["D_B"].parameters()),
                                      lr=s["lr"], betas=betas)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, self.lr_factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, self.lr_factor)
        self.pool_a, self.pool_b = ImagePool(s["pool_size"]), ImagePool(s["pool_size"])

    def lr_factor(self, step: int) -> float:
        """1 until decay_start, then linearly down to 0 at the last iteration's end."""
        if step < self.decay_start:
            return 1.0
        return max(0.0, 1.0 - (step - self.decay_start) / max(1, self.total - self.decay_start))

    def lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def _load(self, paths: list[Path]) -> list[np.ndarray]:
        """Images resized to load_size once (the reference resizes on every load; same result): gray kept
        1-channel even for a 3-channel net, which replicates it per crop (a third of the memory)."""
        size = self.s["load_size"]
        out = []
        for im in T.load_images(paths, 1) if self.s["channels"] == 1 else map(read_image, paths):
            if im.shape[:2] != (size, size):
                im = cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC)
            out.append(im if im.ndim == 3 else im[:, :, None])
        return out

    def _sample(self, images: list[np.ndarray]) -> torch.Tensor:
        crops = []
        for _ in range(self.s["batch_size"]):
            crop = T.random_crop(images[int(self.rng.integers(0, len(images)))], self.s["crop_size"], self.rng)
            if self.s["flip"] and self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            crops.append(np.ascontiguousarray(T.as_channels(crop, self.s["channels"])))
        return T.to_tensor(crops, self.device)

    def model_state(self) -> dict[str, Any]:
        return {**{k: net.state_dict() for k, net in self.nets.items()},
                "opt_G": self.opt_g.state_dict(), "opt_D": self.opt_d.state_dict(),
                "sched_G": self.sched_g.state_dict(), "sched_D": self.sched_d.state_dict(),
                "pool_A": [t.cpu() for t in self.pool_a.images], "pool_B": [t.cpu() for t in self.pool_b.images]}

    def load_model_state(self, state: dict[str, Any]) -> None:
        for k, net in self.nets.items():
            net.load_state_dict(state[k])
        self.opt_g.load_state_dict(state["opt_G"])
        self.opt_d.load_state_dict(state["opt_D"])
        self.sched_g.load_state_dict(state["sched_G"])
        self.sched_d.load_state_dict(state["sched_D"])
        self.pool_a.images = [t.to(self.device) for t in state["pool_A"]]
        self.pool_b.images = [t.to(self.device) for t in state["pool_B"]]

    def step(self) -> dict[str, float]:
        import torch
        from torch import nn

        s, nets = self.s, self.nets
        real_a, real_b = self._sample(self.images_a), self._sample(self.images_b)
        mse, l1 = nn.functional.mse_loss, nn.functional.l1_loss

        def gan(pred: torch.Tensor, real: bool) -> torch.Tensor:
            return mse(pred, torch.full_like(pred, 1.0 if real else 0.0))

        for d in (nets["D_A"], nets["D_B"]):
            d.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        fake_b = nets["G_AB"](real_a)
        rec_a = nets["G_BA"](fake_b)
        fake_a = nets["G_BA"](real_b)
        rec_b = nets["G_AB"](fake_a)
        lam, lam_idt = s["lambda_cycle"], s["lambda_cycle"] * s["lambda_identity"]
        idt = torch.zeros((), device=self.device)
        if lam_idt > 0:
            idt = l1(nets["G_AB"](real_b), real_b) * lam_idt + l1(nets["G_BA"](real_a), real_a) * lam_idt
        g_gan = gan(nets["D_A"](fake_b), True) + gan(nets["D_B"](fake_a), True)
        cycle = l1(rec_a, real_a) * lam + l1(rec_b, real_b) * lam
        (g_gan + cycle + idt).backward()
        self.opt_g.step()

        for d in (nets["D_A"], nets["D_B"]):
            d.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        d_a = 0.5 * (gan(nets["D_A"](real_b), True) + gan(nets["D_A"](self.pool_b.query(fake_b, self.rng)), False))
        d_a.backward()
        d_b = 0.5 * (gan(nets["D_B"](real_a), True) + gan(nets["D_B"](self.pool_a.query(fake_a, self.rng)), False))
        d_b.backward()
        self.opt_d.step()
        self.sched_g.step()
        self.sched_d.step()
        return {"G_gan": g_gan.item(), "cycle": cycle.item(), "idt": idt.item(), "D_A": d_a.item(),
                "D_B": d_b.item()}

    def fit(self, progress: bool) -> None:
        from harness import checkpoints
        from harness.data.coco import write_json_atomic

        last = self.run(progress, f"fit cyclegan ({self.fit_dir.name})")
        checkpoints.save(self.nets["G_BA"].state_dict(), self.fit_dir / "generator.pt")
        write_json_atomic(self.fit_dir / "model.json", {
            "adapter": self.adapter.name, "version": self.adapter.version, "profile": self.s,
            "profile_digest": self.digest, "seed": self.seed, "iterations": self.iteration,
            "decay_start": self.decay_start, "images": {"A": len(self.images_a), "B": len(self.images_b)},
            "train_seconds": round(self.seconds, 1), "device": str(self.device), "final_losses": last})
        self.checkpoint_path.unlink(missing_ok=True)
