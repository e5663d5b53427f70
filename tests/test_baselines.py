"""Training-side baselines: segmenters trained on augmented or adapted images, and fine-tuned from another entry."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import matrix_config, write_config
from harness import config, matrix
from harness.cache import Store
from harness.data.coco import image_records, load_split
from harness.errors import HarnessError
from harness.imageio import read_image

AUG = {"augment": [{"name": "gaussian_noise", "severities": [2, 4]}]}


def segmenters() -> list[dict]:
    return [
        {"name": "threshold", "profile": "tiny", "label": "plain"},
        {"name": "threshold", "profile": "tiny", "label": "augmented", "train_on": AUG, "adapters": ["identity"]},
        {"name": "threshold", "profile": "tiny", "label": "smoothed", "train_on": {"adapter": {"name": "smooth"}},
         "adapters": ["smooth"]},
        {"name": "threshold", "profile": "tiny", "label": "tuned", "init": {"segmenter": "plain"},
         "train_on": AUG, "adapters": ["identity"]},
    ]


def load(tmp_path: Path, **overrides) -> config.MatrixConfig:
    return config.load(write_config(tmp_path / "m.yaml", matrix_config(**overrides)))


def test_baselines_are_cells_beside_the_plain_segmenter(registry, dataset, tmp_path):
    cfg = load(tmp_path, dataset=dataset, segmenters=segmenters(), adapters=["identity", "smooth"])
    run_dir, store = tmp_path / "run", Store(tmp_path / "cache")
    summary = matrix.run(cfg, registry, out=run_dir, store=store, progress=False)

    cells = [json.loads(line) for line in (run_dir / "cells.jsonl").read_text().splitlines()]
    pairs = sorted({(c["segmenter"], c["adapter"]) for c in cells})
    # `adapters:` restricts a baseline to its matching test-time adapter
    assert pairs == [("augmented", "identity"), ("plain", "identity"), ("plain", "smooth"),
                     ("smoothed", "smooth"), ("tuned", "identity")]
    assert summary["cells"]["failed"] == 0 and summary["cells"]["done"] == len(cells) == 10
    # the augmented training split is shared by "augmented" and "tuned"; the adapted one is its own
    assert len(list((tmp_path / "cache" / "trainset").glob("trainset-*/stage.json"))) == 2
    plan = matrix.plan(cfg, registry, store, progress=False)
    trains = {c.labels["segmenter"]: c.stages["train"] for c in plan.cells}
    assert plan.stages[trains["tuned"]].inputs["init"] == trains["plain"]
    assert plan.stages[trains["augmented"]].inputs["data"] == plan.stages[trains["tuned"]].inputs["data"]
    assert all(c["stages"]["predict"].startswith("predict-") for c in cells)


def test_trainset_holds_clean_images_and_one_degraded_copy_each(registry, dataset, tmp_path):
    cfg = load(tmp_path, dataset=dataset, segmenters=segmenters()[1:2])
    store = Store(tmp_path / "cache")
    matrix.compute(cfg, registry, {"trainset"}, store=store, progress=False)
    folder = next((tmp_path / "cache" / "trainset").glob("trainset-*"))
    original, built = load_split(dataset, "train"), load_split(folder, "train")
    assert len(built["images"]) == 2 * len(original["images"])
    assert len(built["annotations"]) == 2 * len(original["annotations"])
    assert len({a["id"] for a in built["annotations"]}) == len(built["annotations"])
    records = image_records(folder, "train")
    n = len(original["images"])
    clean, noisy = records[:n], records[n:]
    src = image_records(dataset, "train")
    assert np.array_equal(read_image(clean[0]["path"]), read_image(src[0]["path"]))
    assert not np.array_equal(read_image(noisy[0]["path"]), read_image(src[0]["path"]))
    assert [len(r["annotations"]) for r in noisy] == [len(r["annotations"]) for r in src]
    assert all("/aug0-gaussian_noise/" in r["file_name"] for r in noisy)


def test_trainset_with_an_adapter_adapts_every_image(registry, dataset, tmp_path):
    cfg = load(tmp_path, dataset=dataset, segmenters=segmenters()[2:3], adapters=["smooth"])
    matrix.compute(cfg, registry, {"trainset"}, store=Store(tmp_path / "cache"), progress=False)
    folder = next((tmp_path / "cache" / "trainset").glob("trainset-*"))
    first, source = image_records(folder, "train")[0], image_records(dataset, "train")[0]
    assert np.array_equal(read_image(first["path"]), cv2.medianBlur(read_image(source["path"]), 3))


@pytest.mark.parametrize("entry, message", [
    ({"init": {"segmenter": "nobody"}}, "init.segmenter: 'nobody' is not the label of another segmenter"),
    ({"init": {"model": "x"}}, r"init: expected a checkpoint path or URL, or \{segmenter: LABEL\}"),
    ({"adapters": ["nope"]}, "adapters: 'nope' is not an adapter label"),
    ({"train_on": {"augmnt": []}}, "train_on: unknown key 'augmnt'"),
    ({"train_on": {"augment": ["none"]}}, "'none' is not a degradation to augment with"),
    ({"train_on": {"augment": [{"name": "jpeg", "severities": [9]}]}}, "jpeg severity 9 not in"),
    ({"train_on": {"adapter": {"name": "dncnn"}}}, "give it fit_on"),
])
def test_bad_baseline_entries_name_the_key(registry, dataset, tmp_path, entry, message):
    seg = {"name": "threshold", "profile": "tiny", "label": "b", **entry}
    raw = matrix_config(dataset, segmenters=[{"name": "threshold", "profile": "tiny"}, seg])
    with pytest.raises(HarnessError, match=message) as err:
        config.load(write_config(tmp_path / "m.yaml", raw), registry=registry)
    assert "segmenters[1]" in str(err.value)


def test_model_seed_pins_one_model_for_every_seed(registry, dataset, tmp_path):
    """Training randomness of fine-tunes and fits from the one source model: `model_seed: 0` trains the plain
    entry once and serves every seed's cells with it; the fine-tunes from it are seeded by the cells' seeds."""
    segs = [{"name": "threshold", "profile": "tiny", "label": "plain", "model_seed": 0},
            {"name": "threshold", "profile": "tiny", "label": "tuned", "init": {"segmenter": "plain"},
             "train_on": AUG, "adapters": ["identity"]}]
    cfg = load(tmp_path, dataset=dataset, segmenters=segs, seeds=[0, 1, 2])
    plan = matrix.plan(cfg, registry, Store(tmp_path / "cache"), progress=False)
    trains = {(c.labels["segmenter"], c.labels["seed"]): c.stages["train"] for c in plan.cells}
    assert {trains[("plain", s)] for s in (0, 1, 2)} == {trains[("plain", 0)]}
    assert plan.stages[trains[("plain", 0)]].spec["seed"] == 0
    tuned = [trains[("tuned", s)] for s in (0, 1, 2)]
    assert len(set(tuned)) == 3 and [plan.stages[k].spec["seed"] for k in tuned] == [0, 1, 2]
    assert {plan.stages[k].inputs["init"] for k in tuned} == {trains[("plain", 0)]}
    # without the key every seed trains its own source model, and keys are as they were
    plain = load(tmp_path, dataset=dataset, segmenters=[{k: v for k, v in segs[0].items() if k != "model_seed"}],
                 seeds=[0, 1])
    keys = {c.stages["train"] for c in matrix.plan(plain, registry, Store(tmp_path / "cache"), progress=False).cells}
    assert len(keys) == 2 and trains[("plain", 0)] in keys
    with pytest.raises(HarnessError, match=r"segmenters\[0\].model_seed: expected a seed \(integer >= 0\), got -1"):
        load(tmp_path, dataset=dataset, segmenters=[{**segs[0], "model_seed": -1}])
