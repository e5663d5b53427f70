"""torchvision's Mask R-CNN (R50-FPN family) as a harness segmenter, swappable with ``mmdet-mask-rcnn``.

The model is a YAML file under ``configs/torchvision/`` (one per profile, mirroring the MMDetection ones); this
module builds it from torchvision parts, trains it with a plain loop and exports weights that load under
``torch.load(weights_only=True)``. It needs nothing beyond torch and torchvision (no mmcv/mmdet/mmengine), so it
runs where those are not installed, and never downloads weights unless ``init`` is a URL.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness import atomic, checkpoints
from harness.errors import HarnessError
from harness.interfaces import Segmenter
from plugins.segmenters import fastpredict, features, train_stats
from plugins.segmenters.amp import autocast

CONFIG_DIR = Path(os.environ.get("HARNESS_CONFIGS", Path(__file__).resolve().parents[2] / "configs")) / "torchvision"
PROFILE_CONFIGS = {
    "seed": "mask-rcnn_r50_fpn_seed.yaml",
    "cpu": "mask-rcnn_r18_fpn_gn_cpu.yaml",
    "tiny": "mask-rcnn_tiny.yaml",
}
#: every key a config must set once its ``_base_`` chain is merged (no defaults in code: the file is the model)
SCHEMA: dict[str, Any] = {
    "input": {"size", "size_divisor"},
    "gn_groups": None,
    "backbone": {"depth", "base_channels", "norm", "frozen_stages"},
    "fpn": {"out_channels", "norm"},
    "rpn": {"anchor_sizes", "aspect_ratios", "fg_iou_thresh", "bg_iou_thresh", "batch_size_per_image",
            "positive_fraction", "pre_nms_top_n_train", "post_nms_top_n_train", "pre_nms_top_n_test",
            "post_nms_top_n_test", "nms_thresh"},
    "roi": {"sampling_ratio", "fg_iou_thresh", "bg_iou_thresh", "batch_size_per_image", "positive_fraction",
            "box_fc_channels", "mask_convs", "mask_channels", "mask_norm", "nms_thresh", "detections_per_img"},
    "train": {"batch_size", "max_iters", "lr", "momentum", "weight_decay", "clip_grad_norm", "warmup_iters",
              "warmup_factor", "decay", "eta_min", "checkpoint_interval", "log_interval"},
    "augment": {"flip"},
}
FLIPS = ("horizontal", "vertical", "diagonal")
DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]),
          101: ("bottleneck", [3, 4, 23, 3]), 152: ("bottleneck", [3, 8, 36, 3])}
CHECKPOINT = "last.pth"
log = logging.getLogger("harness.segmenters.tv_mask_rcnn")


class TVMaskRCNN(Segmenter):
    """Mask R-CNN (torchvision); the model is a YAML config file, one per profile."""

    name = "tv-mask-rcnn"
    version = "1"
    captures_features = True
    profiles = {
        "seed": "R50-FPN, the seed's schedule: SGD lr 0.00025, batch 4, 5000 it, 640 px (GPU; wants --init COCO)",
        "cpu": "R18-FPN + GroupNorm from scratch, 2400 it at 200 px: <= 60 min on 2 CPU cores",
        "tiny": "quarter-width R18-FPN, 1000 it at 128 px: the embedded demo and tests",
    }
    params = {
        "config": None,       # a user's own YAML config, replacing the profile's (may name a `_base_`)
        "max_iters": None,    # override the profile's schedule length (tests, quick looks)
        "batch_size": None,
        "device": "auto",     # auto | cpu | cuda | cuda:N
        "threads": None,      # torch CPU threads; default: torch's
        "score_thr": 0.05,
        "predict_batch": 8,
        "amp": False,         # float16 autocast for inference on a GPU (faster; ignored on CPU)
        # prediction options that change the detections (off by default; benchmarks/RESULTS.md has their ΔAP)
        "rpn_proposals": None,  # proposals kept per image after the RPN's NMS; default: the model config's
        "max_per_img": None,    # detections kept per image; default: the model config's
        "bf16": False,          # bfloat16 autocast of the networks (CPU or GPU)
        "checkpoint_interval": None,  # iterations between resume checkpoints; default: the config's
    }
    later_params = ("amp", "rpn_proposals", "max_per_img", "bf16")
    #: a resumed training equals an uninterrupted one bit for bit, so where it checkpoints changes nothing
    runtime_params = ("checkpoint_interval",)

    def __init__(self, **params: Any):
        super().__init__(**params)
        fastpredict.check_options(self)

    # -- config --------------------------------------------------------------------------------
    def config_path(self, profile: str) -> Path:
        if self.config["config"]:
            path = Path(self.config["config"]).expanduser()
        else:
            self.check_profile(profile)
            path = CONFIG_DIR / PROFILE_CONFIGS[profile]
        if not path.is_file():
            raise HarnessError(f"{path}: torchvision model config not found "
                               "(set HARNESS_CONFIGS to the configs/ folder)")
        return path

    def model_fingerprint(self, profile: str) -> str:
        """The resolved config (its _base_ chain included), not the file path, defines the model."""
        from harness.hashing import stable_hash

        return stable_hash(load_config(self.config_path(profile)))

    def resolved_config(self, profile: str) -> dict[str, Any]:
        cfg = load_config(self.config_path(profile))
        if self.config["max_iters"]:
            _rescale_schedule(cfg["train"], int(self.config["max_iters"]))
        if self.config["batch_size"]:
            cfg["train"]["batch_size"] = int(self.config["batch_size"])
        return cfg

    # -- training ------------------------------------------------------------------------------
    def train(self, data_dir: Path, out_dir: Path, profile: str, seed: int, init: str | None = None) -> None:
        from harness.data.coco import write_json_atomic

        data_dir, out_dir = Path(data_dir), Path(out_dir)
        device, cfg, categories, data, model, optimizer, work = self._training(data_dir, out_dir, profile, seed)
        with open(work / "train.log", "a") as logfile:
            say = _logger(logfile)
            start = 0
            atomic.remove_leftovers(work)
            if (work / CHECKPOINT).is_file():  # an interrupted training continues from its last checkpoint
                start = _resume(model, optimizer, work / CHECKPOINT)
                say(f"resumed from {work / CHECKPOINT} at iteration {start}")
            elif init:
                load_init(model, init, say)
            say(f"training {self.name} ({profile}) on {device}: {len(data)} images, iterations {start} -> "
                f"{cfg['train']['max_iters']}, batch {cfg['train']['batch_size']}")
            tcfg = self._schedule(cfg)
            times = _fit(model, optimizer, data, tcfg, start, seed, device, work, say)
        self._export(model, cfg, categories, out_dir)
        stats = self._stats(profile, cfg, start, times, device)
        write_json_atomic(out_dir / "train_stats.json", stats, indent=1)

    def _training(self, data_dir: Path, out_dir: Path, profile: str, seed: int):
        """What ``train`` and ``self_train`` start from: (device, config, categories, the labelled TrainSet, the
        model and its optimizer as seeded from ``seed``, the work folder)."""
        import torch

        from harness.data.coco import load_coco
        from harness.hashing import seed_from

        _setup_torch(self.config["threads"])
        device = _device(self.config["device"])
        cfg = self.resolved_config(profile)
        coco = load_coco(data_dir / "train.json")
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        data = TrainSet(data_dir, coco, categories, cfg["augment"]["flip"], seed)
        work = out_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed_from(seed, "init"))
        model = build_model(cfg, len(categories)).to(device)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg["train"]["lr"],
                                    momentum=cfg["train"]["momentum"], weight_decay=cfg["train"]["weight_decay"])
        return device, cfg, categories, data, model, optimizer, work

    def _schedule(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The loop's train config, with the runtime ``checkpoint_interval`` when set."""
        tcfg = dict(cfg["train"])
        if self.config["checkpoint_interval"]:
            tcfg["checkpoint_interval"] = int(self.config["checkpoint_interval"])
        return tcfg

    def _stats(self, profile: str, cfg: dict[str, Any], start: int, times: list[float], device: str,
               **extra: Any) -> dict[str, Any]:
        """train_stats.json: timing, and what ``budget`` reads (the profile's own schedule, batch, input size)."""
        stats = _train_stats(max(start, int(cfg["train"]["max_iters"])), start, times, device)
        stats.update(schedule_iters=int(load_config(self.config_path(profile))["train"]["max_iters"]),
                     batch_size=int(cfg["train"]["batch_size"]), input_size=int(cfg["input"]["size"]), **extra)
        return stats

    def budget(self, out_dir: Path) -> dict[str, Any] | None:
        return train_stats.budget(out_dir, self.loss_log(out_dir))

    @classmethod
    def loss_log(cls, out_dir: Path):
        return train_stats.text_log_losses(Path(out_dir) / "work" / "train.log")

    #: implements ``train_on: {self_training: ...}`` (harness.config refuses it for segmenters without ``self_train``)
    def self_train(self, data_dir: Path, out_dir: Path, profile: str, seed: int, init: str | None,
                   options: dict[str, Any]) -> None:
        """Mean-teacher self-training from ``init`` (see ``plugins/segmenters/self_training.py``): labelled
        source batches from ``data_dir/train.json``, unlabelled target images from ``data_dir/unlabelled.json``;
        exports the EMA teacher."""
        from harness.data.coco import write_json_atomic
        from plugins.segmenters import self_training as st

        data_dir, out_dir = Path(data_dir), Path(out_dir)
        device, cfg, categories, data, model, optimizer, work = self._training(data_dir, out_dir, profile, seed)
        target = st.UnlabelledSet(data_dir, cfg["augment"]["flip"], seed) if options["pseudo_labels"] else None
        teacher = build_model(cfg, len(categories), score_thr=float(options.get("threshold", 0.05))).to(device)
        for p in teacher.parameters():
            p.requires_grad_(False)
        with open(work / "train.log", "a") as logfile:
            say = _logger(logfile)
            start = st.begin(model, teacher, optimizer, work, CHECKPOINT, init,
                             lambda path: load_init(model, path, say), self.name, say)
            say(f"self-training {self.name} ({profile}) on {device}: {len(data)} labelled source images, "
                f"{len(target) if target else 0} unlabelled target images, iterations {start} -> "
                f"{cfg['train']['max_iters']}, batch {cfg['train']['batch_size']} + {cfg['train']['batch_size']}, "
                f"options {options}")
            tcfg = self._schedule(cfg)
            times, counts = st.fit(model, teacher, optimizer, data, target, tcfg, options, start, seed, device,
                                   work, say, student_loss=lambda ims, tgts: sum(model(ims, tgts).values()),
                                   teacher_detect=teacher, lr_at=lambda it: lr_at(tcfg, it), name=self.name,
                                   checkpoint=CHECKPOINT)
        self._export(teacher, cfg, categories, out_dir)
        per_image = float(np.mean(counts)) / int(cfg["train"]["batch_size"]) if counts else None
        stats = self._stats(profile, cfg, start, times, device,
                            self_training={**options, "exported": "teacher", "pseudo_labels_per_image": per_image})
        write_json_atomic(out_dir / "train_stats.json", stats, indent=1)

    def _export(self, model, cfg: dict[str, Any], categories: list[dict], out_dir: Path) -> None:
        import yaml

        from harness.data.coco import write_json_atomic

        classes = [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]
        meta = {"classes": [c["name"] for c in classes], "category_ids": [c["id"] for c in classes],
                "harness_segmenter": self.name, "config": cfg}
        checkpoints.save({"state_dict": _cpu_state(model), "meta": meta}, out_dir / "model.pth")
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        write_json_atomic(out_dir / "classes.json", classes)

    # -- prediction ----------------------------------------------------------------------------
    def load_model(self, model_dir: Path):
        model_dir = Path(model_dir)
        _setup_torch(self.config["threads"])
        cfg = load_config(model_dir / "config.yaml")
        classes = json.loads((model_dir / "classes.json").read_text())
        if self.config["rpn_proposals"]:
            cfg["rpn"]["post_nms_top_n_test"] = int(self.config["rpn_proposals"])
        if self.config["max_per_img"]:
            cfg["roi"]["detections_per_img"] = int(self.config["max_per_img"])
        model = build_model(cfg, len(classes), score_thr=float(self.config["score_thr"]))
        state = checkpoints.load(model_dir / "model.pth")["state_dict"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise HarnessError(f"{model_dir / 'model.pth'}: weights do not fit config.yaml "
                               f"(missing {len(missing)}, unexpected {len(unexpected)})")
        model.to(_device(self.config["device"])).eval()
        return model, classes

    def loss_fn(self, model_dir: Path, device):
        """``Segmenter.loss_fn``: torchvision's training-mode forward with targets (its loss dict, summed), every
        weight frozen and the norm layers in eval mode; its transform resizes and normalises differentiably."""
        import torch

        model, classes = self.load_model(model_dir)
        model.to(device)
        for param in model.parameters():
            param.requires_grad_(False)
        label = {int(c["id"]): i + 1 for i, c in enumerate(classes)}

        def loss(images, targets):
            frozen_train_mode(model)
            x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.flip(1)  # gray / BGR -> RGB
            tv_targets = [{"boxes": t["boxes"].to(x.dtype).reshape(-1, 4),
                           "labels": torch.tensor([label[int(v)] for v in t["labels"]], dtype=torch.int64,
                                                  device=x.device),
                           "masks": t["masks"].to(torch.uint8)} for t in targets]
            losses = model(list(x), tv_targets)
            model.eval()
            return sum(losses.values())

        loss.model = model
        return loss

    def predict(self, model_dir: Path, images: list[dict], image_root: Path, out_json: Path,
                progress: bool = True, features_out: Path | None = None) -> None:
        features.write_predictions(lambda tap: self.records(model_dir, images, image_root, progress, tap=tap),
                                   images, out_json, features_out)

    def records(self, model_dir: Path, images: list[dict], image_root: Path, progress: bool = True,
                reference: bool = False, tap: features.FeatureTap | None = None) -> list[dict[str, Any]]:
        """The COCO results; on a CPU through ``fastpredict`` (same bytes, faster) unless ``reference``; ``tap``
        collects each image's pooled FPN features on the way."""
        from harness.imageio import read_image

        model, classes = self.load_model(model_dir)
        category_ids = [int(c["id"]) for c in classes]
        batch = max(1, int(self.config["predict_batch"]))
        with features.tv_hooks(model, tap):
            if not reference and fastpredict.tv_supported(model) is None:
                return fastpredict.tv_predict(model, images, Path(image_root),
                                              lambda p: _to_tensor(read_image(p), "cpu"), category_ids, batch,
                                              self.config["bf16"], progress, tap=tap)
            return self._reference_records(model, category_ids, images, Path(image_root), batch, progress, tap)

    def _reference_records(self, model, category_ids: list[int], images: list[dict], image_root: Path, batch: int,
                           progress: bool, tap: features.FeatureTap | None = None) -> list[dict[str, Any]]:
        """The model's own forward, batch by batch into COCO records: the GPU path and the CPU path's reference."""
        import torch
        from tqdm import tqdm

        from harness.imageio import read_image

        device = next(model.parameters()).device
        results: list[dict[str, Any]] = []
        bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress)
        with (torch.inference_mode(), autocast(self.config["amp"], model),
              fastpredict.bf16_autocast(self.config["bf16"], device),
              fastpredict.bf16_boundaries(self.config["bf16"], **fastpredict.tv_bf16(model))):
            for start in range(0, len(images), batch):
                chunk = images[start:start + batch]
                tensors = [_to_tensor(read_image(image_root / rec["file_name"]), device) for rec in chunk]
                features.tv_next(tap, [rec["id"] for rec in chunk])
                for rec, out in zip(chunk, model(tensors)):
                    results.extend(_to_coco(rec["id"], out, category_ids))
                bar.update(len(chunk))
        bar.close()
        return results


# -- config files ------------------------------------------------------------------------------
def load_config(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config with its ``_base_`` chain merged in. A base path is relative to the file naming it, or
    names a file of configs/torchvision/ (so a user's file can say ``_base_: mask-rcnn_r18_fpn_gn_cpu.yaml``)."""
    import yaml

    path = Path(path).resolve()
    if path in _seen:
        raise HarnessError(f"{path}: _base_ chain loops back to itself")
    if not path.is_file():
        raise HarnessError(f"{path}: torchvision model config not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: top level must be a mapping")
    base = raw.pop("_base_", None)
    cfg = {}
    if base:
        base_path = path.parent / base
        if not base_path.is_file() and (CONFIG_DIR / base).is_file():
            base_path = CONFIG_DIR / base
        cfg = load_config(base_path, (*_seen, path))
    for key, value in raw.items():
        if key not in SCHEMA:
            raise HarnessError(f"{path}: unknown key '{key}' (known: {', '.join(SCHEMA)})")
        keys = SCHEMA[key]
        if keys is None:
            cfg[key] = value
            continue
        if not isinstance(value, dict):
            raise HarnessError(f"{path}: '{key}' must be a mapping")
        for sub in value:
            if sub not in keys:
                raise HarnessError(f"{path}: unknown key '{key}.{sub}' (known: {', '.join(sorted(keys))})")
        cfg[key] = {**cfg.get(key, {}), **value}
    if not _seen:
        missing = [k if keys is None else f"{k}.{sub}" for k, keys in SCHEMA.items()
                   for sub in ([None] if keys is None else sorted(keys))
                   if k not in cfg or (sub is not None and sub not in cfg[k])]
        if missing:
            raise HarnessError(f"{path}: missing key '{missing[0]}' (a config sets every key, or names a _base_)")
        _check_values(cfg, path)
    return cfg


def _check_values(cfg: dict[str, Any], path: Path) -> None:
    choices = {("backbone", "norm"): ("frozen_bn", "bn", "gn"), ("fpn", "norm"): ("none", "gn"),
               ("roi", "mask_norm"): ("none", "gn"), ("train", "decay"): ("constant", "cosine")}
    for (section, key), allowed in choices.items():
        if cfg[section][key] is None and "none" in allowed:
            cfg[section][key] = "none"
        if cfg[section][key] not in allowed:
            raise HarnessError(f"{path}: {section}.{key} is '{cfg[section][key]}' (choose {' | '.join(allowed)})")
    if cfg["backbone"]["depth"] not in DEPTHS:
        depths = ", ".join(map(str, DEPTHS))
        raise HarnessError(f"{path}: backbone.depth is {cfg['backbone']['depth']} (choose {depths})")
    flip = cfg["augment"]["flip"] or {}
    if (not isinstance(flip, dict) or set(flip) - set(FLIPS)
            or not all(isinstance(p, (int, float)) and p >= 0 for p in flip.values()) or sum(flip.values()) > 1 + 1e-9):
        raise HarnessError(f"{path}: augment.flip must map {' | '.join(FLIPS)} to probabilities summing to <= 1")
    if len(cfg["rpn"]["anchor_sizes"]) != 5:
        raise HarnessError(f"{path}: rpn.anchor_sizes needs one size per FPN level (5)")


def _rescale_schedule(tcfg: dict[str, Any], max_iters: int) -> None:
    """Shorten or lengthen a schedule while keeping its shape (warm-up scales with it), as the mmdet plugin does."""
    old = int(tcfg["max_iters"])
    tcfg["max_iters"] = max_iters
    tcfg["warmup_iters"] = max(0, round(tcfg["warmup_iters"] * max_iters / old))
    tcfg["checkpoint_interval"] = min(int(tcfg["checkpoint_interval"]), max_iters)
    tcfg["log_interval"] = max(1, min(int(tcfg["log_interval"]), max_iters // 5 or 1))


def lr_at(tcfg: dict[str, Any], it: int) -> float:
    """Learning rate of iteration ``it`` (0-based): linear warm-up, then constant or cosine to ``eta_min``.
    A closed form, so a resumed run needs no scheduler state."""
    base, warm = float(tcfg["lr"]), int(tcfg["warmup_iters"])
    if it < warm:
        factor = float(tcfg["warmup_factor"])
        return base * (factor + (1.0 - factor) * it / warm)
    if tcfg["decay"] == "cosine":
        span = max(1, int(tcfg["max_iters"]) - warm)
        eta = float(tcfg["eta_min"])
        return eta + (base - eta) * (1 + math.cos(math.pi * min(it - warm, span) / span)) / 2
    return base


# -- model -------------------------------------------------------------------------------------
def _norm(kind: str, groups: int):
    import torch.nn as nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    if kind == "gn":
        return lambda channels: nn.GroupNorm(min(groups, channels), channels)
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    return None


def _resnet(depth: int, base: int, norm_layer):
    """torchvision's ResNet layout (same parameter names, so torchvision checkpoints load) with any stem width:
    torchvision's own class fixes it at 64, which rules out the quarter-width `tiny` backbone."""
    import torch.nn as nn
    from torchvision.models.resnet import BasicBlock, Bottleneck

    block = BasicBlock if DEPTHS[depth][0] == "basic" else Bottleneck
    body = nn.Module()
    body.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
    body.bn1 = norm_layer(base)
    body.relu = nn.ReLU(inplace=True)
    body.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = base
    for i, blocks in enumerate(DEPTHS[depth][1]):
        planes, stride = base * 2 ** i, 1 if i == 0 else 2
        down = None
        if stride != 1 or inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                 norm_layer(planes * block.expansion))
        layers = [block(inplanes, planes, stride, down, norm_layer=norm_layer)]
        inplanes = planes * block.expansion
        layers += [block(inplanes, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
        setattr(body, f"layer{i + 1}", nn.Sequential(*layers))
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return body, [base * 2 ** i * block.expansion for i in range(4)]


def build_model(cfg: dict[str, Any], num_classes: int, score_thr: float = 0.05):
    """Mask R-CNN from a resolved config; ``num_classes`` excludes the background."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    groups = int(cfg["gn_groups"])
    bb, fpn, rpn, roi = cfg["backbone"], cfg["fpn"], cfg["rpn"], cfg["roi"]
    body, channels = _resnet(int(bb["depth"]), int(bb["base_channels"]), _norm(bb["norm"], groups))
    frozen = ["conv1", "bn1"] + [f"layer{i}" for i in range(1, int(bb["frozen_stages"]) + 1)]
    for name, param in body.named_parameters():
        if int(bb["frozen_stages"]) >= 0 and name.split(".")[0] in frozen:
            param.requires_grad_(False)
    width = int(fpn["out_channels"])
    backbone = BackboneWithFPN(body, {f"layer{i + 1}": str(i) for i in range(4)}, channels, width,
                               norm_layer=_norm(fpn["norm"], groups))
    anchors = AnchorGenerator(tuple((int(s),) for s in rpn["anchor_sizes"]),
                              (tuple(float(r) for r in rpn["aspect_ratios"]),) * len(rpn["anchor_sizes"]))
    levels = ["0", "1", "2", "3"]
    sampling = int(roi["sampling_ratio"])
    fc = int(roi["box_fc_channels"])
    mask_ch = int(roi["mask_channels"])
    size = int(cfg["input"]["size"])
    return MaskRCNN(
        backbone, num_classes=None, min_size=size, max_size=size,
        size_divisible=int(cfg["input"]["size_divisor"]),
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        rpn_anchor_generator=anchors, rpn_head=RPNHead(width, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=int(rpn["pre_nms_top_n_train"]), rpn_pre_nms_top_n_test=int(rpn["pre_nms_top_n_test"]),
        rpn_post_nms_top_n_train=int(rpn["post_nms_top_n_train"]),
        rpn_post_nms_top_n_test=int(rpn["post_nms_top_n_test"]),
        rpn_nms_thresh=float(rpn["nms_thresh"]), rpn_fg_iou_thresh=float(rpn["fg_iou_thresh"]),
        rpn_bg_iou_thresh=float(rpn["bg_iou_thresh"]), rpn_batch_size_per_image=int(rpn["batch_size_per_image"]),
        rpn_positive_fraction=float(rpn["positive_fraction"]),
        box_roi_pool=MultiScaleRoIAlign(levels, 7, sampling),
        box_head=TwoMLPHead(width * 7 * 7, fc),
        box_predictor=FastRCNNPredictor(fc, num_classes + 1),
        box_score_thresh=score_thr, box_nms_thresh=float(roi["nms_thresh"]),
        box_detections_per_img=int(roi["detections_per_img"]),
        box_fg_iou_thresh=float(roi["fg_iou_thresh"]), box_bg_iou_thresh=float(roi["bg_iou_thresh"]),
        box_batch_size_per_image=int(roi["batch_size_per_image"]),
        box_positive_fraction=float(roi["positive_fraction"]),
        mask_roi_pool=MultiScaleRoIAlign(levels, 14, sampling),
        mask_head=MaskRCNNHeads(width, [mask_ch] * int(roi["mask_convs"]), 1,
                                norm_layer=_norm(roi["mask_norm"], groups)),
        mask_predictor=MaskRCNNPredictor(mask_ch, mask_ch, num_classes + 1),
    )


def load_init(model, init: str, say) -> None:
    """Start from a checkpoint (path or URL): tensors whose name and shape fit are loaded, the rest reported.

    A different class count leaves the heads' last layers at their fresh initialisation; a bare ResNet
    checkpoint (ImageNet) is matched under ``backbone.body.``."""
    import torch

    if "://" in init:
        try:
            ckpt = torch.hub.load_state_dict_from_url(init, map_location="cpu", weights_only=True, progress=False)
        except Exception as exc:  # network or unpickling: keep the first line
            raise HarnessError(f"{init}: could not load init checkpoint ({_first_line(exc)})") from None
    else:
        ckpt = checkpoints.load(init)
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict):
        raise HarnessError(f"{init}: not a state dict")
    own = model.state_dict()
    best: dict[str, Any] = {}
    for prefix in ("", "backbone.body."):
        named = {prefix + k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
        if sum(k in own for k in named) > sum(k in own for k in best):
            best = named
    fit = {k: v for k, v in best.items() if k in own and own[k].shape == v.shape}
    skipped = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in best.items()
               if k in own and own[k].shape != v.shape]
    if not fit:
        raise HarnessError(f"{init}: no tensor fits this model (is it a torchvision Mask R-CNN / ResNet checkpoint?)")
    model.load_state_dict(fit, strict=False)
    say(f"init from {init}: loaded {len(fit)}/{len(own)} tensors")
    if skipped:
        say(f"init: skipped {len(skipped)} tensors whose shape differs (class count): {'; '.join(skipped)}")


# -- data --------------------------------------------------------------------------------------
class TrainSet:
    """The annotated training images, drawn as an endless stream of seeded permutations: which images and flips
    an iteration sees is a function of (seed, iteration), so a resumed run continues the same sequence."""

    def __init__(self, data_dir: Path, coco: dict[str, Any], categories: list[dict], flip: dict | None, seed: int):
        by_image: dict[Any, list] = {im["id"]: [] for im in coco["images"]}
        for ann in coco["annotations"]:
            if not ann.get("iscrowd", 0):
                by_image[ann["image_id"]].append(ann)
        self.records = [(data_dir / im["file_name"], im, by_image[im["id"]])
                        for im in sorted(coco["images"], key=lambda im: im["id"]) if by_image[im["id"]]]
        if not self.records:
            raise HarnessError(f"{data_dir / 'train.json'}: no image has an annotation to train on")
        self.label = {c["id"]: i + 1 for i, c in enumerate(categories)}
        self.flip = {k: float(v) for k, v in (flip or {}).items() if v}
        self.seed = seed
        self._epoch = (-1, None)

    def __len__(self) -> int:
        return len(self.records)

    def _index(self, position: int) -> int:
        from harness.hashing import seed_from

        epoch, offset = divmod(position, len(self.records))
        if self._epoch[0] != epoch:
            self._epoch = (epoch, np.random.default_rng(seed_from(self.seed, "epoch", epoch)).permutation(len(self)))
        return int(self._epoch[1][offset])

    def batch(self, it: int, size: int, device) -> tuple[list, list[dict]]:
        images, targets = [], []
        for k in range(size):
            image, target = self.sample(self._index(it * size + k), self._flip(it, k))
            images.append(image.to(device))
            targets.append({key: v.to(device) for key, v in target.items()})
        return images, targets

    def _flip(self, it: int, k: int) -> str | None:
        from harness.hashing import seed_from

        if not self.flip:
            return None
        u = np.random.default_rng(seed_from(self.seed, "flip", it, k)).random()
        for direction, p in self.flip.items():
            if u < p:
                return direction
            u -= p
        return None

    def sample(self, index: int, flip: str | None):
        import torch

        from harness.imageio import read_image

        path, im, anns = self.records[index]
        image = read_image(path)
        h, w = image.shape[:2]
        masks = np.stack([_decode(a["segmentation"], h, w) for a in anns])
        labels = [self.label[a["category_id"]] for a in anns]
        if flip in ("horizontal", "diagonal"):
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        if flip in ("vertical", "diagonal"):
            image, masks = image[::-1], masks[:, ::-1]
        keep = masks.reshape(len(masks), -1).any(axis=1)
        masks = np.ascontiguousarray(masks[keep])
        boxes = np.zeros((len(masks), 4), dtype=np.float32)
        for i, m in enumerate(masks):
            ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        target = {"boxes": torch.from_numpy(boxes), "masks": torch.from_numpy(masks),
                  "labels": torch.tensor([lab for lab, k in zip(labels, keep) if k], dtype=torch.int64)}
        return _to_tensor(image, "cpu"), target


def frozen_train_mode(model) -> None:
    """Training-mode behaviour (proposal sampling, loss outputs) with every norm layer in eval mode, so batch
    norms use and keep their running statistics: what a frozen model's loss needs (GroupNorm has none)."""
    import torch

    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase):
            m.eval()


def _decode(segmentation, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(np.uint8)


def _to_tensor(image: np.ndarray, device):
    """uint8 HxW (grayscale) or HxWx3 (BGR) -> float RGB 3xHxW in [0, 1], as torchvision's detectors expect."""
    import torch

    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)
    return tensor.float().div_(255.0)


def _to_coco(image_id: int, out: dict, category_ids: list[int]) -> list[dict[str, Any]]:
    from pycocotools import mask as mask_utils

    boxes = out["boxes"].cpu().numpy()
    scores = out["scores"].cpu().numpy()
    labels = out["labels"].cpu().numpy()
    masks = (out["masks"][:, 0] > 0.5).byte().cpu().numpy()
    results = []
    for i in range(len(scores)):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        rle = mask_utils.encode(np.asfortranarray(masks[i]))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": int(image_id), "category_id": category_ids[int(labels[i]) - 1],
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(float(scores[i]), 5), "segmentation": rle})
    return results


def _fit(model, optimizer, data: "TrainSet", tcfg: dict[str, Any], start: int, seed: int, device: str, work: Path,
         say) -> list[float]:
    """The SGD loop from iteration ``start``; returns each iteration's seconds."""
    import torch

    from harness.hashing import seed_from

    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_iters, batch = int(tcfg["max_iters"]), int(tcfg["batch_size"])
    times: list[float] = []
    window: dict[str, list[float]] = {}
    for it in range(start, max_iters):
        tic = time.perf_counter()
        lr = lr_at(tcfg, it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(seed_from(seed, "iter", it))  # the samplers' draws, the same after a resume
        images, targets = data.batch(it, batch, device)
        losses = model(images, targets)
        loss = sum(losses.values())
        value = float(loss.detach())
        if not math.isfinite(value):
            raise HarnessError(f"segmenter 'tv-mask-rcnn': loss became {value} at iteration {it + 1} "
                               "(lower train.lr or set train.clip_grad_norm in the model config)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg["clip_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(params, float(tcfg["clip_grad_norm"]))
        optimizer.step()
        times.append(time.perf_counter() - tic)
        for key, v in [("loss", value), *((k, float(v.detach())) for k, v in losses.items())]:
            window.setdefault(key, []).append(v)
        done = it + 1
        if done % int(tcfg["log_interval"]) == 0 or done == max_iters:
            parts = " ".join(f"{k} {np.mean(v):.4f}" for k, v in window.items())
            say(f"iter {done}/{max_iters} lr {lr:.6f} {parts} s/it {np.mean(times[-len(window['loss']):]):.3f}")
            window = {}
        if done % int(tcfg["checkpoint_interval"]) == 0 or done == max_iters:
            checkpoints.save({"model": _cpu_state(model), "optimizer": optimizer.state_dict(), "iter": done},
                         work / CHECKPOINT)
    return times


def _resume(model, optimizer, path: Path) -> int:
    ckpt = checkpoints.load(path)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        return int(ckpt["iter"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise HarnessError(f"{path}: does not fit the model config ({_first_line(exc)}); "
                           f"delete {path.parent} to start over") from None


# -- checkpoints, devices, logs ----------------------------------------------------------------
def _cpu_state(model) -> dict[str, Any]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _train_stats(iters: int, start: int, times: list[float], device: str) -> dict[str, Any]:
    """Seconds per iteration of this run (first 5 excluded: warm-up costs), as the mmdet plugin reports."""
    stats: dict[str, Any] = {"iters": iters, "resumed_from": start, "device": device}
    if times:
        steady = np.asarray(times[min(5, len(times) // 2):])
        stats.update(s_per_iter=float(steady.mean()), s_per_iter_median=float(np.median(steady)),
                     timed_iters=int(len(steady)))
    return stats


def _logger(stream):
    def say(message: str) -> None:
        stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        stream.flush()
        log.info(message)

    return say


def _device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(setting).startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"segmenter 'tv-mask-rcnn': device '{setting}' requested but torch sees no CUDA device")
    return str(setting)


def _setup_torch(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(int(threads))
