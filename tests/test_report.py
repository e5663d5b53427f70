"""`harness report`: significance from cached predictions, plots, and the leaderboard that links them."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from conftest import matrix_config, write_config
from harness import config, matrix
from harness.cache import Store
from harness.cli import main
from harness.evaluation.bootstrap import paired_bootstrap


@pytest.fixture
def run(registry, dataset, tmp_path):
    raw = matrix_config(dataset, adapters=["identity", "smooth"], seeds=[0, 1],
                        degradations=["none", {"name": "gaussian_noise", "severities": [1, 3]}])
    cfg = config.load(write_config(tmp_path / "m.yaml", raw))
    run_dir, store = tmp_path / "run", Store(tmp_path / "cache")
    matrix.run(cfg, registry, out=run_dir, store=store, progress=False)
    return run_dir, store


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_writes_significance_plots_and_leaderboard(run, tmp_path, fake_env, capsys):
    run_dir, store = run
    assert main(["report", str(run_dir), "--resamples", "200", "--examples", "2", "--quiet"]) == 0
    sig = rows(run_dir / "significance.csv")
    # smooth vs identity, per setting (clean + 2 severities) and iou type, both seeds pooled
    assert len(sig) == 3 * 2 and {r["adapter"] for r in sig} == {"smooth"} and {r["seeds"] for r in sig} == {"2"}
    for r in sig:
        assert float(r["lo"]) <= float(r["delta"]) <= float(r["hi"])
        assert r["significant"] == str(float(r["lo"]) > 0 or float(r["hi"]) < 0)
    manifest = json.loads((run_dir / "plots" / "manifest.json").read_text())
    files = [m["file"] for m in manifest]
    assert any("bars-gaussian_noise" in f for f in files) and any("severity-segm" in f for f in files)
    assert any("psnr-vs-gain" in f for f in files) and any("examples-" in f for f in files)
    for f in files:
        assert (run_dir / f).stat().st_size > 1000
    board = (run_dir / "leaderboard.md").read_text()
    assert "no corruption in this run has all of severities 1–5" in board  # gaussian_noise s1, s3 only
    assert "## Plots" in board and "](plots/" in board
    assert "paired bootstrap" in board


def test_single_seed_significance_equals_a_direct_bootstrap(run, tmp_path, fake_env):
    """The report pairs the right prediction files: recompute one row from the cache by hand."""
    from harness.report.build import RunView, significance

    run_dir, store = run
    view = RunView(run_dir)
    cells = [c for c in view.cells if c["seed"] == 0]
    view.cells = cells
    sig = significance(view, resamples=100, progress=False)
    row = sig[(sig["degradation"] == "gaussian_noise") & (sig["severity"] == 3) & (sig["iou_type"] == "segm")].iloc[0]
    pick = {c["adapter"]: c for c in cells if (c["degradation"], c["severity"]) == ("gaussian_noise", 3)}
    pred = lambda a: store.path("predict", pick[a]["stages"]["predict"]) / "predictions.json"  # noqa: E731
    direct = paired_bootstrap(view.gt, pred("smooth"), pred("identity"), "segm", resamples=100, seed=0)
    assert row["delta"] == pytest.approx(direct["delta"], abs=1e-12)


def test_report_to_another_folder_links_plots_from_there(run, tmp_path, fake_env):
    run_dir, _ = run
    out = tmp_path / "published" / "demo"
    board = tmp_path / "published" / "demo.md"
    assert main(["report", str(run_dir), "--out", str(out), "--leaderboard", str(board), "--examples", "1",
                 "--resamples", "50", "--quiet"]) == 0
    text = board.read_text()
    assert "](demo/plots/" in text
    for link in [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (board.parent / link).is_file(), link


def test_report_of_a_partial_run_skips_missing_stages(run, tmp_path, fake_env, capsys):
    run_dir, store = run
    cell = json.loads((run_dir / "cells.jsonl").read_text().splitlines()[-1])
    shutil.rmtree(store.path("predict", cell["stages"]["predict"]))
    assert main(["report", str(run_dir), "--resamples", "20", "--examples", "1", "--quiet"]) == 0
    assert "predictions not in the cache" in capsys.readouterr().out
    assert (run_dir / "leaderboard.md").is_file()


def test_report_of_a_folder_that_is_not_a_run(tmp_path, fake_env, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


def test_training_side_baselines_are_compared_with_the_plain_segmenter(registry, dataset, tmp_path, fake_env):
    segs = [{"name": "threshold", "profile": "tiny"},
            {"name": "threshold", "profile": "tiny", "label": "augmented", "adapters": ["identity"],
             "train_on": {"augment": [{"name": "gaussian_noise", "severities": [3]}]}},
            {"name": "threshold", "profile": "tiny", "label": "smoothed", "adapters": ["smooth"],
             "train_on": {"adapter": {"name": "smooth"}}}]
    raw = matrix_config(dataset, segmenters=segs, adapters=["identity", "smooth"])
    cfg = config.load(write_config(tmp_path / "m.yaml", raw))
    run_dir = tmp_path / "run"
    matrix.run(cfg, registry, out=run_dir, store=Store(tmp_path / "cache"), progress=False)
    assert main(["report", str(run_dir), "--resamples", "50", "--examples", "0", "--quiet"]) == 0
    base = rows(run_dir / "baselines.csv")
    compared = {(r["segmenter"], r["adapter"]) for r in base}
    assert compared == {("augmented", "identity"), ("smoothed", "smooth"), ("threshold", "smooth")}
    assert {r["reference_segmenter"] for r in base} == {"threshold"}
    for r in base:
        assert float(r["delta"]) == pytest.approx(float(r["value"]) - float(r["reference"]), abs=2e-6)  # 6 decimals in the CSV
    board = (run_dir / "leaderboard.md").read_text()
    assert "## Pre-processing vs training-side baselines" in board
    assert "| augmented (tiny)" in board
