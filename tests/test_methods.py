"""What each row used of each target (harness.methods, run.json ``methods``) and the Methods section rendering it:
one test per classification rule, the block a run writes, and the section's golden file."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness import config as config_mod
from harness import matrix
from harness.cache import Store
from harness.errors import HarnessError
from harness.leaderboard import page
from harness.leaderboard.run import load_page
from harness.methods import FIELDS, methods
from tests.conftest import matrix_config, write_config

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NOISE = {"name": "gaussian_noise", "severities": [2, 4]}
PLAIN = {"name": "threshold", "profile": "tiny", "label": "plain"}


def _classify(registry, tmp_path, segmenters=None, adapters=("identity",), targets=None):
    """(target, segmenter label, adapter label) -> the record, for a config parsed as `harness run` parses it."""
    raw = matrix_config(tmp_path, segmenters=segmenters or [PLAIN], adapters=list(adapters),
                        degradations=["none", NOISE] if targets is None else ["none"])
    if targets is not None:
        raw["targets"] = targets
    cfg = config_mod.parse(raw, tmp_path / "m.yaml")
    return {(m["degradation"], m["segmenter"], m["adapter"]): m for m in methods(cfg, registry)}


def _uses(record) -> tuple[bool, bool, bool]:
    return record["uses_target_labels"], record["uses_true_degradation"], record["uses_target_images"]


def _fine_tune(label: str, train_on: dict | None = None) -> dict:
    return {"name": "threshold", "profile": "tiny", "label": label, "init": {"segmenter": "plain"},
            "adapters": ["identity"], **({"train_on": train_on} if train_on else {})}


def test_a_paired_fit_on_the_targets_own_degradation_uses_the_true_degradation(registry, tmp_path):
    paired = {"fit_data": "paired"}
    got = _classify(registry, tmp_path, adapters=[
        "identity", "smooth",
        {"name": "meanshift", "label": "own", "params": paired},
        {"name": "meanshift", "label": "blind", "params": paired, "fit_on": {**NOISE, "severities": [3, 4, 5]}},
        {"name": "meanshift", "label": "other-params", "params": paired,
         "fit_on": {"name": "gaussian_noise", "params": {"sigmas": [1, 2, 3, 4, 5]}, "severity": 3}},
        {"name": "meanshift", "label": "other", "params": paired, "fit_on": {"name": "motion_blur", "severity": 3}}])
    assert [m for m in got if m[0] == "none"] == [], "the clean source is no target"
    assert got[("gaussian_noise", "plain", "identity")]["kind"] == "source-only"
    for label, true in [("smooth", False), ("own", True), ("blind", True), ("other-params", False), ("other", False)]:
        record = got[("gaussian_noise", "plain", label)]
        assert record["kind"] == "pre-processing" and _uses(record) == (False, true, False), label
    assert all(set(FIELDS) == set(m) for m in got.values())


def test_an_unpaired_fit_on_the_target_uses_its_images(registry, tmp_path):
    got = _classify(registry, tmp_path, adapters=[
        "identity", "meanshift", {"name": "meanshift", "label": "blind", "fit_on": {"name": "gaussian_noise"}},
        {"name": "meanshift", "label": "source", "params": {"fit_data": "source"}}])
    assert _uses(got[("gaussian_noise", "plain", "meanshift")]) == (False, False, True)
    assert _uses(got[("gaussian_noise", "plain", "blind")]) == (False, False, True)
    assert _uses(got[("gaussian_noise", "plain", "source")]) == (False, False, False)


def test_augmenting_with_the_targets_degradation_uses_it_and_a_twin_does_not(registry, tmp_path):
    twin = {"name": "twin", "params": {"sigma": 8.0}, "severities": [1]}
    got = _classify(registry, tmp_path, segmenters=[
        PLAIN, _fine_tune("augmented", {"augment": [{"name": "gaussian_noise", "severities": [1, 2, 3]}]}),
        _fine_tune("twin-augmented", {"augment": [twin]}),
        _fine_tune("adapted", {"adapter": {"name": "meanshift", "params": {"fit_data": "paired"},
                                           "fit_on": {"name": "gaussian_noise", "severity": 3}}})],
        targets=[NOISE, twin | {"label": "twin-target"}])
    assert got[("gaussian_noise", "augmented", "identity")]["kind"] == "training-side"
    assert _uses(got[("gaussian_noise", "augmented", "identity")]) == (False, True, False)
    assert _uses(got[("gaussian_noise", "adapted", "identity")]) == (False, True, False)
    assert _uses(got[("gaussian_noise", "twin-augmented", "identity")]) == (False, False, False)
    assert _uses(got[("twin-target", "twin-augmented", "identity")]) == (False, False, False)


def test_oracles_use_their_targets_labels_and_controls_are_marked(registry, tmp_path):
    got = _classify(registry, tmp_path, segmenters=[
        PLAIN, _fine_tune("tuned"), _fine_tune("oracle-T", {"target": "gaussian_noise", "control": "tuned"}),
        _fine_tune("oracle-ST", {"source_and_target": "gaussian_noise"})])
    assert got[("gaussian_noise", "tuned", "identity")]["kind"] == "control"
    for label in ("oracle-T", "oracle-ST"):
        record = got[("gaussian_noise", label, "identity")]
        assert record["kind"] == "oracle" and _uses(record) == (True, True, False)


def test_self_training_uses_target_images_and_its_control_none(registry, tmp_path):
    got = _classify(registry, tmp_path, segmenters=[
        PLAIN, _fine_tune("self-trained", {"self_training": {"target": "gaussian_noise"}}),
        _fine_tune("ema-control", {"self_training": {"target": "gaussian_noise", "pseudo_labels": False}})])
    assert got[("gaussian_noise", "self-trained", "identity")]["kind"] == "training-side"
    assert _uses(got[("gaussian_noise", "self-trained", "identity")]) == (False, False, True)
    assert got[("gaussian_noise", "ema-control", "identity")]["kind"] == "control"
    assert _uses(got[("gaussian_noise", "ema-control", "identity")]) == (False, False, False)


def test_on_a_real_target_nothing_knows_the_true_degradation(registry, tmp_path):
    cam = {"name": "cam2", "data": str(tmp_path / "cam2"), "pool": str(tmp_path / "pool")}
    got = _classify(registry, tmp_path, segmenters=[
        PLAIN, _fine_tune("augmented", {"augment": [{"name": "gaussian_noise", "severities": [3]}]}),
        _fine_tune("oracle-T", {"target": "cam2"}),
        _fine_tune("self-trained", {"self_training": {"target": "cam2"}})],
        adapters=["identity", "meanshift",
                  {"name": "meanshift", "label": "paired", "params": {"fit_data": "paired"},
                   "fit_on": {"name": "gaussian_noise", "severity": 3}}],
        targets=[NOISE, cam])
    assert _uses(got[("cam2", "plain", "paired")]) == (False, False, False)
    assert _uses(got[("cam2", "plain", "meanshift")]) == (False, False, True), "fitted on the pool"
    assert _uses(got[("cam2", "augmented", "identity")]) == (False, False, False), "a guess, not the truth"
    assert _uses(got[("cam2", "oracle-T", "identity")]) == (True, False, False)
    assert _uses(got[("cam2", "self-trained", "identity")]) == (False, False, True)
    # each oracle and self-training uses only its own target
    assert _uses(got[("gaussian_noise", "oracle-T", "identity")]) == (False, False, False)
    assert _uses(got[("gaussian_noise", "self-trained", "identity")]) == (False, False, False)


def test_adapters_that_optimise_the_segmenters_features_are_flagged(registry, tmp_path):
    got = _classify(registry, tmp_path, adapters=["identity", "taskaware"])
    record = got[("gaussian_noise", "plain", "taskaware")]
    assert record["optimises_segmenter_features"] and _uses(record) == (False, True, False)
    assert not got[("gaussian_noise", "plain", "identity")]["optimises_segmenter_features"]


def test_run_writes_the_methods_block(registry, dataset, tmp_path):
    cfg = config_mod.load(write_config(tmp_path / "m.yaml", matrix_config(
        dataset, adapters=["identity", "smooth", {"name": "meanshift", "params": {"fit_data": "paired"}}])))
    run = tmp_path / "run"
    matrix.run(cfg, registry, out=run, store=Store(tmp_path / "cache"), progress=False)
    records = json.loads((run / "run.json").read_text())["methods"]
    assert [(m["adapter"], m["kind"], m["uses_true_degradation"]) for m in records] == [
        ("identity", "source-only", False), ("smooth", "pre-processing", False), ("meanshift", "pre-processing", True)]
    assert {m["degradation"] for m in records} == {"gaussian_noise"}
    text = page.render(run)
    assert "## Methods" in text and "- **gaussian_noise s3**: " in text


# -- the section on a fixture run -----------------------------------------------------------------------------
def _record(segmenter: str, adapter: str, degradation: str, kind: str, labels=False, true=False, images=False):
    return {"segmenter": segmenter, "profile": "smoke", "adapter": adapter, "degradation": degradation, "kind": kind,
            "uses_target_labels": labels, "uses_true_degradation": true, "uses_target_images": images,
            "optimises_segmenter_features": False}


def _methods_run(tmp_path: Path) -> Path:
    """run_small with training-side rows at gaussian_noise s3, a real target cam2 (identity cells only), the
    methods block and hand-made baselines.csv and gap.csv rows."""
    run = tmp_path / "run_small"
    shutil.copytree(FIXTURES / "run_small", run)
    aps = {"augmented": (0.36, 0.38), "self-trained": (0.33, 0.35), "tuned": (0.27, 0.28), "oracle-T": (0.45, 0.47)}
    cells, results = [], []
    for (seg, setting), values in [*(((s, ("gaussian_noise", 3)), v) for s, v in aps.items()),
                                   (("maskrcnn_r50", ("cam2", 0)), (0.20, 0.22))]:
        for seed, value in enumerate(values):
            cell = f"{seg}-identity-{setting[0]}-s{setting[1]}-seed{seed}"
            labels = {"segmenter": seg, "profile": "smoke", "adapter": "identity", "degradation": setting[0],
                      "severity": setting[1], "seed": seed}
            cells.append(json.dumps({"cell": cell, **labels, "status": "done", "error": None}))
            results.append({"cell": cell, **labels, "iou_type": "segm", "metric": "AP", "category": "all",
                            "value": value, "note": ""})
    with open(run / "cells.jsonl", "a") as f:
        f.write("".join(c + "\n" for c in cells))
    pd.DataFrame(results).to_csv(run / "results.csv", mode="a", header=False, index=False)
    records = [_record("maskrcnn_r50", "identity", "gaussian_noise", "source-only"),
               _record("maskrcnn_r50", "clahe", "gaussian_noise", "pre-processing"),
               _record("augmented", "identity", "gaussian_noise", "training-side", true=True),
               _record("self-trained", "identity", "gaussian_noise", "training-side", images=True),
               _record("tuned", "identity", "gaussian_noise", "control"),
               _record("oracle-T", "identity", "gaussian_noise", "oracle", labels=True, true=True),
               _record("maskrcnn_r50", "identity", "cam2", "source-only"),
               _record("maskrcnn_r50", "clahe", "cam2", "pre-processing")]
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "targets": {"cam2": {"name": "cam2"}}, "methods": records}))
    base = {"profile": "smoke", "degradation": "gaussian_noise", "severity": 3, "iou_type": "segm", "metric": "AP",
            "seeds": 2, "reference_adapter": "identity", "resamples": 1000}
    pd.DataFrame([{**base, "segmenter": "self-trained", "adapter": "identity", "reference_segmenter": "maskrcnn_r50",
                   "delta": 0.08, "lo": 0.05, "hi": 0.11, "significant": True, "value": 0.34, "reference": 0.26}]
                 ).to_csv(run / "baselines.csv", index=False)
    pd.DataFrame([{**base, "segmenter": "self-trained", "adapter": "identity", "oracle": "oracle-T",
                   "reference_segmenter": "tuned", "value": 0.34, "reference": 0.275, "oracle_value": 0.46,
                   "gain": 0.065, "span": 0.185, "span_lo": 0.15, "span_hi": 0.22, "gap_closed": 35.1, "lo": 20.4,
                   "hi": 52.0, "shown": True, "reason": ""}]).to_csv(run / "gap.csv", index=False)
    return run


def test_golden_methods_section(tmp_path):
    """The best row excludes augmentation with the true degradation and the oracle; a setting whose only fair row
    has no AP says so."""
    text = dict(page.parts(load_page(_methods_run(tmp_path))))["methods"]
    golden = FIXTURES / "sections" / "methods.methods.md"
    if UPDATE:
        golden.write_text(text, encoding="utf-8", newline="\n")
    assert text == golden.read_text(encoding="utf-8")
    assert ("degradation: self-trained (smoke), segm AP 34.0 ± 1.0 (Δ +8.0 [+5.0, +11.0]* vs source-only), "
            "gap closed 35 % [20, 52].") in text
    assert "**cam2 (real target)**: Best method using neither target labels nor the true degradation: none" in text


def _rendered(run: Path, keep, **changes) -> str:
    """The section after keeping only the methods records ``keep`` accepts, with ``changes`` applied to them."""
    meta = json.loads((run / "run.json").read_text())
    meta["methods"] = [{**m, **{k: f(m) for k, f in changes.items()}} for m in meta["methods"] if keep(m)]
    (run / "run.json").write_text(json.dumps(meta))
    return dict(page.parts(load_page(run)))["methods"]


def test_a_pre_processing_best_reads_the_summarys_delta_and_shows_its_flag(tmp_path):
    run = _methods_run(tmp_path)
    text = _rendered(run, lambda m: m["segmenter"] != "self-trained",
                     optimises_segmenter_features=lambda m: m["adapter"] == "clahe")
    assert ("degradation: maskrcnn_r50 (smoke) + clahe (flagged: optimises the segmenter's features), segm AP 31.0 "
            "(n=1) (Δ +6.0 (n=1) vs source-only).") in text
    assert "| Kind           | Flag " in text and "| pre-processing | optimises the segmenter's features |" in text


def test_a_training_side_best_without_a_report_and_no_best_at_all(tmp_path):
    run = _methods_run(tmp_path)
    (run / "baselines.csv").unlink()
    text = _rendered(run, lambda m: m["adapter"] != "clahe")
    assert "Flag" not in text
    assert ("self-trained (smoke), segm AP 34.0 ± 1.0 (no Δ vs source-only before `harness report` writes "
            "baselines.csv), gap closed 35 % [20, 52].") in text
    text = _rendered(run, lambda m: m["segmenter"] != "self-trained")
    assert "- **gaussian_noise s3**: Best method using neither target labels nor the true degradation: none" in text


def test_bad_methods_in_run_json_name_the_file(tmp_path):
    run = tmp_path / "run_small"
    shutil.copytree(FIXTURES / "run_small", run)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "methods": [{"segmenter": "x"}]}))
    with pytest.raises(HarnessError, match="run.json: methods: expected a list of objects"):
        load_page(run)
