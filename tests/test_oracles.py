"""Source-only and oracle baselines (issue 12, part 3): oracle-T and oracle-ST segmenter entries for synthetic and
real targets, the error for a target without labelled training images, and the gap closed they give every row."""
from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import config as config_mod
from harness import matrix
from harness.cache import Store
from harness.data.coco import load_split
from harness.data.roboflow import prepare_coco
from harness.errors import HarnessError
from harness.imageio import read_image, write_image
from harness.leaderboard import page
from harness.leaderboard.run import load_page
from harness.report.build import gap_closed, write_report
from tests.conftest import matrix_config, write_config

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NOISE = {"name": "gaussian_noise", "severities": [2, 4]}


def _segmenters(target: str, control: bool = True) -> list[dict]:
    oracle_t = {"target": target, **({"control": "tuned"} if control else {})}
    return [{"name": "threshold", "profile": "tiny", "label": "plain"},
            {"name": "threshold", "profile": "tiny", "label": "tuned", "init": {"segmenter": "plain"},
             "adapters": ["identity"]},
            {"name": "threshold", "profile": "tiny", "label": "oracle-T", "init": {"segmenter": "plain"},
             "train_on": oracle_t, "adapters": ["identity"]},
            {"name": "threshold", "profile": "tiny", "label": "oracle-ST", "init": {"segmenter": "plain"},
             "train_on": {"source_and_target": target}, "adapters": ["identity"]}]


def _load(tmp_path: Path, cfg: dict, name: str = "m.yaml"):
    return config_mod.load(write_config(tmp_path / name, cfg))


def _trainsets(p) -> dict[str, str]:
    """Segmenter label -> its trainset stage key (seed 0)."""
    out = {}
    for cell in p.cells:
        data = p.stages[cell.stages["train"]].inputs["data"]
        if data.startswith("trainset-"):
            out[cell.labels["segmenter"]] = data
    return out


def _camera(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float32) * 0.6 + 30, 0, 255).astype(np.uint8)


def _camera_dataset(dataset: Path, out: Path, splits=("train", "test")) -> Path:
    """The source's scenes as another camera sees them, prepared with labelled ``splits`` (train only when asked),
    category ids reversed (same names) so an oracle must renumber them."""
    raw = out.parent / f"{out.name}-raw"
    sources = {}
    for split in splits:
        coco = load_split(dataset, split)
        for img in coco["images"]:
            write_image(raw / img["file_name"], _camera(read_image(dataset / img["file_name"])))
        top = max(c["id"] for c in coco["categories"]) + 1
        cats = [{**c, "id": top - c["id"]} for c in coco["categories"]]
        anns = [{**a, "category_id": top - a["category_id"]} for a in coco["annotations"]]
        (raw / f"{split}.json").write_text(json.dumps({**coco, "categories": cats, "annotations": anns}))
        sources[split] = (raw / f"{split}.json", raw)
    prepare_coco(sources, out, test_fraction=1 if splits == ("train",) else 0.2, progress=False)
    return out


@pytest.fixture(scope="module")
def cams(dataset, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cams")
    return {"labelled": _camera_dataset(dataset, root / "labelled"),
            "test_only": _camera_dataset(dataset, root / "test-only", splits=("train",))}


# -- planning ---------------------------------------------------------------------------------------------------
def test_oracles_of_a_synthetic_target_train_on_its_degraded_training_split(registry, dataset, tmp_path):
    plain_cfg = matrix_config(dataset, segmenters=_segmenters("gaussian_noise")[:2],
                              degradations=["none", NOISE])
    cfg = _load(tmp_path, {**plain_cfg, "segmenters": _segmenters("gaussian_noise")})
    p = matrix.plan(cfg, registry, Store(tmp_path / "cache"), progress=False)
    sets = _trainsets(p)
    assert set(sets) == {"oracle-T", "oracle-ST"}
    t, st = p.stages[sets["oracle-T"]].spec["oracle"], p.stages[sets["oracle-ST"]].spec["oracle"]
    assert t["degradation"]["name"] == "gaussian_noise" and t["severities"] == [2, 4] and t["source"] is False
    assert st["source"] is True and "target" not in p.stages[sets["oracle-T"]].inputs
    # same recipe: the oracles start from the plain model with the same profile and params as the control
    trains = {c.labels["segmenter"]: p.stages[c.stages["train"]] for c in p.cells}
    assert trains["oracle-T"].inputs["init"] == trains["tuned"].inputs["init"] == trains["plain"].key
    assert trains["oracle-T"].spec == trains["tuned"].spec
    # entries without an oracle keep every stage key
    before = matrix.plan(_load(tmp_path, plain_cfg, "a.yaml"), registry, Store(tmp_path / "cache"), progress=False)
    assert set(before.stages) <= set(p.stages)

    matrix.run(cfg, registry, out=tmp_path / "run", store=Store(tmp_path / "cache"), progress=False)
    store, source = Store(tmp_path / "cache"), load_split(dataset, "train")
    only_t = load_split(store.path("trainset", sets["oracle-T"]), "train")
    both = load_split(store.path("trainset", sets["oracle-ST"]), "train")
    assert len(only_t["images"]) == len(source["images"]) and len(both["images"]) == 2 * len(source["images"])
    assert len(only_t["annotations"]) == len(source["annotations"])  # the degraded copies keep their labels
    assert all(im["file_name"].startswith("images/target-gaussian_noise/") for im in only_t["images"])
    first = only_t["images"][0]
    degraded = read_image(store.path("trainset", sets["oracle-T"]) / first["file_name"])
    clean = read_image(dataset / first["file_name"].split("/", 2)[2])
    assert degraded.shape == clean.shape and not np.array_equal(degraded, clean)


def test_oracles_of_a_real_target_train_on_its_labelled_train_split_renumbered(registry, dataset, tmp_path, cams):
    target = {"name": "camC", "data": str(cams["labelled"])}
    cfg = _load(tmp_path, matrix_config(dataset, segmenters=_segmenters("camC"), degradations=["none"],
                                        targets=[target]))
    p = matrix.plan(cfg, registry, Store(tmp_path / "cache"), progress=False)
    sets = _trainsets(p)
    assert p.stages[sets["oracle-T"]].inputs["target"] == p.stages[sets["oracle-ST"]].inputs["target"]
    assert p.stages[sets["oracle-T"]].spec["oracle"] == {"source": False, "split": "train"}
    assert {c.labels["degradation"] for c in p.cells if c.labels["segmenter"] == "oracle-T"} == {"none", "camC"}
    matrix.run(cfg, registry, out=tmp_path / "run", store=Store(tmp_path / "cache"), progress=False)
    store = Store(tmp_path / "cache")
    theirs = load_split(cams["labelled"], "train")
    made = load_split(store.path("trainset", sets["oracle-T"]), "train")
    source_names = {c["id"]: c["name"] for c in load_split(dataset, "train")["categories"]}
    their_names = {c["id"]: c["name"] for c in theirs["categories"]}
    assert made["categories"] == load_split(dataset, "train")["categories"]
    assert len(made["images"]) == len(theirs["images"])
    assert (Counter(source_names[a["category_id"]] for a in made["annotations"])
            == Counter(their_names[a["category_id"]] for a in theirs["annotations"]))
    both = load_split(store.path("trainset", sets["oracle-ST"]), "train")
    assert len(both["images"]) == len(theirs["images"]) + len(load_split(dataset, "train")["images"])
    assert len({im["id"] for im in both["images"]}) == len(both["images"])
    cells = [json.loads(line) for line in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    assert all(c["status"] == "done" for c in cells)


def test_an_oracle_of_a_target_without_labelled_training_images_is_an_error(registry, dataset, tmp_path, cams):
    target = {"name": "camT", "data": str(cams["test_only"])}
    cfg = _load(tmp_path, matrix_config(dataset, segmenters=_segmenters("camT"), degradations=["none"],
                                        targets=[target]))
    with pytest.raises(HarnessError, match="target 'camT' has no labelled training images") as err:
        matrix.plan(cfg, registry, Store(tmp_path / "cache"), progress=False)
    assert "\n" not in str(err.value) and "oracle-T" in str(err.value)


@pytest.mark.parametrize("train_on, message", [
    ({"target": "fog"}, "train_on.target: 'fog' is not a target of this matrix"),
    ({"target": "none"}, "'none' is not a target of this matrix"),
    ({"target": "gaussian_noise", "source_and_target": "gaussian_noise"}, "not both"),
    ({"target": "gaussian_noise", "augment": ["jpeg"]}, "'augment' does not combine with 'target'"),
    ({"target": "gaussian_noise", "control": "plain"}, "control: 'plain' is not the label of a plain fine-tune"),
    ({"augment": ["jpeg"], "control": "tuned"}, "only an oracle"),
    ({"source_and_target": "gaussian_noise", "control": "tuned"}, "only an oracle-T"),
])
def test_bad_oracle_entries_are_one_line_errors(dataset, tmp_path, train_on, message):
    segs = _segmenters("gaussian_noise")[:2] + [{"name": "threshold", "profile": "tiny", "label": "o",
                                                 "init": {"segmenter": "plain"}, "train_on": train_on}]
    with pytest.raises(HarnessError, match=message) as err:
        _load(tmp_path, matrix_config(dataset, segmenters=segs))
    assert "\n" not in str(err.value) and "segmenters[2].train_on" in str(err.value)


# -- gap closed -------------------------------------------------------------------------------------------------
def _tiny() -> tuple[dict, dict[str, list[dict]]]:
    """Four images with one box each; the method finds two, source-only one, the oracle all four."""
    box = [10.0, 10.0, 20.0, 20.0]
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(1, 5)],
          "categories": [{"id": 1, "name": "scratch"}],
          "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": box, "area": 400.0, "iscrowd": 0}
                          for i in range(1, 5)]}

    def found(ids):
        return [{"image_id": i, "category_id": 1, "bbox": box, "score": 0.9} for i in ids]

    return gt, {"method": found([1, 2]), "source": found([1]), "oracle": found([1, 2, 3, 4])}


def test_gap_closed_is_the_share_of_the_oracles_gain():
    gt, preds = _tiny()
    res = gap_closed(gt, [(preds["method"], preds["source"], preds["oracle"])], "bbox", resamples=200, seed=1)
    # 101-point COCO AP of a perfect ranking that recalls k of 4: (25k/100 * 100 + 1) / 101
    ap = {k: (25 * k + 1) / 101 for k in (1, 2, 4)}
    assert res["value"] == pytest.approx(ap[2]) and res["reference"] == pytest.approx(ap[1])
    assert res["oracle_value"] == pytest.approx(ap[4])
    assert res["gap_closed"] == pytest.approx(100 / 3)
    assert res["lo"] <= res["gap_closed"] <= res["hi"] and res["span_lo"] >= 0.01
    assert res["shown"] and res["reason"] == ""
    # two seeds with the same predictions average to the same numbers under the same resamples
    twice = gap_closed(gt, [(preds["method"], preds["source"], preds["oracle"])] * 2, "bbox", resamples=200, seed=1)
    assert (twice["gap_closed"], twice["lo"], twice["hi"]) == pytest.approx((res["gap_closed"], res["lo"], res["hi"]))


def test_gap_closed_is_not_shown_where_the_oracle_is_not_a_clear_1_ap_better():
    gt, preds = _tiny()
    same = gap_closed(gt, [(preds["method"], preds["source"], preds["source"])], "bbox", resamples=200, seed=1)
    assert same["span"] == 0 and math.isnan(same["gap_closed"]) and not same["shown"]
    assert "starts at +0.0 AP, below 1" in same["reason"]
    barely = gap_closed(gt, [(preds["method"], preds["source"], preds["oracle"])], "bbox", resamples=200, seed=1,
                        min_span=0.9)
    assert not barely["shown"] and "below 90" in barely["reason"] and math.isfinite(barely["gap_closed"])


def test_report_writes_gap_closed_for_every_method_row(registry, dataset, tmp_path):
    segs = [*_segmenters("gaussian_noise"),
            {"name": "threshold", "profile": "tiny", "label": "augmented", "init": {"segmenter": "plain"},
             "train_on": {"augment": [NOISE]}, "adapters": ["identity"]}]
    cfg = _load(tmp_path, matrix_config(dataset, segmenters=segs, adapters=["identity", "smooth"],
                                        degradations=["none", NOISE]))
    run = tmp_path / "run"
    matrix.run(cfg, registry, out=run, store=Store(tmp_path / "cache"), progress=False)
    write_report([run], resamples=50, examples=0, cache=tmp_path / "cache", progress=False)
    gap = pd.read_csv(run / "gap.csv")
    rows = set(gap[["segmenter", "adapter", "reference_segmenter"]].itertuples(index=False, name=None))
    # pre-processing rows against plain + identity; fine-tunes (oracle-ST included) against the control
    assert rows == {("plain", "smooth", "plain"), ("augmented", "identity", "tuned"), ("oracle-ST", "identity", "tuned")}
    assert set(gap["degradation"]) == {"gaussian_noise"} and set(gap["severity"]) == {2, 4}
    assert (gap["oracle"] == "oracle-T").all()
    for r in gap.itertuples():
        if r.span:
            assert r.gap_closed == pytest.approx(100 * (r.value - r.reference) / (r.oracle_value - r.reference), rel=1e-3)
        assert r.shown == (r.span_lo >= 0.01)
    text = page.render(run)
    assert "## Gap closed" in text and "**Oracle oracle-T:** oracle-T" in text
    assert "fine-tuned from segmenter plain" in text and "control tuned" in text


def test_a_run_without_oracles_has_no_gap_table(registry, dataset, tmp_path):
    cfg = _load(tmp_path, matrix_config(dataset, adapters=["identity", "smooth"]))
    run = tmp_path / "run"
    matrix.run(cfg, registry, out=run, store=Store(tmp_path / "cache"), progress=False)
    (run / "gap.csv").write_text("stale\n")
    write_report([run], resamples=20, examples=0, cache=tmp_path / "cache", progress=False)
    assert not (run / "gap.csv").exists() and "Gap closed" not in page.render(run)


def test_golden_gap_section(tmp_path):
    """The section alone on a fixture run with a hand-made gap.csv: one row shown, one with its reason."""
    run = tmp_path / "run_small"
    shutil.copytree(FIXTURES / "run_small", run)
    base = {"profile": "smoke", "degradation": "gaussian_noise", "severity": 3, "iou_type": "segm", "metric": "AP",
            "seeds": 1, "oracle": "oracle-T", "reference_adapter": "identity", "resamples": 1000}
    rows = [{**base, "segmenter": "maskrcnn_r50", "adapter": "clahe", "reference_segmenter": "maskrcnn_r50",
             "value": 0.30, "reference": 0.25, "oracle_value": 0.45, "gain": 0.05, "span": 0.20, "span_lo": 0.12,
             "span_hi": 0.28, "gap_closed": 25.0, "lo": 5.2, "hi": 47.25, "shown": True, "reason": ""},
            {**base, "segmenter": "augmented", "adapter": "identity", "reference_segmenter": "tuned",
             "value": 0.26, "reference": 0.255, "oracle_value": 0.262, "gain": 0.005, "span": 0.007,
             "span_lo": -0.004, "span_hi": 0.018, "gap_closed": 71.4, "lo": -300.0, "hi": 400.0, "shown": False,
             "reason": "oracle-T − source-only interval starts at -0.4 AP, below 1"}]
    pd.DataFrame(rows).to_csv(run / "gap.csv", index=False)
    parts = dict(page.parts(load_page(run)))
    golden = FIXTURES / "sections" / "gap.oracle.md"
    if UPDATE:
        golden.write_text(parts["gap"], encoding="utf-8", newline="\n")
    assert parts["gap"] == golden.read_text(encoding="utf-8")
    assert "25 % [5, 47]" in parts["gap"] and "— (oracle-T − source-only interval starts at -0.4 AP" in parts["gap"]
