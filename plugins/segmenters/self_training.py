"""Mean-teacher self-training on unlabelled target images (``train_on: {self_training: ...}``), for ``tv-mask-rcnn``
and ``mmdet-mask-rcnn``: one loop (``fit``), to which each segmenter gives its student's loss and its teacher's
detections as callables on image tensors, so both follow the same recipe on the same seeded streams.

The recipe of Unbiased Teacher, Adaptive Teacher and ALDI, fine-tuning a source model: every iteration an EMA
*teacher* predicts on weakly augmented unlabelled target images (the model config's flips only); its detections
scoring above ``threshold`` become pseudo-labels, boxes *and* masks (the teacher's mask probabilities pasted at
image size, thresholded at 0.5), for the *student* on strongly augmented copies of the same images. The strong
augmentation is photometric only (brightness, contrast, gamma, blur, noise, one erased patch), so pixels stay
where they were and the pseudo-masks stay aligned. Each iteration's loss is the student's on a labelled
source batch (strongly augmented too) plus ``weight`` times its loss on the pseudo-labelled target batch;
after the SGD step the teacher moves towards the student: teacher = share * teacher + (1 - share) * student.
The stage exports the teacher.

With ``pseudo_labels: false`` (ALDI's control) the target batch is not used: the same source batches, strong
augmentation and EMA, so the difference between the two rows is the pseudo-label loss alone.

Determinism: which images, flips and augmentation parameters an iteration sees are functions of (seed,
iteration), and ``torch.manual_seed`` is set per iteration, so a resumed training (its checkpoint holds student,
teacher, optimizer and iteration; the learning rate is a function of the iteration) equals an uninterrupted
one bit for bit, as the segmenters' plain trainings do.

``mmdet-mask-rcnn`` runs it outside mmengine's Runner: ``tv-mask-rcnn``'s ``TrainSet`` gives the labelled source
batches at image size (flips from the config's ``RandomFlip``), its ``loss_fn`` input path (a differentiable
resize, normalisation and padding) feeds both models, and the optimizer, gradient clip and learning rate per
iteration (``param_scheduler`` replayed) come from the model config.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness import checkpoints
from harness.errors import HarnessError
from harness.hashing import seed_from

#: the options of ``train_on: {self_training: {...}}`` and their defaults (``target`` is required)
OPTIONS: dict[str, Any] = {"target": None, "threshold": 0.7, "teacher_share": 0.99, "pseudo_labels": True,
                           "weight": 1.0}
#: the unlabelled target images of a self-training trainset (COCO images and categories, no annotations)
UNLABELLED = "unlabelled.json"
#: teacher mask probabilities at or above this are the pseudo-mask
MASK_THRESHOLD = 0.5


# -- the pieces --------------------------------------------------------------------------------
def pseudo_labels(detections: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Training targets from one image's teacher detections (torchvision's eval output: ``boxes`` Nx4,
    ``labels`` N, ``scores`` N, ``masks`` Nx1xHxW probabilities pasted at image size): the detections scoring
    above ``threshold``, masks thresholded at 0.5; a detection whose mask is then empty is dropped."""
    import torch

    keep = detections["scores"] > threshold
    masks = detections["masks"][keep]
    if masks.ndim == 4:
        masks = masks[:, 0]
    binary = masks >= MASK_THRESHOLD
    nonempty = binary.flatten(1).any(dim=1) if len(binary) else torch.zeros(0, dtype=torch.bool)
    masks = binary.to(torch.uint8)
    return {"boxes": detections["boxes"][keep][nonempty].detach().float(),
            "labels": detections["labels"][keep][nonempty].detach().to(torch.int64),
            "masks": masks[nonempty].detach()}


def ema_update(teacher, student, share: float) -> None:
    """teacher = share * teacher + (1 - share) * student, over every floating tensor of the state (parameters
    and buffers); integer buffers are copied."""
    import torch

    with torch.no_grad():
        own = student.state_dict()
        for key, t in teacher.state_dict().items():
            s = own[key]
            if t.dtype.is_floating_point:
                t.mul_(share).add_(s.to(t.device), alpha=1.0 - share)
            else:
                t.copy_(s)


def strong_augment(image, rng: np.random.Generator):
    """A photometric strong augmentation of a float RGB 3xHxW image in [0, 1]: no pixel moves, so masks of the
    unaugmented image still fit. Every parameter comes from ``rng`` (seeded per image and iteration)."""
    import torch
    from torchvision.transforms.functional import gaussian_blur

    x = image.clone()
    x = x * float(rng.uniform(0.6, 1.4))                                     # brightness
    mean = x.mean()
    x = (x - mean) * float(rng.uniform(0.6, 1.4)) + mean                      # contrast
    x = x.clamp(0, 1)
    if rng.random() < 0.5:                                                    # gamma
        x = x.pow(float(math.exp(rng.uniform(math.log(0.7), math.log(1.4)))))
    if rng.random() < 0.5:                                                    # blur
        sigma = float(rng.uniform(0.1, 2.0))
        x = gaussian_blur(x, [2 * math.ceil(3 * sigma) + 1] * 2, [sigma, sigma])
    if rng.random() < 0.5:                                                    # noise
        gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2 ** 62)))
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        x = x + noise * float(rng.uniform(0.01, 0.08))
    if rng.random() < 0.5:                                                    # one erased patch
        h, w = x.shape[1:]
        area = rng.uniform(0.02, 0.15) * h * w
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        ph = max(1, min(h, int(round(math.sqrt(area * aspect)))))
        pw = max(1, min(w, int(round(math.sqrt(area / aspect)))))
        y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        x[:, y0:y0 + ph, x0:x0 + pw] = float(rng.random())
    return x.clamp(0, 1)


def _rng(seed: int, *tags: Any) -> np.random.Generator:
    return np.random.default_rng(seed_from(seed, *tags))


class UnlabelledSet:
    """The unlabelled target images, drawn as an endless stream of seeded permutations like ``TrainSet``
    (their own stream: which target image an iteration sees is a function of (seed, iteration))."""

    def __init__(self, data_dir: Path, flip: dict | None, seed: int):
        import json

        path = Path(data_dir) / UNLABELLED
        if not path.is_file():
            raise HarnessError(f"{path}: no unlabelled target images (is {data_dir} a self-training trainset?)")
        images = sorted(json.loads(path.read_text())["images"], key=lambda im: im["id"])
        if not images:
            raise HarnessError(f"{path}: no unlabelled target image to self-train on")
        self.paths = [Path(data_dir) / im["file_name"] for im in images]
        self.flip = {k: float(v) for k, v in (flip or {}).items() if v}
        self.seed = seed
        self._epoch = (-1, None)

    def __len__(self) -> int:
        return len(self.paths)

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self))
        if self._epoch[0] != epoch:
            self._epoch = (epoch, _rng(self.seed, "target-epoch", epoch).permutation(len(self)))
        return int(self._epoch[1][offset])

    def _flip(self, it: int, k: int) -> str | None:
        if not self.flip:
            return None
        u = _rng(self.seed, "target-flip", it, k).random()
        for direction, p in self.flip.items():
            if u < p:
                return direction
            u -= p
        return None

    def batch(self, it: int, size: int, device) -> list:
        """The weakly augmented (flipped) images of iteration ``it``."""
        from harness.imageio import read_image
        from plugins.segmenters.tv_mask_rcnn import _to_tensor

        out = []
        for k in range(size):
            image = read_image(self.paths[self._index(it * size + k)])
            flip = self._flip(it, k)
            if flip in ("horizontal", "diagonal"):
                image = image[:, ::-1]
            if flip in ("vertical", "diagonal"):
                image = image[::-1]
            out.append(_to_tensor(np.ascontiguousarray(image), device))
        return out


# -- the loop ----------------------------------------------------------------------------------
def fit(student, teacher, optimizer, source, target: UnlabelledSet | None, tcfg: dict[str, Any],
        options: dict[str, Any], start: int, seed: int, device: str, work: Path, say, *,
        student_loss: Callable[[list, list[dict]], Any], teacher_detect: Callable[[list], list[dict]],
        lr_at: Callable[[int], float], name: str, checkpoint: str = "last.pth") -> tuple[list[float], list[int]]:
    """The self-training SGD loop from iteration ``start``, shared by the segmenters; returns each iteration's
    seconds and pseudo-label count. ``target`` may be None with ``pseudo_labels: false``.

    The segmenter gives its models (``student``, ``teacher``: modules, for train/eval modes, the EMA and the
    checkpoint), the torch ``optimizer`` of the student, and callables on float RGB 3xHxW images in [0, 1] at
    image size: ``student_loss(images, targets)``, the student's summed training loss (targets as
    ``TrainSet`` makes them: ``boxes`` xyxy, 1-based ``labels``, ``masks`` NxHxW uint8) and
    ``teacher_detect(images)``, the teacher's detections as ``pseudo_labels`` reads them; ``lr_at(it)`` is the
    learning rate of iteration ``it``, a function of the iteration alone so a resume needs no scheduler state.
    ``tcfg`` has ``max_iters``, ``batch_size``, ``clip_grad_norm``, ``log_interval``, ``checkpoint_interval``."""
    import torch

    from plugins.segmenters.tv_mask_rcnn import _cpu_state

    student.train()
    teacher.eval()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_iters, batch = int(tcfg["max_iters"]), int(tcfg["batch_size"])
    share, use_pseudo = float(options["teacher_share"]), bool(options["pseudo_labels"])
    threshold, weight = float(options.get("threshold", 1.0)), float(options.get("weight", 1.0))
    times: list[float] = []
    counts: list[int] = []
    window: dict[str, list[float]] = {}
    for it in range(start, max_iters):
        tic = time.perf_counter()
        lr = lr_at(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(seed_from(seed, "iter", it))  # the samplers' draws, the same after a resume
        images, targets = source.batch(it, batch, device)
        images = [strong_augment(im, _rng(seed, "source-strong", it, k)) for k, im in enumerate(images)]
        loss = student_loss(images, targets)
        logged = {"loss_source": float(loss.detach())}
        n_pseudo = 0
        if use_pseudo:
            weak = target.batch(it, batch, device)
            with torch.no_grad():
                pseudo = [pseudo_labels(d, threshold) for d in teacher_detect(weak)]
            n_pseudo = sum(len(p["labels"]) for p in pseudo)
            strong = [strong_augment(im, _rng(seed, "target-strong", it, k)) for k, im in enumerate(weak)]
            target_loss = student_loss(strong, [{k: v.to(device) for k, v in p.items()} for p in pseudo])
            logged["loss_target"] = float(target_loss.detach())
            loss = loss + weight * target_loss
        value = float(loss.detach())
        if not math.isfinite(value):
            raise HarnessError(f"segmenter '{name}': self-training loss became {value} at iteration {it + 1} "
                               "(lower train.lr, or the weight of the pseudo-label loss)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg["clip_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(params, float(tcfg["clip_grad_norm"]))
        optimizer.step()
        ema_update(teacher, student, share)
        times.append(time.perf_counter() - tic)
        counts.append(n_pseudo)
        for key, v in [("loss", value), *logged.items(), ("pseudo", n_pseudo / batch)]:
            window.setdefault(key, []).append(v)
        done = it + 1
        if done % int(tcfg["log_interval"]) == 0 or done == max_iters:
            parts = " ".join(f"{k} {np.mean(v):.4f}" for k, v in window.items())
            say(f"iter {done}/{max_iters} lr {lr:.6f} {parts} s/it {np.mean(times[-len(window['loss']):]):.3f}")
            window = {}
        if done % int(tcfg["checkpoint_interval"]) == 0 or done == max_iters:
            checkpoints.save({"model": _cpu_state(student), "teacher": _cpu_state(teacher),
                              "optimizer": optimizer.state_dict(), "iter": done}, work / checkpoint)
    return times, counts


def begin(student, teacher, optimizer, work: Path, checkpoint: str, init: str | None, load_init, name: str,
          say) -> int:
    """The iteration a self-training starts at: its last checkpoint's when ``work`` holds one (student, teacher
    and optimizer restored), else 0 with the student loaded from ``init`` (``load_init(init)``) and the teacher
    a copy of it. Self-training fine-tunes a source model, so there must be an ``init``."""
    import copy

    from harness import atomic

    atomic.remove_leftovers(work)
    if (work / checkpoint).is_file():
        start = resume(student, teacher, optimizer, work / checkpoint)
        say(f"resumed from {work / checkpoint} at iteration {start}")
        return start
    if not init:
        raise HarnessError(f"segmenter '{name}': self-training fine-tunes a source model: give the entry "
                           "init: {segmenter: LABEL}")
    load_init(init)
    teacher.load_state_dict(copy.deepcopy(student.state_dict()))
    return 0


def resume(student, teacher, optimizer, path: Path) -> int:
    ckpt = checkpoints.load(path)
    try:
        student.load_state_dict(ckpt["model"])
        teacher.load_state_dict(ckpt["teacher"])
        optimizer.load_state_dict(ckpt["optimizer"])
        return int(ckpt["iter"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HarnessError(f"{path}: not a self-training checkpoint of this model config ({first}); "
                           f"delete {path.parent} to start over") from None
