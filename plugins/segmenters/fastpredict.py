"""Prediction for the built-in segmenters on a CPU: the arithmetic of the models' own predict code, less of what is
not arithmetic.

A profile of `harness predict` with a short-trained `cpu` mmdet model (27 detections per 200-px NEU-Seg image)
put the time outside the networks' convolutions and matrix products in: page faults (glibc unmaps every large
freed tensor, so each batch faulted its ~1 GB of fresh pages back in: 12 s of system time per 160 images); mmcv's
RoIAlign (single-threaded and holding the GIL: a quarter of the time); one core idle whenever a single-threaded
step ran (NMS, mask paste, RLE encoding, the Python between operators, image decoding); mmdet's per-mask paste
loop. Here:

- freed memory stays in the process while predicting (``reuse_freed_memory``);
- mmdet's RoIAlign runs as torchvision's kernel (the same Detectron2 algorithm, equal bit for bit, 1.8x faster,
  and it releases the GIL);
- two batches are in flight (``LANES``), each in its own thread with the caller's intra-op thread count, so that
  one keeps the cores busy while the other is in a single-threaded step. Measured against one batch at a time
  with the next batch's images read and the last one's masks pasted in helper threads, and against RoIAlign
  split over threads: two lanes were 10-15 % faster than both, and the split added nothing to them. (A worker
  thread allocates from its own glibc arena, which maps blocks over 64 MB afresh whatever the thresholds say:
  the mask head's largest tensors still fault; the overlap gains more than that costs.)
- mmdet's masks of an image are pasted by one ``grid_sample`` over the region their boxes span, and each
  image's masks are RLE-encoded by one pycocotools call.

What keeps the JSON byte-identical: an operator can round differently by the shape of its tensor, the position
of an element in it (vectorised body vs scalar tail of transcendental functions such as sigmoid and log2) and
the number of threads it splits over (matrix products, convolutions, reductions). Every such operator runs here on
the same tensors, batch for batch, with the same thread count as in the models' own code; what was moved, split
or merged is RoIAlign (each output element computed alone), elementwise + - * /, comparisons, indexing and
copies, which round the same anywhere. ``tests/test_predict_speed.py`` checks the JSON against the reference path
for both segmenters. Off a CPU, or for a model this module does not know, the plugins keep the reference path.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.errors import HarnessError


def check_options(plugin) -> None:
    """One-line errors for bad values of the output-changing prediction options (``rpn_proposals``,
    ``max_per_img``, ``bf16``, shared by both segmenters), raised when the plugin is built."""
    for key in ("rpn_proposals", "max_per_img"):
        value = plugin.config[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise HarnessError(f"segmenter '{plugin.name}': {key} must be a positive integer or null, got {value!r}")
    if not isinstance(plugin.config["bf16"], bool):
        raise HarnessError(f"segmenter '{plugin.name}': bf16 must be true or false, got {plugin.config['bf16']!r}")
    if plugin.config["bf16"] and plugin.config["amp"]:
        raise HarnessError(f"segmenter '{plugin.name}': amp (float16) and bf16 exclude each other")


def bf16_autocast(enabled: bool, device):
    """The ``bf16`` option: the networks under bfloat16 autocast (autocast is per thread: each lane enters it)."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def bf16_boundaries(enabled: bool, heads=(), poolers=()):
    """With ``bf16``, the outputs of ``heads`` (the modules whose results go to NMS, box decoding and mask
    pasting) are cast back to float32, which those steps expect, and so are the features entering ``poolers``
    (RoIAlign has no bfloat16 CPU kernel)."""
    handles = []
    if enabled:
        handles += [head.register_forward_hook(lambda module, args, output: _float32(output)) for head in heads]
        handles += [pool.register_forward_pre_hook(lambda module, args: _float32(args)) for pool in poolers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _float32(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _float32(v) for k, v in value.items()}
    return value


def mmdet_bf16(model) -> dict:
    """The modules ``bf16_boundaries`` needs of an mmdet Mask R-CNN."""
    head = model.roi_head
    return {"heads": (model.rpn_head, head.bbox_head, head.mask_head),
            "poolers": (head.bbox_roi_extractor, head.mask_roi_extractor)}


def tv_bf16(model) -> dict:
    """The modules ``bf16_boundaries`` needs of a torchvision Mask R-CNN."""
    heads = model.roi_heads
    return {"heads": (model.rpn.head, heads.box_predictor, heads.mask_predictor),
            "poolers": (heads.box_roi_pool, heads.mask_roi_pool)}


# -- memory ------------------------------------------------------------------------------------
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 2 ** 31 - 1, _M_TOP_PAD: 64 << 20}
#: where glibc's sliding thresholds settle once blocks of 32 MB or more have been freed, which any torch
#: workload does (mallopt cannot give the sliding back)
_SETTLED = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20, _M_TOP_PAD: 128 << 10}
_heap = {"lock": threading.Lock(), "depth": 0}


@contextlib.contextmanager
def reuse_freed_memory():
    """glibc hands a freed block over its mmap threshold (at most 32 MB) back to the kernel, and the next batch
    pays a page fault per 4 KB to get it again: 3.3 M faults and 12 s of system time per 160 images. While
    predicting, freed memory stays in the heap (blocks up to 1 GB come from it, and it is not trimmed); afterwards
    the thresholds are set to where glibc's own would be and the heap is trimmed. A no-op without glibc."""
    libc = _glibc()
    if libc is None:
        yield
        return
    with _heap["lock"]:
        if _heap["depth"] == 0:
            for option, value in _KEEP.items():
                libc.mallopt(option, value)
        _heap["depth"] += 1
    try:
        yield
    finally:
        with _heap["lock"]:
            _heap["depth"] -= 1
            if _heap["depth"] == 0:
                for option, value in _SETTLED.items():
                    libc.mallopt(option, value)
                libc.malloc_trim(0)


def _glibc():
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc if hasattr(libc, "gnu_get_libc_version") else None
    except (OSError, AttributeError):
        return None


# -- timing (benchmarks/inference.py reads it) -------------------------------------------------
class Parts:
    """Seconds spent per part of the pipeline; a no-op unless enabled."""

    def __init__(self, enabled: bool = False):
        self.enabled = enabled
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, part: str):
        if not self.enabled:
            yield
            return
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - tic

    @contextlib.contextmanager
    def excluding(self, outer: str, *modules, part: str):
        """The time spent in the forward of ``modules`` counts for ``part`` instead of ``outer``."""
        if not self.enabled:
            yield
            return
        started: dict[int, float] = {}

        def before(module, args):
            started[id(module)] = time.perf_counter()

        def after(module, args, output):
            spent = time.perf_counter() - started.pop(id(module))
            self.seconds[part] += spent
            self.seconds[outer] -= spent

        handles = [h for m in modules for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


# -- threads -----------------------------------------------------------------------------------
#: batches in flight at once, each in its own thread
LANES = 2
_local = threading.local()


def run_batches(chunks: list, fn: Callable, progress: bool) -> list:
    """``[fn(chunk) for chunk in chunks]``, ``LANES`` chunks at a time (one at a time in this thread when LANES is
    1 or torch has one thread: a process given one thread is meant to use one core)."""
    import torch
    from tqdm import tqdm

    threads = torch.get_num_threads()
    bar = tqdm(total=sum(len(c) for c in chunks), desc="predict", unit="img", disable=not progress)
    try:
        if LANES <= 1 or threads <= 1:
            out = []
            for chunk in chunks:
                out.append(_inference(threads, fn, chunk))
                bar.update(len(chunk))
            return out
        with ThreadPoolExecutor(LANES, thread_name_prefix="predict") as pool:
            futures = [pool.submit(_inference, threads, fn, chunk) for chunk in chunks]
            try:
                for future, chunk in zip(futures, chunks):
                    future.result()
                    bar.update(len(chunk))
            finally:
                for future in futures:
                    future.cancel()
            return [f.result() for f in futures]
    finally:
        bar.close()


def _inference(threads: int, fn: Callable, *args):
    """Grad mode is per thread, and so are OpenMP's and MKL's thread counts, which decide how an operator splits
    its work and therefore how it rounds: a worker thread enters inference mode and takes the caller's count."""
    import torch

    if getattr(_local, "threads", None) != threads:
        torch.set_num_threads(threads)
        _local.threads = threads
    with torch.inference_mode():
        return fn(*args)


# -- COCO records ------------------------------------------------------------------------------
def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """N x H x W 0/1 masks -> RLEs with str counts, one pycocotools call for all of them."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def coco_records(image_id: int, boxes: np.ndarray, scores: np.ndarray, category_ids: list[int],
                 rles: list[dict]) -> list[dict[str, Any]]:
    """The plugins' result records: xywh boxes rounded to 0.01 px, scores to 1e-5, keys in this order."""
    return [{"image_id": int(image_id), "category_id": int(category),
             "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
             "score": round(score, 5), "segmentation": rle}
            for (x1, y1, x2, y2), score, category, rle in zip(boxes.tolist(), scores.tolist(), category_ids, rles)]


# -- MMDetection -------------------------------------------------------------------------------
def mmdet_supported(model) -> str | None:
    """Why this module cannot run ``model`` (then the plugin keeps mmdet's own test_step), or None."""
    from mmcv.ops import RoIAlign
    from mmdet.models.detectors import TwoStageDetector
    from mmdet.models.roi_heads import StandardRoIHead
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead

    device = next(model.parameters()).device
    if device.type != "cpu":
        return f"device {device.type}"
    if not isinstance(model, TwoStageDetector) or type(model).predict is not TwoStageDetector.predict:
        return f"detector {type(model).__name__}"
    head = model.roi_head
    if type(head) is not StandardRoIHead or not head.with_mask or head.with_shared_head:
        return f"RoI head {type(head).__name__}"
    if type(head.mask_head) is not FCNMaskHead or head.mask_head.class_agnostic:
        return f"mask head {type(head.mask_head).__name__}"
    if head.test_cfg.get("mask_thr_binary", 0.5) < 0:
        return "mask_thr_binary < 0"
    for extractor in (head.bbox_roi_extractor, head.mask_roi_extractor):
        for layer in getattr(extractor, "roi_layers", [None]):
            if type(layer) is not RoIAlign or layer.pool_mode != "avg":
                return f"RoI layer {type(layer).__name__}"
    return None


def mmdet_predict(model, cfg, images: list[dict], image_root: Path, batch: int, bf16: bool, progress: bool,
                  parts: Parts | None = None) -> list[dict[str, Any]]:
    """COCO result records for ``images``, as mmdet's test_step + the plugin's reference ``_to_coco`` give them."""
    from mmcv.transforms import Compose
    from mmdet.structures.bbox import bbox2roi
    from mmengine.dataset import pseudo_collate

    parts = parts or Parts()
    head = model.roi_head
    pipeline = Compose(cfg.test_pipeline)
    device = next(model.parameters()).device
    threshold = float(head.test_cfg.mask_thr_binary)

    def run(chunk):
        with parts("io/decode"):
            data = []
            for rec in chunk:
                path = Path(image_root) / rec["file_name"]
                if not path.is_file():
                    raise HarnessError(f"{path}: image not found")
                data.append(pipeline(dict(img_path=str(path), img_id=rec["id"])))
            data = model.data_preprocessor(pseudo_collate(data), False)
        inputs, samples = data["inputs"], data["data_samples"]
        metas = [s.metainfo for s in samples]
        with bf16_autocast(bf16, device):
            with parts("backbone+fpn"):
                x = model.extract_feat(inputs)
            with parts("rpn"):
                proposals = model.rpn_head.predict(x, samples, rescale=False)
            with parts("box head"):
                dets = head.predict_bbox(x, metas, proposals, rcnn_test_cfg=head.test_cfg, rescale=False)
            with parts("mask head"):
                probs = _mmdet_mask_probs(head, x, dets, bbox2roi)
        out = []
        for rec, inst, prob, meta in zip(chunk, dets, probs, metas):
            if prob is None:
                continue
            with parts("post-processing"):
                bboxes = inst.bboxes / inst.bboxes.new_tensor(meta["scale_factor"]).repeat((1, 2))
                h, w = meta["ori_shape"][:2]
                masks = _paste_masks(prob, bboxes, int(h), int(w), threshold)
            with parts("rle encoding"):
                rles = encode_masks(masks)
                labels = (inst.labels.numpy() + 1).tolist()
                out.extend(coco_records(rec["id"], bboxes.numpy(), inst.scores.numpy(), labels, rles))
        return out

    chunks = [images[i:i + batch] for i in range(0, len(images), batch)]
    with reuse_freed_memory(), _torchvision_roi_align(head), bf16_boundaries(bf16, **mmdet_bf16(model)):
        return [rec for recs in run_batches(chunks, run, progress) for rec in recs]


@contextlib.contextmanager
def _torchvision_roi_align(head):
    """mmcv's RoIAlign layers of the model compute through torchvision's kernel while predicting."""
    from functools import partial

    from torchvision.ops import roi_align

    layers = [layer for extractor in (head.bbox_roi_extractor, head.mask_roi_extractor)
              for layer in extractor.roi_layers]
    for layer in layers:
        layer.forward = partial(_roi_align, roi_align, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _roi_align(roi_align, layer, features, rois):
    """mmcv's RoIAlign.forward for average pooling (``mmdet_supported`` checks it), by torchvision's kernel."""
    return roi_align(features, rois, layer.output_size, layer.spatial_scale, layer.sampling_ratio, layer.aligned)


def _mmdet_mask_probs(head, x, dets, bbox2roi) -> list:
    """Per image, the sigmoid mask of each detection's class (None for an image without detections): mmdet's
    StandardRoIHead.predict_mask and FCNMaskHead._predict_by_feat_single up to the paste, on the same tensors."""
    mask_rois = bbox2roi([d.bboxes for d in dets])
    if mask_rois.shape[0] == 0:
        return [None] * len(dets)
    preds = head._mask_forward(x, mask_rois)["mask_preds"].split([len(d) for d in dets], 0)
    out = []
    for pred, inst in zip(preds, dets):
        n = len(inst)
        if n == 0:
            out.append(None)
            continue
        out.append(pred.sigmoid()[range(n), inst.labels][:, None].float())
    return out


def _paste_masks(probs, boxes, img_h: int, img_w: int, threshold: float) -> np.ndarray:
    """mmdet's CPU paste (``_do_paste_mask`` one box at a time, over the box grown to whole pixels plus one) as one
    grid_sample over the region all boxes span: each pixel samples its own box's mask with the same arithmetic,
    and pixels outside that box's own region stay 0, as they do there."""
    import torch
    import torch.nn.functional as F

    n = probs.shape[0]
    lo = torch.clamp(boxes[:, :2].floor() - 1, min=0).to(torch.int32)
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=img_w).to(torch.int32)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=img_h).to(torch.int32)
    x0, y0 = lo[:, 0], lo[:, 1]
    rx0, ry0, rx1, ry1 = int(x0.min()), int(y0.min()), int(x1.max()), int(y1.max())
    masks = np.zeros((n, img_h, img_w), dtype=np.uint8)
    if rx1 <= rx0 or ry1 <= ry0:
        return masks
    bx0, by0, bx1, by1 = (boxes[:, i:i + 1] for i in range(4))
    cols = torch.arange(rx0, rx1, dtype=torch.int32)
    rows = torch.arange(ry0, ry1, dtype=torch.int32)
    gx = (cols.to(torch.float32) + 0.5 - bx0) / (bx1 - bx0) * 2 - 1
    gy = (rows.to(torch.float32) + 0.5 - by0) / (by1 - by0) * 2 - 1
    gx = torch.where(torch.isinf(gx), 0, gx)
    gy = torch.where(torch.isinf(gy), 0, gy)
    h, w = ry1 - ry0, rx1 - rx0
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=3)
    sampled = F.grid_sample(probs, grid, align_corners=False)[:, 0] >= threshold
    inside = (((cols >= x0[:, None]) & (cols < x1[:, None]))[:, None, :]
              & ((rows >= y0[:, None]) & (rows < y1[:, None]))[:, :, None])
    masks[:, ry0:ry1, rx0:rx1] = (sampled & inside).numpy()
    return masks


# -- torchvision -------------------------------------------------------------------------------
def tv_supported(model) -> str | None:
    """Why this module cannot run ``model`` (then the plugin keeps the model's own forward), or None."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.ops import MultiScaleRoIAlign

    device = next(model.parameters()).device
    if device.type != "cpu":
        return f"device {device.type}"
    if not isinstance(model, GeneralizedRCNN) or type(model).forward is not GeneralizedRCNN.forward:
        return f"detector {type(model).__name__}"
    heads = model.roi_heads
    if not heads.has_mask() or heads.has_keypoint():
        return "RoI heads without masks or with keypoints"
    if not all(type(p) is MultiScaleRoIAlign for p in (heads.box_roi_pool, heads.mask_roi_pool)):
        return "RoI pooler"
    return None


def tv_predict(model, images: list[dict], image_root: Path, read: Callable, category_ids: list[int], batch: int,
               bf16: bool, progress: bool, parts: Parts | None = None, tap=None) -> list[dict[str, Any]]:
    """COCO result records for ``images``, as the model's forward + the plugin's reference ``_to_coco`` give them.
    ``read(path)`` returns the image as the float 3xHxW tensor the model takes; ``tap``: a
    ``features.FeatureTap`` whose hooks are on the model (``features.tv_hooks``)."""
    from plugins.segmenters.features import tv_next

    import torch

    parts = parts or Parts()
    device = next(model.parameters()).device
    heads = model.roi_heads

    def run(chunk):
        with parts("io/decode"):
            tensors = [read(Path(image_root) / rec["file_name"]) for rec in chunk]
            sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
            tv_next(tap, [rec["id"] for rec in chunk])
            batch_images = model.transform(tensors)[0]
        with bf16_autocast(bf16, device):
            with parts("backbone+fpn"):
                features = model.backbone(batch_images.tensors)
                if isinstance(features, torch.Tensor):
                    features = {"0": features}
            with parts("rpn"):
                proposals, _ = model.rpn(batch_images, features)
            with parts("box head"), parts.excluding("box head", heads.mask_roi_pool, heads.mask_head,
                                                    heads.mask_predictor, part="mask head"):
                detections, _ = heads(features, proposals, batch_images.image_sizes)
        out = []
        for rec, det, im_s, o_im_s in zip(chunk, detections, batch_images.image_sizes, sizes):
            if not len(det["scores"]):
                continue
            with parts("post-processing"):
                det = model.transform.postprocess([det], [im_s], [o_im_s])[0]
                masks = (det["masks"][:, 0] > 0.5).numpy().view(np.uint8)
            with parts("rle encoding"):
                rles = encode_masks(masks)
                labels = [category_ids[int(label) - 1] for label in det["labels"].tolist()]
                out.extend(coco_records(rec["id"], det["boxes"].numpy(), det["scores"].numpy(), labels, rles))
        return out

    chunks = [images[i:i + batch] for i in range(0, len(images), batch)]
    with reuse_freed_memory(), bf16_boundaries(bf16, **tv_bf16(model)):
        return [rec for recs in run_batches(chunks, run, progress) for rec in recs]
