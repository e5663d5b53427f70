"""A DnCNN-style restorer (Zhang et al. 2017) trained on (clean, degraded) pairs.

The net predicts the residual (degraded - clean) and the adapter subtracts it, which is what lets a
plain stack of 3x3 convolutions learn denoising, deblurring and deblocking alike (DnCNN-3). Training
samples random ``patch`` crops of random pairs with the 8 flips/rotations, Adam with a cosine decay of
the learning rate, and is resumable like CycleGAN's (``checkpoint.pt``, ``losses.csv``). The fit folder
ends with ``weights.pt`` (the net's state dict) and ``model.json`` (architecture, iterations, losses).

The net is 1-channel: a colour image is restored channel by channel, in training as in use. torch is
imported where it is used, so that loading the plugin registry does not load it. Nothing is tuned on data:
the defaults are the paper's, shrunk to fit the CPU time budget (measured in minutes, not in PSNR).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.errors import HarnessError
from harness.hashing import seed_from, stable_hash
from harness.imageio import read_image
from harness.interfaces import Adapter
from plugins.adapters import training as T

if TYPE_CHECKING:
    import torch
    from torch import nn


class DnCNN(Adapter):
    """Residual CNN restorer fitted on paired clean/degraded images."""

    name = "dncnn"
    version = "1"
    summary = "DnCNN residual restorer (conv+norm+ReLU stack) trained on clean/degraded pairs"
    trainable = True
    fit_data = "paired"
    params = {
        "depth": 10,            # conv layers (Zhang et al.: 17; 10 x 32 trains in 5-9 min on 2 CPU cores)
        "width": 32,            # channels of the hidden layers (Zhang et al.: 64)
        "norm": "batch",        # batch | group (GroupNorm: batch-size independent)
        "patch": 40,            # training crop side (Zhang et al.: 40)
        "iterations": 1500,
        "batch": 32,            # patches per training step
        "lr": 1e-3,             # Adam, cosine-decayed to lr / 100
        "loss": "mse",          # mse | l1
        "fit_images": None,     # cap on training pairs (a seeded random choice); None = all
        "device": "auto",       # auto | cpu | cuda | cuda:N
        "threads": 0,           # torch CPU threads; 0 = torch's default
        "infer_batch": 8,       # images per inference batch
        "checkpoint_every": 250,
        "log_every": 25,
    }
    quick_params = {"depth": 4, "width": 8, "patch": 16, "iterations": 30, "batch": 8, "checkpoint_every": 10,
                    "log_every": 5, "threads": 1}
    #: change how fast it runs or what it logs, never what it computes: kept out of the identity
    runtime_params = ("device", "threads", "infer_batch", "checkpoint_every", "log_every")

    def __init__(self, **params: Any):
        super().__init__(**params)
        where = f"adapter '{self.name}': param"
        for key, lo in (("depth", 2), ("width", 1), ("patch", 4), ("iterations", 1), ("batch", 1), ("threads", 0),
                        ("infer_batch", 1), ("checkpoint_every", 1), ("log_every", 1)):
            T.check_int(where, key, self.config[key], lo)
        T.check_int(where, "fit_images", self.config["fit_images"], 1, none=True)
        T.check_float(where, "lr", self.config["lr"], 0.0)
        for key, options in (("norm", ("batch", "group")), ("loss", ("mse", "l1"))):
            if self.config[key] not in options:
                raise HarnessError(f"{where} '{key}' must be one of {', '.join(options)}, got {self.config[key]!r}")
        T.check_device(where, self.config["device"])
        self.net: nn.Module | None = None

    def architecture(self) -> dict[str, Any]:
        return {"depth": self.config["depth"], "width": self.config["width"], "norm": self.config["norm"]}

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, source: list[Path], target: list[Path], fit_dir: Path, seed: int, progress: bool = True) -> None:
        if not source or len(source) != len(target):
            raise HarnessError(f"adapter '{self.name}': fit needs pairs (target[i] degraded from source[i]), "
                               f"got {len(source)} clean and {len(target)} degraded images")
        fit_dir = Path(fit_dir)
        fit_dir.mkdir(parents=True, exist_ok=True)
        device = T.resolve_device(str(self.config["device"]))
        with T.torch_threads(int(self.config["threads"])):
            PairTrainer(self, list(map(Path, source)), list(map(Path, target)), fit_dir, seed, device).fit(progress)

    def _save_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        from harness import checkpoints

        checkpoints.save(state, path)

    def budget(self, out_dir: Path) -> dict[str, Any] | None:
        """From the fit's model.json. DnCNN has no profiles: its schedule is the default ``iterations``, so a fit
        shortened by the ``iterations`` param (quick or test fits) is marked as such."""
        meta = T.fit_meta(out_dir)
        if meta is None:
            return None
        params = meta["params"]
        return {"iterations": meta["iterations"], "schedule_iterations": self.params["iterations"],
                "batch": params["batch"], "crop": params["patch"], "seconds": meta["train_seconds"],
                "device": meta["device"]}

    # -- adapt -----------------------------------------------------------------------------------
    def load(self, fit_dir: Path | None) -> None:
        from plugins.adapters.nets import DnCNN as DnCNNNet

        self.device = T.resolve_device(str(self.config["device"]))
        self.net, _ = T.load_fitted(
            self.name, fit_dir, "weights.pt", self.device,
            build=lambda m: DnCNNNet(1, m["architecture"]["depth"], m["architecture"]["width"], m["architecture"]["norm"]))

    def restore(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Restored images as floats in [-1, 1], each shaped like its input."""
        import torch

        T.check_images(self.name, images, self.net)

        inputs, merge = T.split_channels(images, 1)
        with T.torch_threads(int(self.config["threads"])), T.exact_convolutions(self.device), \
                torch.inference_mode():
            outputs = T.run_batched(inputs, int(self.config["infer_batch"]), self._forward)
        return merge(outputs)

    def _forward(self, images: list[np.ndarray]) -> list[np.ndarray]:
        x = T.to_tensor(images, self.device)
        return list((x - self.net(x)).permute(0, 2, 3, 1).float().cpu().numpy())

    def adapt_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [T.to_uint8(y) for y in self.restore(images)]

    def adapt(self, image: np.ndarray) -> np.ndarray:
        return self.adapt_batch([image])[0]


class PairTrainer(T.FitLoop):
    losses = ("loss",)

    def __init__(self, adapter: DnCNN, source: list[Path], target: list[Path], fit_dir: Path, seed: int,
                 device: torch.device):
        import torch
        from torch import nn

        from plugins.adapters.nets import DnCNN as DnCNNNet
        from plugins.adapters.nets import kaiming_init

        self.adapter, self.seed, self.c = adapter, seed, adapter.config
        rng = np.random.default_rng(seed_from("dncnn", "fit", seed))
        keep = T.subset(list(range(len(source))), self.c["fit_images"], rng)
        self.pairs = [self._pair(source[i], target[i]) for i in keep]
        fingerprint = {"params": stable_hash(adapter.identity()["params"]), "seed": seed}
        super().__init__(fit_dir, device, rng, fingerprint, int(self.c["iterations"]), int(self.c["log_every"]),
                         int(self.c["checkpoint_every"]), adapter._save_checkpoint)
        gen = torch.Generator().manual_seed(seed_from("dncnn", "init", seed))
        arch = adapter.architecture()
        net = DnCNNNet(1, arch["depth"], arch["width"], arch["norm"])
        self.net = kaiming_init(net, generator=gen).to(device).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(self.c["lr"]))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=self.total,
                                                                eta_min=float(self.c["lr"]) / 100)
        self.criterion = nn.functional.mse_loss if self.c["loss"] == "mse" else nn.functional.l1_loss

    @staticmethod
    def _pair(clean_path: Path, degraded_path: Path) -> np.ndarray:
        """Clean and degraded stacked channel-wise (HxWx2C), so one crop cuts both at the same place."""
        clean, degraded = read_image(clean_path), read_image(degraded_path)
        if clean.shape[:2] != degraded.shape[:2]:
            raise HarnessError(f"{degraded_path}: {degraded.shape[1]}x{degraded.shape[0]} does not match its clean "
                               f"image {clean_path} ({clean.shape[1]}x{clean.shape[0]})")
        channels = 3 if clean.ndim == 3 or degraded.ndim == 3 else 1
        return np.concatenate([T.as_channels(clean, channels), T.as_channels(degraded, channels)], axis=2)

    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def _sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        clean, degraded = [], []
        for _ in range(int(self.c["batch"])):
            pair = self.pairs[int(self.rng.integers(0, len(self.pairs)))]
            crop = T.random_crop(pair, int(self.c["patch"]), self.rng)
            crop = np.rot90(crop, int(self.rng.integers(0, 4)))
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            c = int(self.rng.integers(0, crop.shape[2] // 2))
            clean.append(np.ascontiguousarray(crop[:, :, c:c + 1]))
            degraded.append(np.ascontiguousarray(crop[:, :, crop.shape[2] // 2 + c:crop.shape[2] // 2 + c + 1]))
        return T.to_tensor(clean, self.device), T.to_tensor(degraded, self.device)

    def step(self) -> dict[str, float]:
        clean, degraded = self._sample()
        self.opt.zero_grad(set_to_none=True)
        loss = self.criterion(self.net(degraded), degraded - clean)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": loss.item()}

    def model_state(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])

    def fit(self, progress: bool) -> None:
        from harness import checkpoints
        from harness.data.coco import write_json_atomic

        last = self.run(progress, f"fit dncnn ({self.fit_dir.name})")
        checkpoints.save(self.net.state_dict(), self.fit_dir / "weights.pt")
        write_json_atomic(self.fit_dir / "model.json", {
            "adapter": self.adapter.name, "version": self.adapter.version, "architecture": self.adapter.architecture(),
            "params": self.adapter.identity()["params"], "seed": self.seed, "iterations": self.iteration,
            "pairs": len(self.pairs), "train_seconds": round(self.seconds, 1), "device": str(self.device),
            "final_losses": last})
        self.checkpoint_path.unlink(missing_ok=True)
