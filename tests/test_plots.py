"""Report figures: every function writes a readable, deterministic PNG and tolerates missing numbers."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from harness.errors import HarnessError
from harness.report import plots

METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def _results(segmenters=(("seg-a", "cpu"),), adapters=("identity", "clahe", "nlm"), seeds=(0, 1),
             degradations=(("noise", (1, 2, 3, 4, 5)), ("blur", (1, 3))), clean=True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    settings = [(d, s) for d, sevs in degradations for s in sevs] + ([("none", 0)] if clean else [])
    rows = []
    for (seg, prof), adapter, (deg, sev), seed in itertools.product(segmenters, adapters, settings, seeds):
        base = 0.6 - 0.08 * sev + (0.03 if adapter != "identity" else 0.0)
        for iou, metric in itertools.product(("bbox", "segm"), METRICS):
            rows.append((seg, prof, adapter, deg, sev, seed, iou, metric, "all", base + rng.normal(0, 0.01)))
        rows.append((seg, prof, adapter, deg, sev, seed, "segm", "AP", "scratches", base))
        psnr = math.inf if (deg == "none" and adapter == "identity") else 30 - sev + rng.normal(0, 1)
        rows.append((seg, prof, adapter, deg, sev, seed, "fidelity", "PSNR", "all", psnr))
        rows.append((seg, prof, adapter, deg, sev, seed, "fidelity", "SSIM", "all", 0.8))
    df = pd.DataFrame(rows, columns=["segmenter", "profile", "adapter", "degradation", "severity", "seed",
                                     "iou_type", "metric", "category", "value"])
    df.insert(0, "cell", "c")
    df["note"] = ""
    return df


def _check_png(path: Path, min_w: int = 300, min_h: int = 200) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        w, h = im.size
    assert min_w <= w <= 8000 and min_h <= h <= 8000
    return w, h


def _twice(fn, tmp_path: Path, *args, **kwargs) -> Path:
    a = fn(*args, out=tmp_path / "a.png", **kwargs)
    b = fn(*args, out=tmp_path / "b.png", **kwargs)
    assert a == tmp_path / "a.png"
    assert a.read_bytes() == b.read_bytes()
    return a


def test_module_leaves_the_pyplot_backend_alone():
    assert "pyplot" not in plots.__dict__
    assert matplotlib.get_backend()  # importing plots did not raise or force a switch


def test_adaptation_bars_deterministic_and_sized(tmp_path):
    path = _twice(plots.adaptation_bars, tmp_path, _results(), ("noise", 3))
    w, h = _check_png(path)
    assert w > h


def test_adaptation_bars_several_segmenters_add_rows(tmp_path):
    one = _check_png(plots.adaptation_bars(_results(), ("noise", 3.0), tmp_path / "one.png"))
    two = _check_png(plots.adaptation_bars(_results(segmenters=(("seg-a", "cpu"), ("seg-b", "gpu"))),
                                           ("noise", 3.0), tmp_path / "two.png"))
    assert two[1] > one[1] * 1.5


def test_adaptation_bars_nan_single_seed_and_missing_setting(tmp_path):
    df = _results(seeds=(0,))
    df.loc[df.index[::3], "value"] = np.nan
    df.loc[df.index[1::7], "value"] = -1.0  # COCO's "nothing to evaluate"
    _check_png(plots.adaptation_bars(df, ("noise", 3), tmp_path / "nan.png"))
    _check_png(plots.adaptation_bars(df, ("fog", 9), tmp_path / "empty.png"))  # no rows: 'no data' panels
    _check_png(plots.adaptation_bars(df[df["adapter"] != "identity"], ("noise", 3), tmp_path / "nobase.png"))


def test_severity_curves_deterministic_missing_severities_and_nan(tmp_path):
    df = _results()
    df.loc[(df["adapter"] == "nlm") & (df["severity"] == 2), "value"] = np.nan
    _check_png(_twice(plots.severity_curves, tmp_path, df))
    _check_png(plots.severity_curves(_results(clean=False), tmp_path / "noclean.png", iou_type="bbox",
                                     metric="AP50"))
    _check_png(plots.severity_curves(df.iloc[0:0], tmp_path / "empty.png"))


def test_severity_curves_several_segmenters(tmp_path):
    df = _results(segmenters=(("seg-a", "cpu"), ("seg-b", "gpu")))
    _check_png(plots.severity_curves(df, tmp_path / "s.png"))


def test_fidelity_vs_gain_deterministic_with_inf_and_nan(tmp_path):
    df = _results()
    df.loc[df.index[::5], "value"] = np.nan
    _check_png(_twice(plots.fidelity_vs_gain, tmp_path, df))
    few = _results(degradations=(("noise", (3,)),), seeds=(0,), clean=False)  # < 30 points: annotated
    _check_png(plots.fidelity_vs_gain(few, tmp_path / "few.png"))
    nobase = df[df["adapter"] != "identity"]
    _check_png(plots.fidelity_vs_gain(nobase, tmp_path / "nobase.png"))


def test_results_without_required_columns_are_rejected(tmp_path):
    with pytest.raises(HarnessError, match="value"):
        plots.severity_curves(_results().drop(columns="value"), tmp_path / "x.png")


def _rle(mask: np.ndarray, as_str: bool) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode() if as_str else rle["counts"]}


def _items() -> list[dict]:
    h, w = 48, 64
    mask = np.zeros((h, w), np.uint8)
    mask[10:30, 5:25] = 1
    gray = (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)
    color = np.dstack([gray, 255 - gray, gray // 2])
    gt = [{"category_id": 1, "bbox": [5, 10, 20, 20], "segmentation": _rle(mask, True)}]
    return [
        {"title": "gray, masks", "degraded": gray, "adapted": gray, "ground_truth": gt,
         "predictions": [{"category_id": 1, "score": 0.9, "bbox": [5, 10, 20, 20], "segmentation": _rle(mask, False)},
                         {"category_id": 2, "score": 0.2, "bbox": [30, 0, 10, 10]}]},
        {"title": "colour, boxes only", "degraded": color, "adapted": color, "clean": gray, "ground_truth": gt,
         "predictions": [{"category_id": 3, "score": 0.7, "bbox": [2, 0, 30, 12]}]},
        {"title": "no predictions", "degraded": color, "adapted": gray[:, :, None], "predictions": [],
         "ground_truth": []},
    ]


def test_panels_gray_colour_boxes_only_and_empty(tmp_path):
    names = {1: "scratches", 2: "patches", 3: "inclusion"}
    path = _twice(plots.panels, tmp_path, _items(), class_names=names, title="qualitative")
    w, h = _check_png(path)
    # one row of small images, drawn near their own resolution
    one = _check_png(plots.panels(_items()[:1], tmp_path / "one.png", names), min_h=150)
    assert h > one[1] * 2
    _check_png(plots.failure_cases(_items(), tmp_path / "fail.png", {}, score_thr=0.0))
    _check_png(plots.panels([], tmp_path / "empty.png", names), min_h=100)


def test_panels_reject_missing_images(tmp_path):
    with pytest.raises(HarnessError, match="adapted"):
        plots.panels([{"title": "x", "degraded": np.zeros((8, 8), np.uint8)}], tmp_path / "x.png", {})
