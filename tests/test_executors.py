"""Executors: a process pool and a Ray cluster compute exactly what the in-process runner computes."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import SYNTHETIC, matrix_config, subprocess_env, write_config
from harness import config, matrix
from harness.cache import Store
from harness.errors import HarnessError


def results(run_dir: Path) -> dict[tuple, str]:
    """(cell labels, iou_type, metric, category) -> value; fails on a duplicated row."""
    out: dict[tuple, str] = {}
    with open(run_dir / "results.csv", newline="") as f:
        for r in csv.DictReader(f):
            key = (r["segmenter"], r["adapter"], r["degradation"], r["severity"], r["seed"], r["iou_type"],
                   r["metric"], r["category"])
            assert key not in out, f"duplicate result row {key}"
            out[key] = r["value"]
    return out


def cells(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "cells.jsonl").read_text().splitlines()]


def small(tmp_path: Path, adapters: list) -> config.MatrixConfig:
    raw = matrix_config({"generate": "synthetic", "params": SYNTHETIC}, adapters=adapters, seeds=[0, 1],
                        degradations=["none", {"name": "gaussian_noise", "severities": [2, 4]}])
    return config.load(write_config(tmp_path / "m.yaml", raw))


def run_with(cfg, registry, tmp_path: Path, name: str, executor=None) -> dict:
    return matrix.run(cfg, registry, out=tmp_path / name, store=Store(tmp_path / f"cache-{name}"), progress=False,
                      executor=executor)


@pytest.fixture
def reference(registry, tmp_path):
    cfg = small(tmp_path, ["identity", "smooth"])
    summary = run_with(cfg, registry, tmp_path, "reference")
    assert summary["cells"] == {"total": 12, "done": 12, "failed": 0}
    return cfg, results(tmp_path / "reference")


def test_process_pool_equals_the_in_process_run(registry, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_PLUGINS", "tests.fake_plugins")  # spawned workers build their own registry
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    cfg, expected = reference
    pool = registry.create("executor", "local", {"workers": 2})
    summary = run_with(cfg, registry, tmp_path, "pool", pool)
    assert summary["cells"] == {"total": 12, "done": 12, "failed": 0}
    assert results(tmp_path / "pool") == expected


def test_a_failed_stage_skips_what_needs_it_and_nothing_else(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_PLUGINS", "tests.fake_plugins")
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    cfg = small(tmp_path, ["identity", "explode"])
    seen: list[dict] = []
    pool = registry.create("executor", "local", {"workers": 2})
    real_run = pool.run
    pool.run = lambda stages, ctx, on_result: real_run(stages, ctx, lambda r: (seen.append(r), on_result(r)))
    summary = run_with(cfg, registry, tmp_path, "pool", pool)
    assert summary["cells"] == {"total": 12, "done": 6, "failed": 6}
    by_adapter = {(c["adapter"], c["status"]) for c in cells(tmp_path / "pool")}
    assert by_adapter == {("identity", "done"), ("explode", "failed")}
    assert all("adapt stage failed: RuntimeError: boom" in c["error"] for c in cells(tmp_path / "pool")
               if c["status"] == "failed")
    status = {}
    for r in seen:
        assert r["key"] not in status, "a stage ran twice"
        status[r["key"]] = r["status"]
    # one adapt per setting (both seeds adapt the same images), then per seed a predict and an evaluate,
    # and per setting a fidelity, none of which may run
    assert sum(s == "failed" for s in status.values()) == 3
    assert sum(s == "skipped" for s in status.values()) == 6 + 6 + 3


def test_unknown_executor_and_bad_workers(registry):
    with pytest.raises(HarnessError, match="unknown executor 'slurm'"):
        registry.create("executor", "slurm", {})
    with pytest.raises(HarnessError, match="workers must be an integer >= 0"):
        registry.create("executor", "local", {"workers": -1})


def test_devices_reach_plugins_without_changing_keys(registry, tmp_path):
    from harness.stages import Context, _plugin

    identity = registry.create("adapter", "dncnn", {}).identity()
    assert _plugin("adapter", identity, Context(cache=str(tmp_path), device="cpu")).config["device"] == "cpu"
    assert _plugin("adapter", identity).config["device"] == "auto"
    cfg = small(tmp_path, ["identity"])
    keys = [set(matrix.plan(cfg, registry, Store(tmp_path / "c"), progress=False).stages) for _ in range(2)]
    assert keys[0] == keys[1]


# -- Ray ------------------------------------------------------------------------------------------
ray = pytest.importorskip("ray")


@pytest.fixture
def ray_env(monkeypatch):
    """Workers of the local Ray instance inherit the driver's environment: fake plugins, repo on the path."""
    monkeypatch.setenv("HARNESS_PLUGINS", "tests.fake_plugins")
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_ray_equals_local_and_survives_a_killed_worker(registry, reference, tmp_path, ray_env):
    """2-CPU local cluster; the first adapt of `die_once` kills its worker: Ray retries it, and every cell
    still appears exactly once with the same numbers as the in-process run."""
    cfg, expected = reference
    marker = tmp_path / "died"
    raw = matrix_config({"generate": "synthetic", "params": SYNTHETIC}, seeds=[0, 1],
                        adapters=["identity", {"name": "smooth"}, {"name": "die_once", "params": {"marker": str(marker)}}],
                        degradations=["none", {"name": "gaussian_noise", "severities": [2, 4]}])
    cfg = config.load(write_config(tmp_path / "ray.yaml", raw))
    executor = registry.create("executor", "ray", {"num_cpus": 2, "max_retries": 2})
    summary = run_with(cfg, registry, tmp_path, "ray", executor)
    assert marker.is_file(), "the worker was never killed: the test proves nothing"
    assert summary["cells"] == {"total": 18, "done": 18, "failed": 0}
    got = results(tmp_path / "ray")  # asserts no duplicate rows
    assert {k: v for k, v in got.items() if k[1] != "die_once"} == expected
    identity = {k[:1] + k[2:]: v for k, v in got.items() if k[1] == "identity"}
    died = {k[:1] + k[2:]: v for k, v in got.items() if k[1] == "die_once"}
    assert died == identity  # die_once is identity once it has died
    assert sorted(c["status"] for c in cells(tmp_path / "ray")) == ["done"] * 18
