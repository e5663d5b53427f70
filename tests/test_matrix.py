"""The matrix runner: run folder contents, caching, extension, kill-and-resume, failure isolation, keys."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SYNTHETIC, matrix_config, subprocess_env, write_config
from harness import config, matrix
from harness.cache import Store
from harness.cli import main
from harness.errors import HarnessError


def load(tmp_path: Path, cfg: dict, name: str = "matrix.yaml") -> config.MatrixConfig:
    return config.load(write_config(tmp_path / name, cfg))


def done_stages(cache: Path) -> dict[str, int]:
    """Published stage folder -> mtime of its stage.json (the marker written last). A kill between writing the
    marker and the publishing rename leaves it in a ``.partial`` folder: not published, so not counted."""
    return {str(p.parent.relative_to(cache)): p.stat().st_mtime_ns for p in cache.glob("*/*/stage.json")
            if not p.parent.name.endswith(".partial")}


def kinds(stage_paths) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in stage_paths:
        kind = path.split(os.sep)[0]
        out[kind] = out.get(kind, 0) + 1
    return out


def read_cells(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "cells.jsonl").read_text().splitlines()]


def read_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_results_for_every_cell(registry, dataset, tmp_path):
    cfg = load(tmp_path, matrix_config(dataset, adapters=["identity", "smooth"]))
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    summary = matrix.run(cfg, registry, out=run_dir, store=Store(cache), progress=False)

    assert summary["cells"] == {"total": 4, "done": 4, "failed": 0}
    # one train and one degrade stage shared by all cells; adapt/predict/evaluate/fidelity per cell
    assert summary["computed"] == 1 + 1 + 4 * 4
    assert kinds(done_stages(cache)) == {"train": 1, "degrade": 1, "adapt": 4, "predict": 4, "evaluate": 4,
                                         "fidelity": 4}

    cells = read_cells(run_dir)
    assert [(c["adapter"], c["degradation"], c["severity"]) for c in cells] == [
        ("identity", "none", 0), ("smooth", "none", 0), ("identity", "gaussian_noise", 3),
        ("smooth", "gaussian_noise", 3)]
    assert all(c["status"] == "done" and c["error"] is None for c in cells)

    info = json.loads((run_dir / "run.json").read_text())
    assert info["config_hash"] == cfg.hash and info["finished"] and info["cells"]["done"] == 4
    assert info["dataset"]["path"] == str(dataset.resolve())
    assert (run_dir / "config.yaml").read_text() == (tmp_path / "matrix.yaml").read_text()

    rows = read_rows(run_dir)
    assert list(rows[0]) == matrix.RESULT_COLUMNS
    assert {r["cell"] for r in rows} == {c["cell"] for c in cells}
    ap = {(r["cell"], r["iou_type"]): r["value"] for r in rows if r["metric"] == "AP" and r["category"] == "all"}
    assert len(ap) == 8  # bbox and segm for each of the 4 cells
    values = {k: float(v) for k, v in ap.items()}
    assert all(0.0 <= v <= 1.0 for v in values.values())
    clean = [c["cell"] for c in cells if c["adapter"] == "identity" and c["degradation"] == "none"][0]
    noisy = [c["cell"] for c in cells if c["adapter"] == "identity" and c["degradation"] != "none"][0]
    assert values[(clean, "segm")] > 0.1  # the test segmenter really finds the synthetic defects
    assert values[(clean, "segm")] != values[(noisy, "segm")]  # and the degradation really reaches it


def test_rerun_computes_nothing_and_gives_identical_results(registry, dataset, tmp_path):
    cfg = load(tmp_path, matrix_config(dataset))
    run_dir, store = tmp_path / "run", Store(tmp_path / "cache")
    first = matrix.run(cfg, registry, out=run_dir, store=store, progress=False)
    results, cells, stages = (run_dir / "results.csv").read_bytes(), (run_dir / "cells.jsonl").read_bytes(), \
        done_stages(store.root)

    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "created": "2000-01-01T00:00:00+00:00"}))
    again = matrix.run(cfg, registry, out=run_dir, store=store, progress=False)
    assert first["computed"] > 0 and again["computed"] == 0
    assert (run_dir / "results.csv").read_bytes() == results
    assert (run_dir / "cells.jsonl").read_bytes() == cells
    assert done_stages(store.root) == stages
    assert again["created"] == "2000-01-01T00:00:00+00:00"  # provenance keeps when the run was first made


def test_adding_an_adapter_computes_only_its_cells(registry, dataset, tmp_path):
    store = Store(tmp_path / "cache")
    matrix.run(load(tmp_path, matrix_config(dataset), "a.yaml"), registry, out=tmp_path / "a", store=store,
               progress=False)
    before = done_stages(store.root)

    cfg = load(tmp_path, matrix_config(dataset, adapters=["identity", {"name": "smooth", "label": "median3"}]),
               "b.yaml")
    summary = matrix.run(cfg, registry, out=tmp_path / "b", store=store, progress=False)
    after = done_stages(store.root)

    assert {k: v for k, v in after.items() if k in before} == before  # nothing redone
    assert kinds(set(after) - set(before)) == {"adapt": 2, "predict": 2, "evaluate": 2, "fidelity": 2}
    assert summary["computed"] == 8  # adapt, predict, evaluate, fidelity for each of its two cells
    old = [r for r in read_rows(tmp_path / "a")]
    new_identity = [r for r in read_rows(tmp_path / "b") if r["adapter"] == "identity"]
    assert new_identity == old
    assert {r["adapter"] for r in read_rows(tmp_path / "b")} == {"identity", "median3"}


def _harness_run(cfg: Path, cache: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", str(cfg), "--cache", str(cache), "--out", str(out), "--quiet"]


def _wait_for_done_cell(proc: subprocess.Popen, run_dir: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stderr.read()}"
        cells = run_dir / "cells.jsonl"
        if cells.is_file() and any(c["status"] == "done" for c in read_cells(run_dir)):
            return
        time.sleep(0.02)
    raise AssertionError("no cell finished in time")


def test_killed_run_resumes_to_the_same_results(registry, tmp_path):
    cfg_dict = matrix_config({"generate": "synthetic", "params": SYNTHETIC}, adapters=["identity", "smooth"],
                             segmenters=[{"name": "threshold", "profile": "tiny", "params": {"sleep": 1.0}}])
    cfg_path = write_config(tmp_path / "slow.yaml", cfg_dict)
    cache, run_dir = tmp_path / "cache", tmp_path / "run"

    proc = subprocess.Popen(_harness_run(cfg_path, cache, run_dir), cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_done_cell(proc, run_dir)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    states = [c["status"] for c in read_cells(run_dir)]
    assert "done" in states and "pending" in states
    # only complete stages are published: every non-.partial folder carries its stage.json marker
    for folder in cache.glob("*/*"):
        assert folder.name.endswith(".partial") or (folder / "stage.json").is_file(), folder
    finished = done_stages(cache)
    assert kinds(finished)["evaluate"] >= 1

    resumed = subprocess.run(_harness_run(cfg_path, cache, run_dir), cwd=tmp_path, env=subprocess_env(),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    total = 1 + 1 + 1 + 4 * 4  # dataset, train, degrade, then adapt/predict/evaluate/fidelity per cell
    computed = int(re.search(r"(\d+) stages computed", resumed.stdout).group(1))
    assert computed == total - len(finished)
    after = done_stages(cache)
    assert len(after) == total
    assert {k: after[k] for k in finished} == finished  # finished stages were not recomputed
    assert not list(cache.glob("*/*.partial"))

    reference = matrix.run(config.load(cfg_path), registry, out=tmp_path / "reference",
                           store=Store(tmp_path / "cache2"), progress=False)
    assert reference["cells"]["done"] == 4
    assert (run_dir / "results.csv").read_text() == (tmp_path / "reference" / "results.csv").read_text()
    assert [c["status"] for c in read_cells(run_dir)] == ["done"] * 4


def test_run_killed_during_training_resumes_to_the_same_results(registry, tmp_path):
    """SIGKILL while the segmenter trains (after its first checkpoint): the rerun resumes that training and
    its results.csv is byte for byte the one of a run that was never interrupted."""
    pytest.importorskip("mmdet")
    cfg_dict = matrix_config({"generate": "synthetic", "params": SYNTHETIC}, segmenters=[
        {"name": "mmdet-mask-rcnn", "profile": "tiny",
         "params": {"max_iters": 10, "threads": 1, "checkpoint_interval": 2}}])
    cfg_path = write_config(tmp_path / "train.yaml", cfg_dict)
    cache, run_dir = tmp_path / "cache", tmp_path / "run"

    proc = subprocess.Popen(_harness_run(cfg_path, cache, run_dir), cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(cache.glob("train/*.partial/work/iter_2.pth")):
            assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert not list(cache.glob("train/*/stage.json")), "the kill landed during training"

    resumed = subprocess.run(_harness_run(cfg_path, cache, run_dir), cwd=tmp_path, env=subprocess_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    logs = "".join(p.read_text() for p in cache.glob("train/*/work/**/*.log"))
    assert "Advance dataloader" in logs, "the rerun resumed from the checkpoint, not from scratch"
    reference = matrix.run(config.load(cfg_path), registry, out=tmp_path / "reference",
                           store=Store(tmp_path / "cache2"), progress=False)
    assert reference["cells"]["done"] == 2
    assert (run_dir / "results.csv").read_bytes() == (tmp_path / "reference" / "results.csv").read_bytes()


def test_runtime_params_reach_the_stage_but_not_its_key(registry, dataset, tmp_path):
    def planned(params: dict) -> dict:
        cfg = load(tmp_path, matrix_config(dataset, adapters=[{"name": "dncnn", "params": params}]))
        return {s.key: s for s in matrix.plan(cfg, registry, Store(tmp_path / "cache"), progress=False).stages.values()}

    plain, tuned = planned({}), planned({"threads": 1, "infer_batch": 4})
    assert plain.keys() == tuned.keys()
    fits = [s for s in tuned.values() if s.kind == "fit"]
    adapts = [s for s in tuned.values() if s.kind == "adapt"]
    assert fits and adapts
    assert all(s.runtime == {"adapter": {"threads": 1, "infer_batch": 4}} for s in fits + adapts)
    assert all(s.runtime == {"adapter": {}} for s in plain.values() if s.kind in ("fit", "adapt"))
    from harness.stages import Stage

    assert Stage.from_dict(fits[0].to_dict()).runtime == fits[0].runtime


def test_failing_cell_is_recorded_and_the_others_complete(fake_env, dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "m.yaml", matrix_config(
        dataset, adapters=["identity", {"name": "explode", "params": {"message": "adapter blew up"}}]))
    run_dir = tmp_path / "run"
    code = main(["run", str(cfg), "--cache", str(tmp_path / "cache"), "--out", str(run_dir), "--quiet"])
    assert code == 1
    assert "2/4 cells done, 2 failed" in capsys.readouterr().out

    cells = read_cells(run_dir)
    failed = [c for c in cells if c["status"] == "failed"]
    assert [c["adapter"] for c in failed] == ["explode", "explode"]
    assert all("RuntimeError: adapter blew up" in c["error"] and c["error"].startswith("adapt stage failed")
               for c in failed)
    assert all(c["status"] == "done" for c in cells if c["adapter"] == "identity")
    assert {r["adapter"] for r in read_rows(run_dir)} == {"identity"}
    assert json.loads((run_dir / "run.json").read_text())["cells"] == {"total": 4, "done": 2, "failed": 2}
    logs = list((run_dir / "errors").glob("adapt-*.log"))
    assert len(logs) == 2 and all("adapter blew up" in p.read_text() for p in logs)
    assert len(list((tmp_path / "cache").glob("adapt/*/stage.json"))) == 2  # only identity's are published


def test_stage_keys_do_not_depend_on_paths(registry, dataset, tmp_path):
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(dataset, copy)
    cfg = matrix_config(dataset, adapters=["identity", "smooth"])
    a = matrix.plan(load(tmp_path, cfg, "a.yaml"), registry, Store(tmp_path / "c1"), progress=False)
    b = matrix.plan(load(tmp_path, {**cfg, "dataset": str(copy)}, "b.yaml"), registry, Store(tmp_path / "c2"),
                    progress=False)
    assert list(a.stages) == list(b.stages)
    assert [(c.id, c.final) for c in a.cells] == [(c.id, c.final) for c in b.cells]
    assert a.context.sources != b.context.sources  # the paths differ, only outside the keys

    # ...while the content does matter: one changed image changes every key that depends on the data
    image = next((copy / "images" / "test").iterdir())
    image.write_bytes(next((copy / "images" / "train").iterdir()).read_bytes())
    c = matrix.plan(load(tmp_path, {**cfg, "dataset": str(copy)}, "c.yaml"), registry, Store(tmp_path / "c2"),
                    progress=False)
    assert not set(a.stages) & set(c.stages)
    # and so do plugin params
    d = matrix.plan(load(tmp_path, {**cfg, "adapters": ["identity", {"name": "smooth", "params": {"ksize": 5}}]},
                         "d.yaml"), registry, Store(tmp_path / "c1"), progress=False)
    changed = set(d.stages) - set(a.stages)
    assert {d.stages[k].kind for k in changed} == {"adapt", "predict", "evaluate", "fidelity"} and len(changed) == 8


def test_initial_weights_enter_the_key_by_content(registry, dataset, tmp_path):
    for name, payload in (("a.pth", b"weights-1"), ("b.pth", b"weights-1"), ("c.pth", b"weights-2")):
        (tmp_path / name).write_bytes(payload)

    def train_key(init: str) -> str:
        seg = {"name": "threshold", "profile": "tiny", "init": init}
        plan = matrix.plan(load(tmp_path, matrix_config(dataset, segmenters=[seg]), "x.yaml"), registry,
                           Store(tmp_path / "c"), progress=False)
        return next(k for k, s in plan.stages.items() if s.kind == "train")

    assert train_key(str(tmp_path / "a.pth")) == train_key(str(tmp_path / "b.pth"))  # same bytes, other path
    assert train_key(str(tmp_path / "a.pth")) != train_key(str(tmp_path / "c.pth"))
    with pytest.raises(HarnessError, match="init checkpoint .*missing.pth not found"):
        train_key(str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "matrix").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_matrix_config_reads_and_names_known_plugins(path, monkeypatch):
    """A committed config that no longer parses, or names a plugin, parameter, profile or severity that does not
    exist, fails here rather than hours into someone's run (its dataset need not be on this machine)."""
    from harness.registry import default_registry

    monkeypatch.chdir(ROOT)  # fine-tune configs are named relative to the repository
    cfg = config.load(path)
    config.check_plugins(cfg, default_registry())
    assert cfg.segmenters and cfg.adapters
