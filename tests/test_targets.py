"""Real target domains in a matrix (issue 12, part 1): a prepared labelled dataset from another camera is
evaluated as it is, unpaired adapters fit on its unlabelled pool, categories match by name, and nothing is
measured that needs a clean original."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import config as config_mod
from harness import matrix
from harness.cache import Store
from harness.data.coco import load_split
from harness.data.pool import prepare_images
from harness.data.roboflow import prepare_coco
from harness.errors import HarnessError
from harness.imageio import read_image, write_image
from harness.leaderboard import page as leaderboard
from tests.conftest import matrix_config, write_config

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _camera(image: np.ndarray) -> np.ndarray:
    """What camera B does to a scene: darker, less contrast."""
    return np.clip(image.astype(np.float32) * 0.7 + 20, 0, 255).astype(np.uint8)


def camera_b(dataset: Path, out: Path, ids: dict[int, int] | None = None, drop: set[str] = frozenset(),
             rename: dict[str, str] | None = None) -> Path:
    """The source's test scenes as camera B sees them, re-prepared as a test-only dataset (`--test-fraction 1`),
    with category ids renumbered by ``ids``, classes in ``drop`` left out and names changed by ``rename``."""
    raw = out.parent / f"{out.name}-raw"
    coco = load_split(dataset, "test")
    for img in coco["images"]:
        write_image(raw / img["file_name"], _camera(read_image(dataset / img["file_name"])))
    ids, rename = ids or {}, rename or {}
    keep = {c["id"] for c in coco["categories"] if c["name"] not in drop}
    cats = [{**c, "id": ids.get(c["id"], c["id"]), "name": rename.get(c["name"], c["name"])}
            for c in coco["categories"] if c["id"] in keep]
    anns = [{**a, "category_id": ids.get(a["category_id"], a["category_id"])}
            for a in coco["annotations"] if a["category_id"] in keep]
    (raw / "labels.json").write_text(json.dumps({**coco, "categories": cats, "annotations": anns}))
    prepare_coco({"train": (raw / "labels.json", raw)}, out, test_fraction=1, progress=False)
    return out


def pool_of(dataset: Path, out: Path, extra: list[Path] = ()) -> Path:
    """Camera B's unlabelled pool: the source's training scenes as it sees them (plus ``extra`` files as they are)."""
    raw = out.parent / f"{out.name}-raw"
    for img in load_split(dataset, "train")["images"]:
        write_image(raw / Path(img["file_name"]).name, _camera(read_image(dataset / img["file_name"])))
    for path in extra:
        shutil.copyfile(path, raw / f"copy-{path.name}")
    prepare_images(raw, out, progress=False)
    return out


@pytest.fixture(scope="module")
def camb(dataset, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("camb")
    return {"data": camera_b(dataset, root / "camb"), "pool": pool_of(dataset, root / "pool")}


def load(tmp_path: Path, cfg: dict, name: str = "m.yaml"):
    return config_mod.load(write_config(tmp_path / name, cfg))


def real(camb: dict[str, Path], **extra) -> dict:
    return {"name": "camB", "data": str(camb["data"]), "pool": str(camb["pool"]), **extra}


# -- config ---------------------------------------------------------------------------------------------------
def test_synthetic_targets_plan_the_same_stages_as_degradations(registry, dataset, tmp_path):
    """`targets` made of degradation entries is `degradations` by another name: same stage keys and cells."""
    base = matrix_config(dataset, adapters=["identity", "smooth"])
    old = load(tmp_path, base, "a.yaml")
    new = load(tmp_path, {**{k: v for k, v in base.items() if k != "degradations"},
                          "targets": base["degradations"]}, "b.yaml")
    a = matrix.plan(old, registry, Store(tmp_path / "c"), progress=False)
    b = matrix.plan(new, registry, Store(tmp_path / "c"), progress=False)
    assert list(a.stages) == list(b.stages) and [c.id for c in a.cells] == [c.id for c in b.cells]
    assert "targets" not in old.normalised()  # a config without the key hashes as before
    assert old.targets is None and new.targets == []


def test_a_config_without_targets_hashes_as_before(dataset, tmp_path):
    cfg = load(tmp_path, matrix_config(dataset))
    from harness.hashing import stable_hash

    before = {k: v for k, v in cfg.normalised().items() if k not in ("name", "fit_split", "sample", "feature_gap")}
    assert cfg.hash == stable_hash(before)


@pytest.mark.parametrize("target, message", [
    ({"name": "camB", "data": "x", "pol": "y"}, "targets[1]: unknown key 'pol' for a real target"),
    ({"name": "camB", "data": 3}, "targets[1].data: expected a non-empty string"),
    ({"name": "none", "data": "x"}, "targets[1].name: 'none' is the clean source setting"),
    ({"name": "camB", "data": "x", "split": 5}, "targets[1].split: expected a split name"),
    ({"name": "none", "params": {}}, None),
    ({"name": "gaussian_noise", "sevrities": [1]}, "targets[1]: unknown key 'sevrities'"),
])
def test_bad_real_target_keys_are_one_line_errors(dataset, tmp_path, target, message):
    cfg = {**matrix_config(dataset), "targets": ["gaussian_noise", target]}
    cfg.pop("degradations")
    if message is None:
        assert [d.label for d in load(tmp_path, cfg).degradations] == ["gaussian_noise", "none"]
        return
    with pytest.raises(HarnessError, match=re.escape(message)) as err:
        load(tmp_path, cfg)
    assert "\n" not in str(err.value)


def test_plugin_errors_name_the_entry_of_targets(registry, dataset, tmp_path):
    cfg = {**matrix_config(dataset), "targets": [{"name": "gaussian_noise", "label": "g", "severities": [9]}]}
    with pytest.raises(HarnessError, match=re.escape("targets[0]: severity 9 not in")):
        config_mod.load(write_config(tmp_path / "m.yaml", cfg), registry)


def test_labels_are_unique_across_degradations_and_targets(dataset, tmp_path, camb):
    cfg = {**matrix_config(dataset), "targets": [{**real(camb), "name": "gaussian_noise"}]}
    with pytest.raises(HarnessError, match="label 'gaussian_noise' used twice"):
        load(tmp_path, cfg)


# -- planning -------------------------------------------------------------------------------------------------
def test_a_real_target_is_evaluated_on_its_own_images_and_labels(registry, dataset, tmp_path, camb):
    cfg = load(tmp_path, matrix_config(dataset, adapters=["identity", "meanshift"], targets=[real(camb)]))
    p = matrix.plan(cfg, registry, Store(tmp_path / "c"), progress=False)
    cells = [c for c in p.cells if c.labels["degradation"] == "camB"]
    assert [c.labels["severity"] for c in cells] == [0, 0] and all(not c.extra for c in cells)  # no fidelity
    target_key = next(k for k, v in p.context.sources.items() if v == str(camb["data"].resolve()))
    for cell in cells:
        evaluate = p.stages[cell.final]
        assert evaluate.inputs["data"] == target_key and evaluate.spec["split"] == "test"
        assert p.stages[cell.stages["adapt"]].inputs["images"] == target_key
    fit = p.stages[p.stages[cells[1].stages["adapt"]].inputs["fit"]]
    assert fit.inputs["pool"] == next(k for k, v in p.context.sources.items() if v == str(camb["pool"].resolve()))
    info = p.targets["camB"]
    assert (info["evaluated"], info["pool"]["images"]) == (6, 8)


def test_unpaired_adapters_fit_on_all_source_training_images_and_the_pool(registry, dataset, tmp_path, camb):
    cfg = load(tmp_path, matrix_config(dataset, adapters=["identity", "meanshift"], degradations=["none"],
                                       targets=[real(camb)]))
    matrix.run(cfg, registry, out=tmp_path / "run", store=Store(tmp_path / "c"), progress=False)
    store = Store(tmp_path / "c")
    p = matrix.plan(cfg, registry, store, progress=False)
    cell = next(c for c in p.cells if c.labels["degradation"] == "camB" and c.labels["adapter"] == "meanshift")
    fit = json.loads((store.path("fit", p.stages[cell.stages["adapt"]].inputs["fit"]) / "fit.json").read_text())
    assert sorted(fit["source"]) == sorted(Path(i["file_name"]).stem for i in load_split(dataset, "train")["images"])
    pool = load_split(camb["pool"], "pool")["images"]
    assert sorted(fit["target"]) == sorted(Path(i["file_name"]).stem for i in pool)
    assert fit["shift"] > 0  # camera B is darker
    cells = [json.loads(line) for line in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    assert all(c["status"] == "done" for c in cells), cells


def test_a_paired_adapter_on_a_real_target_is_refused(registry, dataset, tmp_path, camb):
    cfg = load(tmp_path, matrix_config(dataset, adapters=[{"name": "meanshift", "label": "pairs",
                                                            "params": {"fit_data": "paired"}}],
                                       targets=[real(camb)]))
    with pytest.raises(HarnessError, match="'pairs' fits on paired images .* real target 'camB'") as err:
        matrix.plan(cfg, registry, Store(tmp_path / "c"), progress=False)
    assert "\n" not in str(err.value)


def test_a_source_adapter_fits_on_a_real_target_as_before(registry, dataset, tmp_path, camb):
    cfg = load(tmp_path, matrix_config(dataset, adapters=[{"name": "meanshift", "params": {"fit_data": "source"}}],
                                       targets=[real(camb)]))
    p = matrix.plan(cfg, registry, Store(tmp_path / "c"), progress=False)
    fits = {p.stages[c.stages["adapt"]].inputs["fit"] for c in p.cells}
    assert len(fits) == 1 and "pool" not in p.stages[fits.pop()].inputs


def test_an_unpaired_adapter_needs_the_targets_pool(registry, dataset, tmp_path, camb):
    target = {"name": "camB", "data": str(camb["data"])}
    cfg = load(tmp_path, matrix_config(dataset, adapters=["meanshift"], targets=[target]))
    with pytest.raises(HarnessError, match="'camB' has no pool, and adapter 'meanshift' fits on target images"):
        matrix.plan(cfg, registry, Store(tmp_path / "c"), progress=False)


def test_a_target_class_the_source_lacks_is_an_error(registry, dataset, tmp_path):
    data = camera_b(dataset, tmp_path / "odd", rename={"patches": "rust"})
    cfg = load(tmp_path, matrix_config(dataset, targets=[{"name": "odd", "data": str(data)}]))
    with pytest.raises(HarnessError, match="class 'rust' is not a class of the source dataset") as err:
        matrix.plan(cfg, registry, Store(tmp_path / "c"), progress=False)
    assert "\n" not in str(err.value) and "targets: 'odd'" in str(err.value)


def test_a_pool_that_overlaps_the_evaluated_split_is_an_error(registry, dataset, tmp_path, camb):
    leaked = sorted((camb["data"] / "images" / "test").iterdir())[:2]
    pool = pool_of(dataset, tmp_path / "leaky", extra=leaked)
    cfg = load(tmp_path, matrix_config(dataset, targets=[{**real(camb), "pool": str(pool)}]))
    with pytest.raises(HarnessError, match="shares 2 image\\(s\\) with the evaluated test split") as err:
        matrix.plan(cfg, registry, Store(tmp_path / "c"), progress=False)
    assert "\n" not in str(err.value) and leaked[0].name in str(err.value)


def test_missing_target_folders_are_named(registry, dataset, tmp_path, camb):
    for target, message in (({"name": "camB", "data": str(tmp_path / "nope")}, "data folder .*nope not found"),
                            ({**real(camb), "pool": str(tmp_path / "nopool")}, "pool folder .*nopool not found"),
                            ({**real(camb), "split": "val"}, "val")):
        cfg = load(tmp_path, matrix_config(dataset, targets=[target]))
        with pytest.raises(HarnessError, match=message):
            matrix.plan(cfg, registry, Store(tmp_path / "c"), progress=False)


# -- evaluation -----------------------------------------------------------------------------------------------
def _ap(registry, dataset, tmp_path, data: Path, name: str) -> pd.DataFrame:
    cfg = load(tmp_path, matrix_config(dataset, degradations=["none"], targets=[{"name": "t", "data": str(data)}]),
               f"{name}.yaml")
    matrix.run(cfg, registry, out=tmp_path / name, store=Store(tmp_path / "c"), progress=False)
    results = pd.read_csv(tmp_path / name / "results.csv")
    return results[results["degradation"] == "t"].sort_values(["iou_type", "metric", "category"])


def test_permuting_a_targets_category_ids_gives_identical_ap(registry, dataset, tmp_path):
    plain = camera_b(dataset, tmp_path / "plain")
    permuted = camera_b(dataset, tmp_path / "permuted", ids={1: 7, 2: 3, 3: 1})
    a = _ap(registry, dataset, tmp_path, plain, "a")
    b = _ap(registry, dataset, tmp_path, permuted, "b")
    assert len(a) and a["value"].notna().any() and (a["value"] > 0).any()
    cols = ["iou_type", "metric", "category", "value"]
    assert a[cols].reset_index(drop=True).equals(b[cols].reset_index(drop=True))


def test_a_target_with_a_subset_of_the_classes_is_evaluated_on_that_subset(registry, dataset, tmp_path):
    subset = camera_b(dataset, tmp_path / "subset", drop={"patches"}, ids={3: 1, 1: 2})
    rows = _ap(registry, dataset, tmp_path, subset, "s")
    per_class = set(rows.loc[rows["category"] != "all", "category"])
    assert per_class == {"inclusion", "scratches"}
    store = Store(tmp_path / "c")
    cfg = load(tmp_path, matrix_config(dataset, degradations=["none"], targets=[{"name": "t", "data": str(subset)}]),
               "s.yaml")
    p = matrix.plan(cfg, registry, store, progress=False)
    cell = next(c for c in p.cells if c.labels["degradation"] == "t")
    preds = json.loads((store.path("predict", cell.stages["predict"]) / "predictions.json").read_text())
    assert preds and {r["category_id"] for r in preds} <= {1, 2}  # remapped; the source's "patches" dropped


# -- leaderboard ----------------------------------------------------------------------------------------------
def _portable(text: str, *paths: Path) -> str:
    for path in paths:
        text = text.replace(str(path), "PATH")
    return text


def test_golden_leaderboard_with_a_real_target(registry, dataset, tmp_path, camb):
    """A clean source setting, a synthetic target with PSNR/SSIM, camera B with "—" and the reason for them,
    and camera C, whose labels lack one of the source's classes."""
    camc = camera_b(dataset, tmp_path / "camc", drop={"patches"}, ids={3: 1, 1: 2})
    cfg = matrix_config(dataset, adapters=["identity", "meanshift"], targets=[
        "none", {"name": "gaussian_noise", "severities": [3]}, real(camb),
        {"name": "camC", "data": str(camc), "pool": str(camb["pool"])}])
    cfg.pop("degradations")
    cfg = load(tmp_path, cfg)
    out = tmp_path / "run"
    matrix.run(cfg, registry, out=out, store=Store(tmp_path / "c"), progress=False)
    info = json.loads((out / "run.json").read_text())
    for key in ("created", "finished", "versions", "config_hash"):
        info[key] = {"versions": {"harness": "0"}}.get(key, "fixed")
    info["budgets"] = [{**b, "seconds": 1.0} for b in info["budgets"]]  # wall clock
    (out / "run.json").write_text(json.dumps(info))
    text = leaderboard.render(out)
    for target in info["targets"].values():
        assert f"fingerprint `{target['fingerprint']}`" in text
    # the fingerprints hash PNG bytes, which another encoder version may write differently
    text = re.sub(r"fingerprint `[0-9a-f]+`", "fingerprint `…`", text)
    assert "not a class of target camC: not evaluated there" in text
    assert "### camB (real target)" in text and "no PSNR/SSIM on a real target" in text
    assert "- **Target camB:**" in text and "6 labelled test images evaluated; pool of 8 unlabelled images" in text
    expected = FIXTURES / "targets.expected.md"
    if UPDATE:
        expected.write_text(text)
    assert text == expected.read_text()


def test_a_generated_source_checks_target_classes_when_predictions_are_remapped(registry, tmp_path):
    """A generated source exists only once its stage ran, so the class check happens in the predict stage."""
    from harness.data.synthetic import generate_synthetic

    source = {"generate": "synthetic", "params": {"n_train": 4, "n_val": 1, "n_test": 2, "size": 48, "seed": 0}}
    copy = tmp_path / "copy"
    generate_synthetic(copy, progress=False, **source["params"])
    odd = camera_b(copy, tmp_path / "odd", rename={"scratches": "rust"})
    cfg = load(tmp_path, matrix_config(source, degradations=["none"], targets=[{"name": "odd", "data": str(odd)}]))
    matrix.run(cfg, registry, out=tmp_path / "run", store=Store(tmp_path / "c"), progress=False)
    cells = {c["degradation"]: c for c in map(json.loads, (tmp_path / "run" / "cells.jsonl").read_text().splitlines())}
    assert cells["none"]["status"] == "done" and cells["odd"]["status"] == "failed"
    assert "class 'rust' is not a class of the source dataset" in cells["odd"]["error"]


def test_report_scores_real_target_cells_on_the_targets_own_labels(registry, dataset, tmp_path, camb):
    """The bootstrap of a real target's cells reads its own ground truth: its Δ is the difference of the APs the
    evaluate stages computed on the target's labels (scored on the source split's, it would not be)."""
    from harness.report.build import RunView, significance

    cfg = load(tmp_path, matrix_config(dataset, adapters=["identity", "smooth"], targets=[real(camb)]))
    matrix.run(cfg, registry, out=tmp_path / "run", store=Store(tmp_path / "c"), progress=False)
    view = RunView(tmp_path / "run")
    assert {c["degradation"] for c in view.cells} == {"none", "gaussian_noise", "camB"}
    assert view.gt_of("camB") is not view.gt and view.gt_of("none") is view.gt
    sig = significance(view, resamples=20, progress=False)
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    for iou in ("bbox", "segm"):
        ap = results[(results["degradation"] == "camB") & (results["iou_type"] == iou) & (results["metric"] == "AP")
                     & (results["category"] == "all")].set_index("adapter")["value"]
        row = sig[(sig["degradation"] == "camB") & (sig["iou_type"] == iou)].iloc[0]
        assert row["delta"] == pytest.approx(ap["smooth"] - ap["identity"], abs=1e-9)
    (tmp_path / "gone").mkdir()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["targets"]["camB"]["path"] = str(tmp_path / "gone" / "camB")
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    view = RunView(tmp_path / "run")
    assert "camB" not in {c["degradation"] for c in view.cells}
    assert any("real target 'camB' left out" in n for n in view.notes)
