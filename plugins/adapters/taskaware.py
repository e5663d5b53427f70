"""Task-aware restoration: a DnCNN-style restorer fitted through the frozen segmenter's own training loss.

The net is DnCNN's (1-channel residual body, ``plugins.adapters.nets.DnCNN``); its output ``y = x - net(x)`` is
fitted on whole (degraded training image, its labels, its clean original) triples to minimise

    task_weight * segmenter training loss (RPN + box + mask) of y  +  pixel_weight * L1(y, clean)

with the loss back-propagated through the trained, frozen segmenter of the cell (``Segmenter.loss_fn``: its
weights do not learn and its norm layers keep their statistics). The pixel term keeps the output an image. The
control is the same fit with ``task_weight: 0``: pixel loss only, same network, data, draws and budget; it needs
no segmenter (one fit serves every model), and the difference between the two is what the task loss is worth.

Because it optimises the segmenter's loss, ``optimises_segmenter_features`` is set (the report flags it). A fit
with a task weight is planned per trained model (input ``model``): a new model means a new fit. Training draws
which images and flips from one seeded numpy generator (checkpointed), and seeds torch's RNG (the segmenter's
samplers) per iteration, so a fit is a function of its seed and resumes exactly. Colour images are restored
channel by channel, as DnCNN's are; the segmenter sees the gray (luma) image in training.
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
from plugins.adapters.dncnn import DnCNN, PairTrainer

if TYPE_CHECKING:
    import torch


class TaskAware(DnCNN):
    """DnCNN restorer fitted through the frozen segmenter's training loss plus lambda * L1 to the clean image."""

    name = "taskaware"
    version = "1"
    summary = "DnCNN restorer fitted through the frozen segmenter's loss + pixel_weight * L1 (task_weight 0: control)"
    trainable = True
    fit_data = "paired"
    optimises_segmenter_features = True
    params = {
        "depth": 8,             # conv layers of the DnCNN body
        "width": 32,
        "norm": "group",        # group | batch (GroupNorm: batches are a few whole images)
        "iterations": 400,
        "batch": 2,             # whole images per step
        "lr": 1e-3,             # Adam, cosine-decayed to lr / 100 (dncnn's; nothing here is tuned on data)
        "task_weight": 1.0,     # weight of the segmenter's loss; 0 = the control (pixel loss only)
        "pixel_weight": 1.0,    # lambda: weight of L1(output, clean), in [-1, 1] units
        "fit_images": None,     # cap on training images (a seeded random choice); None = all
        "device": "auto",
        "threads": 0,
        "infer_batch": 8,
        "checkpoint_every": 50,
        "log_every": 10,
    }
    #: the quick fit is the control (task weight 0): contract tests and scaffolds fit it without a segmenter
    quick_params = {"depth": 3, "width": 4, "iterations": 4, "batch": 2, "checkpoint_every": 2, "log_every": 2,
                    "threads": 1, "task_weight": 0.0}
    runtime_params = ("device", "threads", "infer_batch", "checkpoint_every", "log_every")

    def __init__(self, **params: Any):
        Adapter.__init__(self, **params)
        where = f"adapter '{self.name}': param"
        for key, lo in (("depth", 2), ("width", 1), ("iterations", 1), ("batch", 1), ("threads", 0),
                        ("infer_batch", 1), ("checkpoint_every", 1), ("log_every", 1)):
            T.check_int(where, key, self.config[key], lo)
        T.check_int(where, "fit_images", self.config["fit_images"], 1, none=True)
        for key in ("lr", "task_weight", "pixel_weight"):
            T.check_float(where, key, self.config[key], 0.0)
        if self.config["norm"] not in ("batch", "group"):
            raise HarnessError(f"{where} 'norm' must be one of batch, group, got {self.config['norm']!r}")
        if not (self.config["task_weight"] or self.config["pixel_weight"]):
            raise HarnessError(f"{where}s 'task_weight' and 'pixel_weight' are both 0: nothing to fit")
        T.check_device(where, self.config["device"])
        self.net = None

    @property
    def needs_segmenter(self) -> bool:  # type: ignore[override]
        """The control (task weight 0) fits on pixels alone: one fit for every model."""
        return bool(self.config["task_weight"])

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, source: list[Path], target: list[Path], fit_dir: Path, seed: int, progress: bool = True) -> None:
        if self.needs_segmenter:
            raise HarnessError(f"adapter '{self.name}': task_weight {self.config['task_weight']} fits through a "
                               "segmenter (fit_with_task); only its control (task_weight 0) fits on images alone")
        self._run(source, target, None, None, fit_dir, seed, progress)

    def fit_with_task(self, source: list[Path], target: list[Path], annotations: list[list[dict[str, Any]]],
                      segmenter, model_dir: Path, fit_dir: Path, seed: int, progress: bool = True) -> None:
        if not self.needs_segmenter:
            self._run(source, target, None, None, fit_dir, seed, progress)
            return
        if not segmenter.has_loss_fn():
            raise HarnessError(refusal(segmenter.name, self.name))
        if len(annotations) != len(source):
            raise HarnessError(f"adapter '{self.name}': {len(annotations)} annotation lists for {len(source)} images")
        device = T.resolve_device(str(self.config["device"]))
        with T.torch_threads(int(self.config["threads"])):
            loss_fn = segmenter.loss_fn(Path(model_dir), device)
        self._run(source, target, annotations, loss_fn, fit_dir, seed, progress)

    def _run(self, source, target, annotations, loss_fn, fit_dir: Path, seed: int, progress: bool) -> None:
        if not source or len(source) != len(target):
            raise HarnessError(f"adapter '{self.name}': fit needs pairs (target[i] degraded from source[i]), "
                               f"got {len(source)} clean and {len(target)} degraded images")
        fit_dir = Path(fit_dir)
        fit_dir.mkdir(parents=True, exist_ok=True)
        device = T.resolve_device(str(self.config["device"]))
        with T.torch_threads(int(self.config["threads"])):
            TaskTrainer(self, list(map(Path, source)), list(map(Path, target)), annotations, loss_fn, fit_dir, seed,
                        device).fit(progress)

    def budget(self, out_dir: Path) -> dict[str, Any] | None:
        meta = T.fit_meta(out_dir)
        if meta is None:
            return None
        return {"iterations": meta["iterations"], "schedule_iterations": self.params["iterations"],
                "batch": meta["params"]["batch"], "crop": meta.get("crop"), "seconds": meta["train_seconds"],
                "device": meta["device"]}


def refusal(segmenter: str, adapter: str) -> str:
    return (f"adapter '{adapter}' fits through the segmenter's training loss, which segmenter '{segmenter}' does not "
            f"provide (no loss_fn); use it with mmdet-mask-rcnn or tv-mask-rcnn, or set task_weight: 0 (its control)")


def _decode(segmentation, h: int, w: int) -> np.ndarray:
    from plugins.segmenters.tv_mask_rcnn import _decode as decode

    return decode(segmentation, h, w)


class TaskTrainer(T.FitLoop):
    losses = ("loss", "task", "pixel")

    def __init__(self, adapter: TaskAware, source: list[Path], target: list[Path], annotations, loss_fn,
                 fit_dir: Path, seed: int, device: torch.device):
        import torch

        from plugins.adapters.nets import DnCNN as DnCNNNet
        from plugins.adapters.nets import kaiming_init

        self.adapter, self.seed, self.c, self.loss_fn = adapter, seed, adapter.config, loss_fn
        rng = np.random.default_rng(seed_from("taskaware", "fit", seed))
        keep = T.subset(list(range(len(source))), self.c["fit_images"], rng)
        self.items = [self._item(source[i], target[i], annotations[i] if annotations is not None else None)
                      for i in keep]
        fingerprint = {"params": stable_hash(adapter.identity()["params"]), "seed": seed}
        super().__init__(fit_dir, device, rng, fingerprint, int(self.c["iterations"]), int(self.c["log_every"]),
                         int(self.c["checkpoint_every"]), adapter._save_checkpoint)
        gen = torch.Generator().manual_seed(seed_from("taskaware", "init", seed))
        arch = adapter.architecture()
        self.net = kaiming_init(DnCNNNet(1, arch["depth"], arch["width"], arch["norm"]), generator=gen)
        self.net = self.net.to(device).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(self.c["lr"]))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=self.total,
                                                                eta_min=float(self.c["lr"]) / 100)
        self.frozen = None
        if loss_fn is not None:  # the segmenter's whole state, to prove the fit left it as it was
            self.frozen = {k: v.detach().clone() for k, v in loss_fn.model.state_dict().items()}

    @staticmethod
    def _item(clean_path: Path, degraded_path: Path, anns: list[dict] | None) -> dict[str, Any]:
        clean, degraded = T.as_channels(read_image(clean_path), 1), T.as_channels(read_image(degraded_path), 1)
        if clean.shape[:2] != degraded.shape[:2]:
            raise HarnessError(f"{degraded_path}: {degraded.shape[1]}x{degraded.shape[0]} does not match its clean "
                               f"image {clean_path} ({clean.shape[1]}x{clean.shape[0]})")
        h, w = clean.shape[:2]
        item = {"clean": clean, "degraded": degraded, "masks": np.zeros((0, h, w), np.uint8),
                "labels": np.zeros(0, np.int64)}
        anns = [a for a in anns or [] if not a.get("iscrowd", 0)]
        if anns:
            item["masks"] = np.stack([_decode(a["segmentation"], h, w) for a in anns])
            item["labels"] = np.array([int(a["category_id"]) for a in anns], np.int64)
        return item

    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def _sample(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """``batch`` (clean, degraded, masks, labels), each image drawn and flipped by the fit's generator."""
        out = []
        for _ in range(int(self.c["batch"])):
            item = self.items[int(self.rng.integers(0, len(self.items)))]
            clean, degraded, masks = item["clean"], item["degraded"], item["masks"]
            if self.rng.random() < 0.5:
                clean, degraded, masks = clean[:, ::-1], degraded[:, ::-1], masks[:, :, ::-1]
            if self.rng.random() < 0.5:
                clean, degraded, masks = clean[::-1], degraded[::-1], masks[:, ::-1]
            keep = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)
            out.append((np.ascontiguousarray(clean), np.ascontiguousarray(degraded),
                        np.ascontiguousarray(masks[keep]), item["labels"][keep]))
        return out

    def _targets(self, masks: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        import torch

        boxes = np.zeros((len(masks), 4), dtype=np.float32)
        for i, m in enumerate(masks):
            ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return {"boxes": torch.from_numpy(boxes).to(self.device), "labels": torch.from_numpy(labels).to(self.device),
                "masks": torch.from_numpy(masks).to(self.device)}

    def step(self) -> dict[str, float]:
        import torch

        batch = self._sample()
        task_w, pixel_w = float(self.c["task_weight"]), float(self.c["pixel_weight"])
        self.opt.zero_grad(set_to_none=True)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (clean, _, _, _) in enumerate(batch):
            groups.setdefault(clean.shape, []).append(i)
        task_sum, pixel_sum = 0.0, 0.0
        for idx in groups.values():  # same-size images together (NEU-Seg: one group)
            clean = T.to_tensor([batch[i][0] for i in idx], self.device)
            degraded = T.to_tensor([batch[i][1] for i in idx], self.device)
            restored = degraded - self.net(degraded)
            pixel = torch.nn.functional.l1_loss(restored, clean)
            total = pixel_w * pixel * len(idx) / len(batch)
            if task_w and self.loss_fn is not None:
                devices = [self.device] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed_from("taskaware", "iter", self.seed, self.iteration, idx[0]))
                    images = (restored.clamp(-1.0, 1.0) + 1.0) / 2.0
                    task = self.loss_fn(images, [self._targets(batch[i][2], batch[i][3]) for i in idx])
                total = total + task_w * task * len(idx) / len(batch)
                task_sum += float(task.detach()) * len(idx) / len(batch)
            pixel_sum += float(pixel.detach()) * len(idx) / len(batch)
            total.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": task_w * task_sum + pixel_w * pixel_sum, "task": task_sum, "pixel": pixel_sum}

    # the same network, optimiser and schedule as DnCNN's own fit: the same checkpoint state
    model_state = PairTrainer.model_state
    load_model_state = PairTrainer.load_model_state

    def fit(self, progress: bool) -> None:
        import torch

        from harness import checkpoints
        from harness.data.coco import write_json_atomic

        last = self.run(progress, f"fit taskaware ({self.fit_dir.name})")
        if self.frozen is not None:
            now = self.loss_fn.model.state_dict()
            changed = [k for k, v in self.frozen.items() if not torch.equal(v, now[k])]
            if changed:
                raise HarnessError(f"adapter 'taskaware': the segmenter's '{changed[0]}' changed during the fit "
                                   f"({len(changed)} tensors): it must stay frozen")
        checkpoints.save(self.net.state_dict(), self.fit_dir / "weights.pt")
        write_json_atomic(self.fit_dir / "model.json", {
            "adapter": self.adapter.name, "version": self.adapter.version, "architecture": self.adapter.architecture(),
            "params": self.adapter.identity()["params"], "seed": self.seed, "iterations": self.iteration,
            "images": len(self.items), "crop": int(max(self.items[0]["clean"].shape[:2])),
            "through_segmenter": self.loss_fn is not None, "train_seconds": round(self.seconds, 1),
            "device": str(self.device), "final_losses": last})
        self.checkpoint_path.unlink(missing_ok=True)
