"""The segmenters' fast CPU prediction path (plugins/segmenters/fastpredict.py) gives the reference path's JSON
byte for byte, and its output-changing options enter the predict key only when set. Speed is measured by
benchmarks/inference.py, not here."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness.data.coco import image_records, write_json_atomic  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from plugins.segmenters import fastpredict  # noqa: E402
from tests.conftest import builtin_segmenters  # noqa: E402


SEGMENTERS = builtin_segmenters()


@pytest.fixture(scope="module")
def models(tmp_path_factory, dataset):
    """A 4-iteration `tiny` model of each segmenter: untrained enough to emit many low-score detections."""
    root = tmp_path_factory.mktemp("predict-speed")
    out = {}
    for param in SEGMENTERS:
        cls = param.values[0]
        folder = root / cls.name
        cls(max_iters=4, threads=2).train(dataset, folder, "tiny", seed=0)
        out[cls.name] = folder
    return out


def _json_bytes(records, path):
    write_json_atomic(path, records)
    return path.read_bytes()


@pytest.mark.parametrize("cls", SEGMENTERS)
@pytest.mark.parametrize("batch", [4, 1])
def test_fast_path_writes_the_reference_json_byte_for_byte(cls, batch, models, dataset, tmp_path):
    seg = cls(score_thr=0.0, predict_batch=batch, threads=2)
    model = seg.load_model(models[cls.name])[0]
    supported = fastpredict.mmdet_supported if cls.name == "mmdet-mask-rcnn" else fastpredict.tv_supported
    assert supported(model) is None, "the tiny model must take the fast path, or this test compares nothing"
    records = image_records(dataset, "test")
    fast = seg.records(models[cls.name], records, dataset, progress=False)
    reference = seg.records(models[cls.name], records, dataset, progress=False, reference=True)
    assert len(reference) >= 5 * len(records), "an untrained model at score_thr 0 detects plenty"
    assert any(r["segmentation"]["counts"] != reference[0]["segmentation"]["counts"] for r in reference)
    assert _json_bytes(fast, tmp_path / "fast.json") == _json_bytes(reference, tmp_path / "reference.json")
    seg.predict(models[cls.name], records, dataset, tmp_path / "predict.json", progress=False)
    assert (tmp_path / "predict.json").read_bytes() == (tmp_path / "reference.json").read_bytes()


@pytest.mark.parametrize("cls", SEGMENTERS)
def test_one_lane_and_two_lanes_agree(cls, models, dataset, monkeypatch):
    seg = cls(score_thr=0.0, predict_batch=2, threads=2)
    records = image_records(dataset, "test")
    two = seg.records(models[cls.name], records, dataset, progress=False)
    monkeypatch.setattr(fastpredict, "LANES", 1)
    assert seg.records(models[cls.name], records, dataset, progress=False) == two


def test_mask_paste_equals_mmdets_own():
    pytest.importorskip("mmdet")
    from mmengine.config import ConfigDict
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead

    head = FCNMaskHead(num_convs=0, num_classes=3, in_channels=4, conv_out_channels=4)
    gen = torch.Generator().manual_seed(0)
    n, h, w = 300, 90, 120
    size = torch.tensor([w, h], dtype=torch.float32)
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * 80
    wh[:20] = 0  # zero-size boxes: mmdet's division by zero and its inf -> 0
    wh[20:40] *= 0.01
    boxes = torch.cat([xy, torch.minimum(xy + wh, size)], 1)  # inside the image, as the box head clips them
    boxes[40:50, :2] = 0
    boxes[50:60, 2:] = size
    logits = torch.randn(n, 3, 28, 28, generator=gen) * 4
    labels = torch.randint(0, 3, (n,), generator=gen)
    cfg = ConfigDict(mask_thr_binary=0.5)
    meta = {"scale_factor": (1.0, 1.0), "ori_shape": (h, w)}
    for lo in range(0, n, 30):
        part = slice(lo, lo + 30)
        theirs = head._predict_by_feat_single(logits[part], boxes[part].clone(), labels[part], meta, cfg, rescale=True)
        probs = logits[part].sigmoid()[range(len(labels[part])), labels[part]][:, None]
        ours = fastpredict._paste_masks(probs, boxes[part], h, w, 0.5)
        assert np.array_equal(ours, theirs.numpy().astype(np.uint8))


def test_torchvision_roi_align_equals_mmcvs_roi_align():
    pytest.importorskip("mmcv.ops")
    from mmcv.ops import RoIAlign
    from torchvision.ops import roi_align

    gen = torch.Generator().manual_seed(1)
    features = torch.randn(3, 8, 40, 40, generator=gen)
    xy = torch.rand(500, 2, generator=gen) * 160
    rois = torch.cat([torch.randint(0, 3, (500, 1), generator=gen).float(), xy,
                      xy + torch.rand(500, 2, generator=gen) * 90], 1)
    for aligned in (True, False):
        for sampling in (0, 2):
            layer = RoIAlign((7, 7), 0.25, sampling, "avg", aligned)
            assert torch.equal(roi_align(features, rois, (7, 7), 0.25, sampling, aligned), layer(features, rois))
            assert torch.equal(fastpredict._roi_align(roi_align, layer, features, rois), layer(features, rois))


def _faults_of_a_fresh_block(libc, size: int) -> int:
    """Minor page faults of malloc + touching every page + free of ``size`` bytes, after a first such block."""
    import ctypes
    import resource

    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    faults = []
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults[1]


def test_freed_memory_is_reused_while_predicting_and_returned_after():
    libc = fastpredict._glibc()
    if libc is None:
        pytest.skip("not glibc")
    pages = (64 << 20) // 4096
    with fastpredict.reuse_freed_memory():
        assert _faults_of_a_fresh_block(libc, 64 << 20) < pages // 10
    assert _faults_of_a_fresh_block(libc, 64 << 20) > pages // 2


@pytest.mark.parametrize("cls", SEGMENTERS)
def test_options_enter_the_predict_key_only_when_set(cls):
    base = cls().identity()
    assert cls(rpn_proposals=None, max_per_img=None, bf16=False).identity() == base
    for params in ({"rpn_proposals": 100}, {"max_per_img": 20}, {"bf16": True}):
        changed = cls(**params).identity()
        assert changed != base and changed["params"][next(iter(params))] == next(iter(params.values()))


@pytest.mark.parametrize("cls", SEGMENTERS)
@pytest.mark.parametrize("params, message", [
    ({"rpn_proposals": 0}, "rpn_proposals must be a positive integer or null, got 0"),
    ({"max_per_img": "ten"}, "max_per_img must be a positive integer or null, got 'ten'"),
    ({"max_per_img": True}, "max_per_img must be a positive integer or null, got True"),
    ({"bf16": "yes"}, "bf16 must be true or false, got 'yes'"),
    ({"bf16": True, "amp": True}, "amp (float16) and bf16 exclude each other"),
])
def test_bad_option_values_are_one_line_errors(cls, params, message):
    with pytest.raises(HarnessError) as err:
        cls(**params)
    assert str(err.value) == f"segmenter '{cls.name}': {message}"
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cls", SEGMENTERS)
def test_options_change_the_detections(cls, models, dataset):
    records = image_records(dataset, "test")
    default = cls(score_thr=0.0).records(models[cls.name], records, dataset, progress=False)
    capped = cls(score_thr=0.0, max_per_img=2).records(models[cls.name], records, dataset, progress=False)
    per_image = {r["id"]: sum(p["image_id"] == r["id"] for p in capped) for r in records}
    assert max(per_image.values()) == 2 and len(capped) < len(default)
    few = cls(score_thr=0.0, rpn_proposals=3).records(models[cls.name], records, dataset, progress=False)
    assert 0 < len(few) < len(default)
    bf16 = cls(score_thr=0.0, bf16=True).records(models[cls.name], records, dataset, progress=False)
    assert bf16 and json.dumps(bf16) != json.dumps(default)
