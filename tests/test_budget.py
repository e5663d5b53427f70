"""Budget and convergence of every trainable method: each train and fit stage leaves budget.json (from the plugin's
``budget``, or seconds only), the run copies them into run.json ``budgets`` with the labels of the rows they serve,
the leaderboard tabulates them (marking rows trained short of their schedule) and `harness report` plots each fit's
logged losses. Also: one blind fit over several severities mixed (``fit_on: {severities: [...]}``)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import builtin_segmenters
from harness import config as config_mod
from harness import matrix
from harness.cache import Store
from harness.errors import HarnessError
from harness.interfaces import BUDGET_KEYS
from harness.leaderboard import page
from harness.leaderboard.run import load_page
from harness.stages import BUDGET_FILE, fit_severity, write_budget
from tests.conftest import matrix_config, write_config

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NOISE = {"name": "gaussian_noise", "severities": [3]}
CYCLEGAN = {"name": "cyclegan", "params": {"profile": "test", "device": "cpu", "threads": 1},
            "fit_on": {"name": "gaussian_noise", "severities": [2, 3]}}
DNCNN = {"name": "dncnn", "params": {"depth": 3, "width": 4, "patch": 16, "iterations": 6, "batch": 2,
                                     "log_every": 2, "device": "cpu", "threads": 1},
         "fit_on": {"name": "gaussian_noise", "severity": 3}}


def _load(tmp_path: Path, cfg: dict):
    return config_mod.load(write_config(tmp_path / "m.yaml", cfg))


def _fits(p) -> dict[str, object]:
    return {s.spec["adapter"]["name"]: s for s in p.stages.values() if s.kind == "fit"}


# -- fit_on severities -----------------------------------------------------------------------------------------
def test_fit_on_severity_keeps_its_key_and_severities_make_one_mixed_fit(registry, dataset, tmp_path):
    one = {"name": "meanshift", "fit_on": {"name": "gaussian_noise", "severity": 3}}
    mixed = {"name": "meanshift", "label": "mixed", "fit_on": {"name": "gaussian_noise", "severities": [5, 3, 4]}}
    cfg = _load(tmp_path, matrix_config(dataset, adapters=["identity", one, mixed],
                                        degradations=[{"name": "gaussian_noise", "severities": [3, 4, 5]}]))
    p = matrix.plan(cfg, registry, Store(tmp_path / "cache"), progress=False)
    fits = [s for s in p.stages.values() if s.kind == "fit"]
    assert len(fits) == 2  # one blind fit each, whatever the cell's severity
    single = next(s for s in fits if "severity" in s.spec)
    assert set(single.spec) == {"adapter", "split", "data_seed", "seed", "degradation", "severity"}  # as before
    both = next(s for s in fits if "severities" in s.spec)
    assert both.spec["severities"] == [3, 4, 5] and "severity" not in both.spec and both.key != single.key
    assert {r["fitted_on"] for rows in p.trained.values() for r in rows if r["adapter"]} == {
        "gaussian_noise s3 (unpaired)", "gaussian_noise s3/4/5 mixed (unpaired)"}


def test_mixed_severity_is_drawn_per_image_from_a_seeded_generator():
    spec = {"degradation": {"name": "domain_b"}, "severities": [3, 4, 5], "data_seed": 0}
    stems = [f"img{i:03d}" for i in range(300)]
    drawn = [fit_severity(spec, s) for s in stems]
    assert drawn == [fit_severity(dict(spec), s) for s in stems]  # a pure function of (stem, data seed)
    assert set(drawn) == {3, 4, 5} and min(drawn.count(v) for v in (3, 4, 5)) > 60
    assert drawn != [fit_severity({**spec, "data_seed": 1}, s) for s in stems]
    assert fit_severity({"severity": 4, "data_seed": 0}, "img000") == 4


@pytest.mark.parametrize("fit_on, message", [
    ({"name": "gaussian_noise", "severity": 3, "severities": [3]}, "give 'severity' or 'severities', not both"),
    ({"name": "gaussian_noise", "severities": []}, "severities: expected a non-empty list of distinct integers"),
    ({"name": "gaussian_noise", "severities": [3, 3]}, "severities: expected a non-empty list"),
    ({"name": "gaussian_noise", "severities": [3, 9]}, "fit_on.severity 9 not in"),
])
def test_bad_fit_on_severities_are_refused(registry, dataset, tmp_path, fit_on, message):
    cfg = matrix_config(dataset, adapters=["identity", {"name": "meanshift", "fit_on": fit_on}])
    with pytest.raises(HarnessError, match=message):
        config_mod.load(write_config(tmp_path / "m.yaml", cfg), registry)


# -- budget.json, run.json budgets, the section and the loss plots --------------------------------------------
@pytest.fixture
def budget_run(registry, dataset, tmp_path):
    """A run with a plain segmenter (no budget method), CycleGAN fitted on severities 2 and 3 mixed and a short
    DnCNN; returns (run folder, store, plan)."""
    cfg = _load(tmp_path, matrix_config(dataset, adapters=["identity", CYCLEGAN, DNCNN], degradations=[NOISE]))
    store, run = Store(tmp_path / "cache"), tmp_path / "run"
    matrix.run(cfg, registry, out=run, store=store, progress=False)
    return run, store, matrix.plan(cfg, registry, store, progress=False)


def test_train_and_fit_stages_leave_their_budget_and_the_run_copies_it(budget_run):
    run, store, p = budget_run
    fits = _fits(p)
    cg = json.loads((store.path("fit", fits["cyclegan"].key) / BUDGET_FILE).read_text())
    assert list(cg) == list(BUDGET_KEYS)
    assert {k: cg[k] for k in ("iterations", "schedule_iterations", "batch", "images_seen", "crop", "device")} == {
        "iterations": 60, "schedule_iterations": 60, "batch": 1, "images_seen": 60, "crop": 32, "device": "cpu"}
    dn = json.loads((store.path("fit", fits["dncnn"].key) / BUDGET_FILE).read_text())
    assert (dn["iterations"], dn["schedule_iterations"], dn["batch"], dn["images_seen"], dn["crop"]) == (6, 1500, 2,
                                                                                                         12, 16)
    assert cg["seconds"] > 0 and dn["seconds"] >= 0  # the loops' own time, rounded to 0.1 s
    budgets = json.loads((run / "run.json").read_text())["budgets"]
    by = {(b["kind"], b["adapter"]): b for b in budgets}
    assert set(by) == {("train", None), ("fit", "cyclegan"), ("fit", "dncnn")}
    train = by[("train", None)]
    assert (train["segmenter"], train["profile"], train["fitted_on"], train["seed"]) == ("threshold", "tiny", "train", 0)
    assert train["iterations"] is None and train["seconds"] is not None  # threshold has no budget(): seconds only
    assert by[("fit", "cyclegan")]["fitted_on"] == "gaussian_noise s2/3 mixed (unpaired)"
    assert by[("fit", "dncnn")]["fitted_on"] == "gaussian_noise s3 (paired)"

    text = dict(page.parts(load_page(run)))["budget"]
    assert text.startswith("## Training budget")
    assert "6 of 1 500 [1]" in text and " 60 |" in text and "- [1] trained for fewer iterations" in text


def test_a_stage_cached_without_budget_json_shows_its_seconds_only(budget_run, registry, tmp_path):
    run, store, p = budget_run
    folder = store.path("fit", _fits(p)["cyclegan"].key)
    (folder / BUDGET_FILE).unlink()
    cfg = _load(tmp_path, matrix_config(str(p.dataset["path"]), adapters=["identity", CYCLEGAN, DNCNN],
                                        degradations=[NOISE]))
    matrix.run(cfg, registry, out=run, store=store, progress=False)
    assert not (folder / BUDGET_FILE).exists()  # nothing recomputed: the key did not change
    entry = next(b for b in json.loads((run / "run.json").read_text())["budgets"] if b["adapter"] == "cyclegan")
    assert entry["iterations"] is None and entry["seconds"] == round(float((folder / "seconds.txt").read_text()), 1)


def test_report_plots_each_fits_losses(budget_run):
    from harness.report.build import write_report

    run, store, _ = budget_run
    write_report([run], resamples=10, examples=0, cache=store.root, progress=False)
    manifest = json.loads((run / "plots" / "manifest.json").read_text())
    losses = [m for m in manifest if m["file"].startswith("plots/losses-")]
    assert sorted(m["title"] for m in losses) == [
        "Losses of cyclegan fitted on gaussian_noise s2/3 mixed (unpaired), seed 0",
        "Losses of dncnn fitted on gaussian_noise s3 (paired), seed 0"]
    assert all((run / m["file"]).stat().st_size > 1000 for m in losses)


def test_loss_plot_is_deterministic_and_names_a_bad_log(tmp_path):
    from harness.report.plots import loss_curves

    log = tmp_path / "losses.csv"
    log.write_text("iteration,G_gan,cycle,lr,seconds\n5,1.0,3.0,0.002,0.4\n10,0.9,1.0,0.002,0.8\n")
    a, b = loss_curves(log, tmp_path / "a.png", "t"), loss_curves(log, tmp_path / "b.png", "t")
    assert a.read_bytes() == b.read_bytes()
    (tmp_path / "bad.csv").write_text("step,loss\n1,2\n")
    with pytest.raises(HarnessError, match="bad.csv: no 'iteration' column"):
        loss_curves(tmp_path / "bad.csv", tmp_path / "c.png", "t")


def test_budget_keys_a_plugin_gives_are_checked(tmp_path):
    class Bad:
        kind, name = "adapter", "bad"

        def budget(self, out):
            return {"iters": 3}

    with pytest.raises(HarnessError, match="adapter 'bad': budget\\(\\) gave unknown key 'iters'"):
        write_budget(Bad(), tmp_path, 1.0)


@pytest.mark.parametrize("which", ["tv", "mmdet"])
def test_segmenter_budget_of_a_tiny_training(dataset, tmp_path, which):
    pytest.importorskip("torch")
    if which == "mmdet":
        pytest.importorskip("mmdet")
        from plugins.segmenters.mmdet_mask_rcnn import MMDetMaskRCNN as Seg
    else:
        from plugins.segmenters.tv_mask_rcnn import TVMaskRCNN as Seg
    seg = Seg(max_iters=2, threads=1)
    seg.train(dataset, tmp_path, "tiny", seed=0)
    budget = write_budget(seg, tmp_path, 12.5)
    assert budget == json.loads((tmp_path / BUDGET_FILE).read_text())
    assert {k: budget[k] for k in ("iterations", "schedule_iterations", "batch", "images_seen", "crop", "device")} == {
        "iterations": 2, "schedule_iterations": 1000, "batch": 4, "images_seen": 8, "crop": 128, "device": "cpu"}
    # the loop's own logged iteration times (summed over resumes), not the stage's clock (the last process's)
    assert budget["seconds"] == round(float(seg.loss_log(tmp_path)["seconds"].iloc[-1]), 1) != 12.5


# -- the section on a fixture run -----------------------------------------------------------------------------
def _budgets() -> list[dict]:
    base = dict.fromkeys(BUDGET_KEYS)
    return [
        {"stage": "train-aaa", "kind": "train", "segmenter": "maskrcnn_r50", "profile": "smoke", "adapter": None,
         "fitted_on": "train", "seed": 0, **base, "iterations": 2600, "schedule_iterations": 2600, "batch": 4,
         "images_seen": 10400, "crop": 200, "seconds": 3282.0, "device": "cpu"},
        {"stage": "train-bbb", "kind": "train", "segmenter": "tuned", "profile": "smoke", "adapter": None,
         "fitted_on": "train + gaussian_noise s3/5, from maskrcnn_r50", "seed": 0, **base, "iterations": 200,
         "schedule_iterations": 500, "batch": 4, "images_seen": 800, "crop": 200, "seconds": 260.4, "device": "cuda:0"},
        {"stage": "fit-ccc", "kind": "fit", "segmenter": None, "profile": None, "adapter": "cyclegan",
         "fitted_on": "domain_b s3/4/5 mixed (unpaired)", "seed": 0, **base, "iterations": 2800,
         "schedule_iterations": 2800, "batch": 1, "images_seen": 2800, "crop": 128, "seconds": 3388.2, "device": "cpu"},
        {"stage": "fit-ddd", "kind": "fit", "segmenter": None, "profile": None, "adapter": "clahe-fit",
         "fitted_on": "train (source only)", "seed": 0, **base, "seconds": 4.2},
    ]


def test_golden_budget_section(tmp_path):
    """The section alone on a fixture run given budgets: a full row, a short one marked, a seconds-only one."""
    run = tmp_path / "run_small"
    shutil.copytree(FIXTURES / "run_small", run)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "budgets": _budgets()}))
    text = dict(page.parts(load_page(run)))["budget"]
    golden = FIXTURES / "sections" / "budget.budgets.md"
    if UPDATE:
        golden.write_text(text, encoding="utf-8", newline="\n")
    assert text == golden.read_text(encoding="utf-8")
    assert "200 of 500 [1]" in text and "54.7 min |" in text and " 4.2 s |" in text
    # two runs of one page: a budget shared by both is listed once
    other = tmp_path / "other"
    shutil.copytree(run, other)
    merged = dict(page.parts(load_page([run, other])))["budget"]
    assert merged.count("domain_b s3/4/5 mixed") == 1 and merged.count("| train |") == 2


def test_bad_budgets_in_run_json_name_the_file(tmp_path):
    run = tmp_path / "run_small"
    shutil.copytree(FIXTURES / "run_small", run)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "budgets": {"not": "a list"}}))
    with pytest.raises(HarnessError, match="run.json: budgets: expected a list of objects"):
        load_page(run)


def test_segmenter_training_logs_read_as_loss_curves(tmp_path):
    """tv-mask-rcnn's train.log and mmengine's scalars.json become (iteration, losses, lr, seconds) tables; a
    resume's repeated iterations keep the last run's line, a killed run's half-written line is skipped."""
    from plugins.segmenters.train_stats import mmengine_losses, text_log_losses

    log = tmp_path / "train.log"
    log.write_text("2026-12-01 10:00:00 training tv-mask-rcnn (tiny) on cpu: 4 images\n"
                   "2026-12-01 10:00:01 iter 2/4 lr 0.010000 loss 2.0000 loss_mask 0.5000 s/it 0.300\n"
                   "2026-12-01 10:00:02 iter 4/4 lr 0.005000 loss 1.5000 loss_mask 0.4000 s/it 0.310\n"
                   "2026-12-01 10:01:00 resumed from work/last.pth at iteration 2\n"
                   "2026-12-01 10:01:02 iter 4/4 lr 0.005000 loss 1.4000 loss_mask 0.4000 s/it 0.320\n")
    df = text_log_losses(log)
    assert list(df.columns) == ["iteration", "loss", "loss_mask", "lr", "seconds"]
    assert df["iteration"].tolist() == [2, 4] and df["loss"].tolist() == [2.0, 1.4] and df["lr"].tolist() == [0.01, 0.005]
    assert df["seconds"].tolist() == pytest.approx([0.6, 1.24])  # 2 x 0.30, then 2 x 0.32: each iteration once
    assert text_log_losses(tmp_path / "missing.log") is None

    for stamp, lines in (("20261201_100000", ['{"lr": 0.01, "loss": 2.0, "loss_cls": 1.0, "time": 3.0, "iter": 50}',
                                              '{"lr": 0.02, "loss": 1.0, "loss_cls": 0.5, "time": 3.0, "iter": 100}',
                                              '{"lr": 0.02, "loss": 1.']),
                         ("20261201_110000", ['{"lr": 0.02, "loss": 0.9, "loss_cls": 0.4, "time": 3.0, "iter": 100}',
                                              '{"coco/bbox_mAP": 0.3, "step": 1}'])):
        (tmp_path / "work" / stamp / "vis_data").mkdir(parents=True)
        (tmp_path / "work" / stamp / "vis_data" / "scalars.json").write_text("\n".join(lines) + "\n")
    df = mmengine_losses(tmp_path / "work")
    assert df.to_dict("list") == {"iteration": [50, 100], "loss": [2.0, 0.9], "loss_cls": [1.0, 0.4], "lr": [0.01, 0.02],
                                  "seconds": [150.0, 300.0]}
    assert mmengine_losses(tmp_path / "nothing") is None


@pytest.mark.parametrize("segmenter", builtin_segmenters())
def test_each_built_in_segmenter_reads_its_own_training_losses(tiny_models, segmenter):
    """What `harness report` plots per training: both segmenters' loss logs, every iteration of a 2-iteration
    tiny training (logged at interval 1), with the summed loss and the learning rate."""
    log = segmenter.loss_log(tiny_models[segmenter.name])
    assert log["iteration"].tolist() == [1, 2]
    assert {"loss", "lr"} <= set(log.columns) and log["loss"].gt(0).all()
    # the budget's seconds: the logged iteration times, summed over every resume of the training
    assert segmenter().budget(tiny_models[segmenter.name])["seconds"] == round(float(log["seconds"].iloc[-1]), 1) > 0
