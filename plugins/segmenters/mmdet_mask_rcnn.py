"""MMDetection Mask R-CNN as a harness segmenter.

The model is a config file under ``configs/mmdet/`` (one per profile); this module only fills in the
data, the number of classes and the schedule overrides, runs mmengine's Runner, and exports a slim
checkpoint (weights + config) that loads under ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.interfaces import Segmenter
from plugins.segmenters import fastpredict, features, mmengine_resume, train_stats
from plugins.segmenters.amp import autocast

CONFIG_DIR = Path(os.environ.get("HARNESS_CONFIGS", Path(__file__).resolve().parents[2] / "configs")) / "mmdet"
PROFILE_CONFIGS = {
    "seed": "mask-rcnn_r50_fpn_seed.py",
    "cpu": "mask-rcnn_r18_fpn_gn_cpu.py",
    "tiny": "mask-rcnn_tiny.py",
}


class MMDetMaskRCNN(Segmenter):
    """Mask R-CNN (MMDetection 3.3); the model is a config file, one per profile."""

    name = "mmdet-mask-rcnn"
    version = "1"
    captures_features = True
    profiles = {
        "seed": "R50-FPN, the seed's schedule: SGD lr 0.00025, batch 4, 5000 it, 640 px (GPU; wants --init COCO)",
        "cpu": "R18-FPN + GroupNorm from scratch, 2600 it at 200 px: <= 60 min on 2 CPU cores",
        "tiny": "quarter-width R18-FPN, 1000 it at 128 px (8-17 min on 2 cores): the embedded demo and tests",
    }
    params = {
        "config": None,       # a user's own MMDetection config file, replacing the profile's
        "max_iters": None,    # override the profile's schedule length (tests, quick looks)
        "batch_size": None,
        "device": "auto",     # auto | cpu | cuda | cuda:N
        "threads": None,      # torch CPU threads; default: all cores
        "score_thr": 0.05,
        "predict_batch": 8,
        "amp": False,         # float16 autocast for inference on a GPU (faster; ignored on CPU)
        # prediction options that change the detections (off by default; benchmarks/RESULTS.md has their ΔAP)
        "rpn_proposals": None,  # proposals kept per image after the RPN's NMS; default: the model config's
        "max_per_img": None,    # detections kept per image; default: the model config's
        "bf16": False,          # bfloat16 autocast of the networks (CPU or GPU)
        "checkpoint_interval": None,  # iterations between resume checkpoints; default: the profile's
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
            path = Path(self.config["config"])
        else:
            self.check_profile(profile)
            path = CONFIG_DIR / PROFILE_CONFIGS[profile]
        if not path.is_file():
            raise HarnessError(f"{path}: MMDetection config not found (set HARNESS_CONFIGS to the configs/ folder)")
        return path

    def model_fingerprint(self, profile: str) -> str:
        """The resolved config (its _base_ chain included), not the file path, defines the model."""
        from mmengine.config import Config

        from harness.hashing import stable_hash

        return stable_hash(Config.fromfile(str(self.config_path(profile))).to_dict())

    def build_config(self, profile: str, data_dir: Path, classes: list[str], work_dir: Path, seed: int,
                     init: str | None):
        from mmengine.config import Config

        cfg = Config.fromfile(str(self.config_path(profile)))
        cfg.work_dir = str(work_dir)
        cfg.randomness = dict(seed=seed, deterministic=False)
        ds = cfg.train_dataloader.dataset
        ds.data_root = str(data_dir)
        ds.ann_file = "train.json"
        ds.data_prefix = dict(img="")
        ds.metainfo = dict(classes=tuple(classes))
        cfg.model.roi_head.bbox_head.num_classes = len(classes)
        cfg.model.roi_head.mask_head.num_classes = len(classes)
        if self.config["max_iters"]:
            _rescale_schedule(cfg, int(self.config["max_iters"]))
        if self.config["batch_size"]:
            cfg.train_dataloader.batch_size = int(self.config["batch_size"])
        if self.config["checkpoint_interval"]:
            cfg.default_hooks.checkpoint.interval = int(self.config["checkpoint_interval"])
        cfg.load_from = init
        cfg.resume = False
        for key in ("val_dataloader", "val_evaluator", "val_cfg", "test_dataloader", "test_evaluator", "test_cfg"):
            cfg.pop(key, None)
        mmengine_resume.configure(cfg)
        return cfg

    # -- training ------------------------------------------------------------------------------
    def train(self, data_dir: Path, out_dir: Path, profile: str, seed: int, init: str | None = None) -> None:
        from harness.checkpoints import allow_mmengine_checkpoints
        from harness.data.coco import load_coco

        _setup_torch(self.config["threads"])
        allow_mmengine_checkpoints()
        from mmdet.utils import register_all_modules
        from mmengine.runner import Runner

        register_all_modules(init_default_scope=True)
        data_dir, out_dir = Path(data_dir), Path(out_dir)
        classes = [c["name"] for c in sorted(load_coco(data_dir / "train.json")["categories"], key=lambda c: c["id"])]
        work_dir = out_dir / "work"
        cfg = self.build_config(profile, data_dir, classes, work_dir, seed, init)
        cfg.device = _device(self.config["device"])
        runner = Runner.from_cfg(mmengine_resume.resuming(cfg, work_dir))
        runner.train()
        self._export(runner.model, cfg, classes, out_dir)
        stats = {**_train_stats(runner), **self._schedule(profile, cfg)}
        (out_dir / "train_stats.json").write_text(json.dumps(stats, indent=1))

    def _schedule(self, profile: str, cfg) -> dict[str, Any]:
        """What the budget table needs beside the iterations done: the profile's own schedule (before
        ``max_iters``), the batch, the training input side (the Resize scale) and the device."""
        from mmengine.config import Config

        resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.get("type") == "Resize" and "scale" in t]
        return {"schedule_iters": int(Config.fromfile(str(self.config_path(profile))).train_cfg.max_iters),
                "batch_size": int(cfg.train_dataloader.batch_size),
                "input_size": int(max(resize[0]["scale"])) if resize else None, "device": str(cfg.device)}

    def budget(self, out_dir: Path) -> dict[str, Any] | None:
        return train_stats.budget(out_dir, self.loss_log(out_dir))

    @classmethod
    def loss_log(cls, out_dir: Path):
        """mmengine's logged scalars of a training; self-training (its own loop) logs to ``work/train.log``."""
        work = Path(out_dir) / "work"
        log = train_stats.mmengine_losses(work)
        return log if log is not None else train_stats.text_log_losses(work / "train.log")

    #: implements ``train_on: {self_training: ...}`` (harness.config refuses it for segmenters without ``self_train``)
    def self_train(self, data_dir: Path, out_dir: Path, profile: str, seed: int, init: str | None,
                   options: dict[str, Any]) -> None:
        """Mean-teacher self-training from ``init``, the recipe, loop and outputs of ``tv-mask-rcnn``'s
        (``plugins/segmenters/self_training.py``): student and EMA teacher are two models of the profile's config,
        fed through the differentiable input path of ``loss_fn`` instead of mmengine's Runner (whose data
        pipeline knows no unlabelled stream), with the config's optimizer, gradient clip, learning-rate schedule
        and flips; exports the teacher."""
        import copy

        import torch
        from mmengine.optim import build_optim_wrapper

        from harness import checkpoints
        from harness.data.coco import load_coco, write_json_atomic
        from harness.hashing import seed_from
        from plugins.segmenters import self_training as st
        from plugins.segmenters.tv_mask_rcnn import CHECKPOINT, TrainSet, _logger, _train_stats

        _setup_torch(self.config["threads"])
        checkpoints.allow_mmengine_checkpoints()
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules

        register_all_modules(init_default_scope=True)
        data_dir, out_dir = Path(data_dir), Path(out_dir)
        coco = load_coco(data_dir / "train.json")
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        classes = [c["name"] for c in categories]
        work = out_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        cfg = self.build_config(profile, data_dir, classes, work, seed, init)
        cfg.device = device = _device(self.config["device"])
        where = str(self.config_path(profile))
        pipeline = cfg.train_dataloader.dataset.pipeline
        flip = _flips(pipeline, where)
        data = TrainSet(data_dir, coco, categories, flip, seed)
        target = st.UnlabelledSet(data_dir, flip, seed) if options["pseudo_labels"] else None
        torch.manual_seed(seed_from(seed, "init"))
        student = MODELS.build(cfg.model).to(device)
        teacher_cfg = copy.deepcopy(cfg.model)
        teacher_cfg.test_cfg.rcnn.score_thr = float(options.get("threshold", 0.05))
        teacher = MODELS.build(teacher_cfg).to(device)
        for p in teacher.parameters():
            p.requires_grad_(False)
        optimizer = build_optim_wrapper(student, cfg.optim_wrapper).optimizer
        lrs = _lr_schedule(cfg, where)
        tcfg = {"max_iters": int(cfg.train_cfg.max_iters), "batch_size": int(cfg.train_dataloader.batch_size),
                "clip_grad_norm": _clip_norm(cfg, where), "log_interval": int(cfg.default_hooks.logger.interval),
                "checkpoint_interval": int(cfg.default_hooks.checkpoint.interval)}
        train_scale = _resize_scale(pipeline)
        test_scale = _resize_scale(cfg.get("test_pipeline") or pipeline)
        with open(work / "train.log", "a") as logfile:
            say = _logger(logfile)
            start = st.begin(student, teacher, optimizer, work, CHECKPOINT, init,
                             lambda path: _load_weights(student, path), self.name, say)
            batch = tcfg["batch_size"]
            say(f"self-training {self.name} ({profile}) on {device}: {len(data)} labelled source images, "
                f"{len(target) if target else 0} unlabelled target images, iterations {start} -> "
                f"{tcfg['max_iters']}, batch {batch} + {batch}, options {options}")
            times, counts = st.fit(
                student, teacher, optimizer, data, target, tcfg, options, start, seed, device, work, say,
                student_loss=lambda ims, tgts: model_loss(student, ims, tgts, train_scale, rgb=True),
                teacher_detect=lambda ims: _detect(teacher, ims, test_scale), lr_at=lrs.__getitem__,
                name=self.name, checkpoint=CHECKPOINT)
        self._export(teacher, cfg, classes, out_dir)
        per_image = float(np.mean(counts)) / batch if counts else None
        stats = {**_train_stats(max(start, tcfg["max_iters"]), start, times, device), **self._schedule(profile, cfg),
                 "self_training": {**options, "exported": "teacher", "pseudo_labels_per_image": per_image}}
        write_json_atomic(out_dir / "train_stats.json", stats, indent=1)

    def _export(self, model, cfg, classes: list[str], out_dir: Path) -> None:
        from harness import checkpoints

        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        checkpoints.save({"state_dict": state, "meta": {"classes": list(classes), "harness_segmenter": self.name}},
                         out_dir / "model.pth")
        cfg.dump(str(out_dir / "config.py"))
        (out_dir / "classes.json").write_text(json.dumps(classes))

    # -- prediction ----------------------------------------------------------------------------
    def load_model(self, model_dir: Path):
        from harness import checkpoints

        _setup_torch(self.config["threads"])
        from mmdet.utils import register_all_modules
        from mmdet.registry import MODELS
        from mmengine.config import Config

        register_all_modules(init_default_scope=True)
        model_dir = Path(model_dir)
        cfg = Config.fromfile(str(model_dir / "config.py"))
        cfg.model.test_cfg.rcnn.score_thr = float(self.config["score_thr"])
        if self.config["rpn_proposals"]:
            cfg.model.test_cfg.rpn.max_per_img = int(self.config["rpn_proposals"])
        if self.config["max_per_img"]:
            cfg.model.test_cfg.rcnn.max_per_img = int(self.config["max_per_img"])
        model = MODELS.build(cfg.model)
        ckpt = checkpoints.load(model_dir / "model.pth", mmengine=True)
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
        if missing or unexpected:
            raise HarnessError(f"{model_dir / 'model.pth'}: weights do not fit config.py "
                               f"(missing {len(missing)}, unexpected {len(unexpected)})")
        model.cfg = cfg
        model.to(_device(self.config["device"])).eval()
        return model, cfg

    def loss_fn(self, model_dir: Path, device):
        """``Segmenter.loss_fn``: ``model.loss`` (RPN + box + mask, summed as mmengine's ``parse_losses`` does) on
        inputs made as the training pipeline and data preprocessor make them, but differentiably: a bilinear
        resize to the pipeline's ``Resize`` scale, the preprocessor's channel order, mean and std, and its padding
        to ``pad_size_divisor``. Every weight is frozen and the norm layers stay in eval mode."""
        from plugins.segmenters.tv_mask_rcnn import frozen_train_mode

        model, cfg = self.load_model(model_dir)
        model.to(device)
        for param in model.parameters():
            param.requires_grad_(False)
        scale = _resize_scale(cfg.get("train_pipeline") or cfg.train_dataloader.dataset.pipeline)

        def loss(images, targets):
            frozen_train_mode(model)
            total = model_loss(model, list(images), targets, scale, rgb=False)
            model.eval()
            return total

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
        model, cfg = self.load_model(model_dir)
        batch = max(1, int(self.config["predict_batch"]))
        with features.mmdet_hooks(model, tap):
            if not reference and fastpredict.mmdet_supported(model) is None:
                return fastpredict.mmdet_predict(model, cfg, images, Path(image_root), batch, self.config["bf16"],
                                                 progress)
            return self._reference_records(model, cfg, images, Path(image_root), batch, progress)

    def _reference_records(self, model, cfg, images: list[dict], image_root: Path, batch: int,
                           progress: bool) -> list[dict[str, Any]]:
        """mmdet's own test_step, batch by batch into COCO records: the GPU path and the CPU path's reference."""
        import torch
        from mmcv.transforms import Compose
        from mmengine.dataset import pseudo_collate
        from pycocotools import mask as mask_utils
        from tqdm import tqdm

        pipeline = Compose(cfg.test_pipeline)
        device = next(model.parameters()).device
        results: list[dict[str, Any]] = []
        bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress)
        with (torch.inference_mode(), autocast(self.config["amp"], model),
              fastpredict.bf16_autocast(self.config["bf16"], device),
              fastpredict.bf16_boundaries(self.config["bf16"], **fastpredict.mmdet_bf16(model))):
            for start in range(0, len(images), batch):
                chunk = images[start:start + batch]
                data = []
                for rec in chunk:
                    path = image_root / rec["file_name"]
                    if not path.is_file():
                        raise HarnessError(f"{path}: image not found")
                    data.append(pipeline(dict(img_path=str(path), img_id=rec["id"])))
                for rec, sample in zip(chunk, model.test_step(pseudo_collate(data))):
                    results.extend(_to_coco(rec["id"], sample.pred_instances, mask_utils))
                bar.update(len(chunk))
        bar.close()
        return results


# -- the differentiable input path (loss_fn, self-training) -------------------------------------
def _resize_scale(pipeline) -> tuple[int, int] | None:
    resize = [t for t in pipeline if t.get("type") == "Resize" and "scale" in t]
    return tuple(resize[0]["scale"]) if resize else None


def _batch(model, images: list, targets: list[dict] | None, scale: tuple[int, int] | None, rgb: bool):
    """mmdet's (inputs, data samples) from float 3xHxW (or 1xHxW gray) images in [0, 1], RGB if ``rgb`` else
    BGR, as the pipeline and data preprocessor make them but differentiably: a bilinear resize to ``scale``
    (mmcv's keep-ratio rule), the preprocessor's channel order, mean and std, and its padding of the batch to
    ``pad_size_divisor``; ``targets`` (boxes xyxy at image size, 1-based labels, masks NxHxW) follow the resize."""
    import torch
    import torch.nn.functional as F
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    pre = model.data_preprocessor
    divisor = int(getattr(pre, "pad_size_divisor", 1) or 1)
    inputs, metas = [], []
    for image in images:
        x = image * 255.0
        x = x.expand(3, -1, -1) if x.shape[0] == 1 else (x.flip(0) if pre._channel_conversion != rgb else x)
        h, w = x.shape[-2:]
        factor = 1.0
        if scale is not None:  # mmcv's keep_ratio rescale: fit the long side and the short side
            factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
        nh, nw = int(h * factor + 0.5), int(w * factor + 0.5)
        if (nh, nw) != (h, w):
            x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        if pre._enable_normalize:
            x = (x - pre.mean.to(x)) / pre.std.to(x)
        inputs.append(x)
        metas.append({"img_shape": (nh, nw), "ori_shape": (h, w), "scale_factor": (nw / w, nh / h),
                      "pad_shape": (-(-nh // divisor) * divisor, -(-nw // divisor) * divisor)})
    bh, bw = (max(m["pad_shape"][i] for m in metas) for i in (0, 1))
    x = torch.stack([F.pad(im, (0, bw - im.shape[-1], 0, bh - im.shape[-2]), value=float(pre.pad_value))
                     for im in inputs])
    samples = []
    for k, meta in enumerate(metas):
        sample = DetDataSample(metainfo={**meta, "batch_input_shape": (bh, bw)})
        if targets is not None:
            t, (h, w), (nh, nw) = targets[k], meta["ori_shape"], meta["img_shape"]
            masks = t["masks"].to(torch.uint8).reshape(-1, h, w)
            if (nh, nw) != (h, w) and len(masks):
                masks = F.interpolate(masks[:, None].float(), size=(nh, nw), mode="nearest")[:, 0].to(torch.uint8)
            sx, sy = meta["scale_factor"]
            sample.gt_instances = InstanceData(
                bboxes=t["boxes"].to(x.dtype).reshape(-1, 4) * x.new_tensor([sx, sy, sx, sy]),
                labels=torch.as_tensor(t["labels"], dtype=torch.int64, device=x.device) - 1,
                masks=BitmapMasks(masks.cpu().numpy(), nh, nw).pad((bh, bw), pad_val=0))
        samples.append(sample)
    return x, samples


def model_loss(model, images: list, targets: list[dict], scale: tuple[int, int] | None, rgb: bool):
    """``model.loss`` (RPN + box + mask) on ``_batch``'s inputs, summed as mmengine's ``parse_losses`` does: the
    frozen model's loss of ``loss_fn`` and the student's of self-training. Leaves the model's mode as it is."""
    losses = model.loss(*_batch(model, images, targets, scale, rgb))
    total = 0
    for key, value in losses.items():
        if "loss" in key:
            total = total + (sum(v.mean() for v in value) if isinstance(value, (list, tuple)) else value.mean())
    return total


def _detect(model, images: list, scale: tuple[int, int] | None) -> list[dict[str, Any]]:
    """The teacher's detections on RGB images, in torchvision's eval format (what ``self_training.pseudo_labels``
    reads): boxes and binary masks at image size, 1-based labels."""
    out = []
    for sample in model.predict(*_batch(model, images, None, scale, rgb=True), rescale=True):
        inst = sample.pred_instances
        out.append({"boxes": inst.bboxes, "labels": inst.labels + 1, "scores": inst.scores,
                    "masks": inst.masks.float()})
    return out


def _flips(pipeline, where: str) -> dict[str, float]:
    """The train pipeline's ``RandomFlip`` as ``{direction: probability}``, read as mmcv reads it (a single
    ``prob`` is shared out evenly over the directions)."""
    for t in pipeline:
        if t.get("type") != "RandomFlip" or not t.get("prob"):
            continue
        direction = t.get("direction", "horizontal")
        directions = [direction] if isinstance(direction, str) else list(direction)
        prob = t["prob"]
        probs = list(prob) if isinstance(prob, (list, tuple)) else [float(prob) / len(directions)] * len(directions)
        if len(probs) != len(directions) or set(directions) - {"horizontal", "vertical", "diagonal"}:
            raise HarnessError(f"{where}: RandomFlip needs one prob per direction among horizontal, vertical, "
                               "diagonal")
        return {d: float(p) for d, p in zip(directions, probs)}
    return {}


def _lr_schedule(cfg, where: str) -> list[float]:
    """Each iteration's learning rate as mmengine's Runner sets it: the config's ``param_scheduler`` stepped on a
    one-parameter optimiser, so it is a function of the iteration and a resume needs no scheduler state."""
    import torch
    from mmengine.registry import PARAM_SCHEDULERS

    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(cfg.optim_wrapper.optimizer.lr))
    specs = cfg.get("param_scheduler") or []
    schedulers = []
    for i, spec in enumerate([specs] if isinstance(specs, dict) else specs):
        if spec.get("by_epoch", True):
            raise HarnessError(f"{where}: param_scheduler[{i}] counts epochs; self-training counts iterations "
                               "(by_epoch=False)")
        scheduler = PARAM_SCHEDULERS.build(dict(spec), default_args=dict(optimizer=dummy))
        if scheduler.param_name != "lr":
            raise HarnessError(f"{where}: param_scheduler[{i}] schedules '{scheduler.param_name}'; self-training "
                               "schedules the learning rate only")
        schedulers.append(scheduler)
    lrs = []
    for _ in range(int(cfg.train_cfg.max_iters)):
        lrs.append(float(dummy.param_groups[0]["lr"]))
        dummy.step()
        for scheduler in schedulers:
            scheduler.step()
    return lrs


def _clip_norm(cfg, where: str) -> float | None:
    clip = cfg.optim_wrapper.get("clip_grad")
    if not clip:
        return None
    if clip.get("type", "norm") != "norm" or float(clip.get("norm_type", 2)) != 2:
        raise HarnessError(f"{where}: optim_wrapper.clip_grad: self-training clips the L2 norm only "
                           "(norm_type=2)")
    return float(clip["max_norm"])


def _load_weights(model, init: str) -> None:
    """``init``'s weights (a slim export or an mmengine checkpoint), every tensor of the model."""
    from harness import checkpoints

    if "://" in init:
        raise HarnessError(f"{init}: self-training starts from a local checkpoint (a trained model.pth)")
    ckpt = checkpoints.load(init, mmengine=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise HarnessError(f"{init}: not a state dict")
    own = model.state_dict()
    bad = [k for k, v in state.items() if k in own and getattr(v, "shape", None) != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if bad or missing or unexpected:
        raise HarnessError(f"{init}: weights do not fit this model config (missing {len(missing)}, unexpected "
                           f"{len(unexpected)}, other shape {len(bad)})")
    model.load_state_dict(state)


def _to_coco(image_id: int, inst, mask_utils) -> list[dict[str, Any]]:
    boxes = inst.bboxes.cpu().numpy()
    scores = inst.scores.cpu().numpy()
    labels = inst.labels.cpu().numpy()
    masks = inst.masks.cpu().numpy().astype(np.uint8) if "masks" in inst else None
    out = []
    for i in range(len(scores)):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        rec = {"image_id": int(image_id), "category_id": int(labels[i]) + 1,
               "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
               "score": round(float(scores[i]), 5)}
        if masks is not None:
            rle = mask_utils.encode(np.asfortranarray(masks[i]))
            rle["counts"] = rle["counts"].decode("ascii")
            rec["segmentation"] = rle
        out.append(rec)
    return out


def _train_stats(runner) -> dict[str, Any]:
    """Seconds per iteration from mmengine's own timer (first iterations excluded: warm-up costs)."""
    stats: dict[str, Any] = {"iters": runner.iter}
    hub = runner.message_hub
    if "train/time" in hub.log_scalars:
        times = np.asarray(hub.log_scalars["train/time"].data[0], dtype=float)
        steady = times[min(5, len(times) // 2):]
        stats.update(s_per_iter=float(steady.mean()), s_per_iter_median=float(np.median(steady)),
                     timed_iters=int(len(steady)))
    return stats


def _rescale_schedule(cfg, max_iters: int) -> None:
    """Shorten or lengthen a schedule while keeping its shape (warm-up and decay scale with it)."""
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = max_iters
    for sched in cfg.param_scheduler:
        for key in ("begin", "end", "T_max"):
            if key in sched:
                sched[key] = max(1 if key != "begin" else 0, round(sched[key] * max_iters / old))
    hooks = cfg.default_hooks
    hooks.checkpoint.interval = min(hooks.checkpoint.interval, max_iters)
    hooks.logger.interval = max(1, min(hooks.logger.interval, max_iters // 5 or 1))


def _device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _setup_torch(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    logging.getLogger("mmengine").setLevel(logging.WARNING)
