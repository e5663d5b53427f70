"""`harness cache du | ls | gc`: a run's whole closure is kept, the rest is freed, gc waits for a running matrix."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SYNTHETIC, matrix_config, subprocess_env, write_config
from harness import cachetool, config, matrix
from harness.cache import Store
from harness.cli import main
from harness.errors import HarnessError

GENERATED = {"generate": "synthetic", "params": SYNTHETIC}


def wide(**overrides) -> dict:
    """A matrix with every cached stage kind: dataset, trainset, train (one fine-tuned from another), fit,
    degrade, adapt, predict, evaluate and fidelity."""
    cfg = matrix_config(GENERATED, adapters=["identity", {"name": "meanshift", "params": {"fit_data": "paired"}}],
                        segmenters=[{"name": "threshold", "profile": "tiny", "label": "plain"},
                                    {"name": "threshold", "profile": "tiny", "label": "tuned",
                                     "init": {"segmenter": "plain"}, "adapters": ["identity"],
                                     "train_on": {"adapter": {"name": "meanshift",
                                                              "params": {"fit_data": "source"}}}}])
    cfg.update(overrides)
    return cfg


def run(registry, tmp_path: Path, name: str, cfg: dict, cache: Path) -> dict:
    loaded = config.load(write_config(tmp_path / f"{name}.yaml", {**cfg, "name": name}))
    return matrix.run(loaded, registry, out=tmp_path / name, store=Store(cache), progress=False)


def published(cache: Path) -> dict[str, int]:
    """Finished stage key -> mtime of its stage.json."""
    return {p.parent.name: p.stat().st_mtime_ns for p in cache.glob("*/*/stage.json")}


def files_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture
def two_runs(registry, tmp_path):
    """Runs a and b sharing one cache: same dataset, trainings and degraded images, different adapters."""
    cache = tmp_path / "cache"
    run(registry, tmp_path, "a", wide(), cache)
    run(registry, tmp_path, "b", matrix_config(GENERATED, segmenters=[{"name": "threshold", "profile": "tiny",
                                                                        "label": "plain"}],
                                               adapters=["identity", "smooth"]), cache)
    return tmp_path / "a", tmp_path / "b", cache


def test_ls_lists_the_whole_closure_of_a_run(registry, tmp_path, capsys):
    cache = tmp_path / "cache"
    summary = run(registry, tmp_path, "a", wide(), cache)
    assert summary["cells"]["failed"] == 0
    listing = cachetool.ls(tmp_path / "a")  # the cache run.json names

    # featuregap needs a segmenter that captures features (tests/test_featuregap.py)
    assert {r["kind"] for r in listing["stages"]} == set(cachetool.CACHED_KINDS) - {"featuregap"}
    assert {r["key"] for r in listing["stages"]} == set(published(cache))  # this cache holds only run a
    assert listing["counts"] == {"present": len(published(cache)), "missing": 0, "external": 0}
    assert all(r["bytes"] == files_size(cache / r["kind"] / r["key"]) for r in listing["stages"])

    predict = next(r["key"] for r in listing["stages"] if r["kind"] == "predict")
    os.rename(cache / "predict" / predict, tmp_path / "moved")
    again = {r["key"]: r["status"] for r in cachetool.ls(tmp_path / "a")["stages"]}
    assert again[predict] == "missing" and list(again.values()).count("missing") == 1

    assert main(["cache", "ls", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["predict", predict, "missing"] for line in out.splitlines())
    assert f"{len(again)} stages: {len(again) - 1} present" in out and "1 missing" in out


def test_a_prepared_dataset_is_listed_as_external(registry, dataset, tmp_path):
    run(registry, tmp_path, "a", matrix_config(dataset), tmp_path / "cache")
    rows = cachetool.ls(tmp_path / "a")["stages"]
    assert [r["status"] for r in rows if r["kind"] == "source"] == ["external"]
    assert all(r["status"] == "present" for r in rows if r["kind"] != "source")


def test_gc_frees_what_no_kept_run_needs_and_keeps_the_rest(registry, two_runs, tmp_path, capsys):
    a, b, cache = two_runs
    before = published(cache)
    need_a = {r["key"] for r in cachetool.ls(a)["stages"]}
    need_b = {r["key"] for r in cachetool.ls(b)["stages"]}
    assert need_a & need_b and need_b - need_a and set(before) == need_a | need_b
    doomed = need_b - need_a
    doomed_bytes = sum(files_size(cache / cachetool.kind_of(k) / k) for k in doomed)

    dry = cachetool.gc([a], dry_run=True)
    assert published(cache) == before  # a dry run deletes nothing
    assert dry["total"] == {"stages": len(doomed), "bytes": doomed_bytes}
    assert {r["kind"]: r["stages"] for r in dry["freed"]} == {"adapt": 2, "predict": 2, "evaluate": 2, "fidelity": 2}

    assert main(["cache", "gc", "--keep", str(a)]) == 0
    out = capsys.readouterr().out
    assert published(cache) == {k: v for k, v in before.items() if k in need_a}  # kept stages untouched
    assert f"freed {cachetool.human(doomed_bytes)}" in out and f"{doomed_bytes}" in out

    results = (a / "results.csv").read_bytes()
    again = run(registry, tmp_path, "a", wide(), cache)
    assert again["computed"] == 0 and (a / "results.csv").read_bytes() == results  # a lost nothing it needs
    gone = cachetool.ls(b)
    assert gone["counts"]["missing"] == len(doomed)
    assert {r["key"] for r in gone["stages"] if r["status"] == "present"} == need_a & need_b

    assert cachetool.gc([a, b], dry_run=True)["total"]["stages"] == 0


def test_gc_of_a_run_folder_from_before_run_json_listed_its_stages(registry, two_runs, tmp_path):
    """Older run folders record only train/degrade/adapt/predict keys per cell: gc still keeps their fits,
    trainsets, dataset, evaluations and fidelity stages."""
    a, b, cache = two_runs
    need_a = {r["key"] for r in cachetool.ls(a)["stages"]}
    info = json.loads((a / "run.json").read_text())
    del info["stages"]
    (a / "run.json").write_text(json.dumps(info))
    assert cachetool.ls(a)["legacy"]
    assert {r["key"] for r in cachetool.ls(a)["stages"]} == need_a

    cachetool.gc([a])
    assert set(published(cache)) == need_a
    assert run(registry, tmp_path, "a", wide(), cache)["computed"] == 0


def test_du_counts_sizes_by_kind_and_by_run(two_runs, capsys):
    a, b, cache = two_runs
    usage = cachetool.du([a, b])
    expected: dict[str, list[int]] = {}
    for marker in cache.glob("*/*/stage.json"):
        row = expected.setdefault(marker.parent.parent.name, [0, 0])
        row[0] += 1
        row[1] += files_size(marker.parent)
    assert {r["kind"]: [r["stages"], r["bytes"]] for r in usage["kinds"]} == expected
    assert usage["total"]["bytes"] == sum(v[1] for v in expected.values())

    need = {d: {r["key"] for r in cachetool.ls(d)["stages"]} for d in (a, b)}
    shared = need[a] & need[b]
    rows = {Path(r["run"]): r for r in usage["runs"]}
    for d, other in ((a, b), (b, a)):
        assert rows[d]["stages"] == rows[d]["present"] == len(need[d]) and rows[d]["missing"] == 0
        assert rows[d]["shared"] == len(shared)
        assert rows[d]["own_bytes"] == sum(files_size(cache / cachetool.kind_of(k) / k) for k in need[d] - need[other])
    assert usage["unneeded"] == {"stages": 0, "bytes": 0}

    assert main(["cache", "du", "--cache", str(cache)]) == 0  # no run folders: by kind only
    out = capsys.readouterr().out
    assert "evaluate" in out and cachetool.human(usage["total"]["bytes"]) in out and "only this run" not in out
    assert main(["cache", "du", str(a), str(b), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == usage


def test_gc_deletes_partial_folders_older_than_a_day(registry, tmp_path):
    cache = tmp_path / "cache"
    run(registry, tmp_path, "a", matrix_config(GENERATED), cache)
    old, fresh, tomb = (cache / "train" / "train-old.partial", cache / "adapt" / "adapt-new.partial",
                        cache / "predict" / "predict-x.deleting")
    for folder in (old, fresh, tomb):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "ckpt.bin").write_bytes(b"x" * 1000)
    two_days_ago = time.time() - 2 * 86400
    for path in (old / "sub" / "ckpt.bin", old / "sub", old):
        os.utime(path, (two_days_ago, two_days_ago))
    stages = published(cache)

    freed = cachetool.gc([tmp_path / "a"])
    assert not old.exists() and not tomb.exists() and fresh.exists()  # a live training's folder stays
    assert freed["partial"] == {"folders": 2, "bytes": 2000} and freed["total"] == {"stages": 0, "bytes": 2000}
    assert published(cache) == stages
    assert cachetool.du(cache=cache)["partial"] == {"folders": 1, "bytes": 1000}


@pytest.mark.parametrize("case, message", [
    ("missing", r"run\.json: not found; is .* a run folder"),
    ("run.json", r"run\.json: not valid JSON"),
    ("cells.jsonl", r"cells\.jsonl:2: not valid JSON"),
    ("no-hash", r"run\.json: not a run record"),
])
def test_bad_run_folders_are_one_line_errors_and_gc_deletes_nothing(registry, tmp_path, capsys, case, message):
    cache = tmp_path / "cache"
    run(registry, tmp_path, "a", matrix_config(GENERATED), cache)
    bad = tmp_path / "bad"
    if case != "missing":
        run(registry, tmp_path, "bad", matrix_config(GENERATED, adapters=["smooth"]), cache)
    if case == "run.json":
        (bad / "run.json").write_text('{"name": "bad", ')
    elif case == "cells.jsonl":
        lines = (bad / "cells.jsonl").read_text().splitlines()
        (bad / "cells.jsonl").write_text("\n".join([lines[0], lines[1][:20], *lines[2:]]) + "\n")
    elif case == "no-hash":
        (bad / "run.json").write_text("[]")
    stages = published(cache)

    for argv in (["cache", "gc", "--keep", str(tmp_path / "a"), str(bad), "--cache", str(cache)],
                 ["cache", "ls", str(bad), "--cache", str(cache)], ["cache", "du", str(bad), "--cache", str(cache)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("harness: error: ")
        assert re.search(message, err) and str(bad) in err
    assert published(cache) == stages


def test_cells_without_stage_keys_and_no_stage_list_are_refused(registry, tmp_path):
    run(registry, tmp_path, "a", matrix_config(GENERATED), tmp_path / "cache")
    a = tmp_path / "a"
    info = json.loads((a / "run.json").read_text())
    del info["stages"]
    (a / "run.json").write_text(json.dumps(info))
    cells = [json.loads(line) for line in (a / "cells.jsonl").read_text().splitlines()]
    (a / "cells.jsonl").write_text("".join(json.dumps({k: v for k, v in c.items() if k != "stages"}) + "\n"
                                           for c in cells))
    with pytest.raises(HarnessError, match=r"cells\.jsonl:1: a cell without its 'stages' keys"):
        cachetool.gc([a])


def test_run_folders_naming_different_caches_need_cache(registry, tmp_path):
    run(registry, tmp_path, "a", matrix_config(GENERATED), tmp_path / "c1")
    run(registry, tmp_path, "b", matrix_config(GENERATED), tmp_path / "c2")
    with pytest.raises(HarnessError, match="name different caches .*pass --cache"):
        cachetool.du([tmp_path / "a", tmp_path / "b"])
    assert cachetool.du([tmp_path / "a", tmp_path / "b"], cache=tmp_path / "c1")["runs"][1]["missing"] == 0


# -- gc beside a running matrix (two processes) -----------------------------------------------------
GATE = '''
"""An identity adapter that waits for the test's go-ahead: a matrix caught while it writes."""
import time
from pathlib import Path

from harness.hookspecs import hookimpl
from harness.interfaces import Adapter


class Gate(Adapter):
    name = "gate"
    version = "1"
    params = {"dir": ""}

    def adapt(self, image):
        folder = Path(self.config["dir"])
        (folder / "waiting").touch()
        deadline = time.monotonic() + 120
        while not (folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return image


@hookimpl
def harness_register_adapters(register):
    register(Gate)
'''


def _wait_for(predicate, what: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, f"process ended while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_gc_never_deletes_the_stages_of_a_running_matrix(registry, tmp_path):
    cache, gate = tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    (tmp_path / "gate_plugin.py").write_text(GATE)
    run(registry, tmp_path, "kept", matrix_config(GENERATED, adapters=["smooth"]), cache)
    env = subprocess_env(HARNESS_PLUGINS="tests.fake_plugins,gate_plugin",
                         PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    cfg = write_config(tmp_path / "busy.yaml", matrix_config(
        GENERATED, name="busy", adapters=["identity", {"name": "gate", "params": {"dir": str(gate)}}],
        degradations=["none"]))
    harness = [sys.executable, "-m", "harness.cli"]
    busy = subprocess.Popen([*harness, "run", str(cfg), "--cache", str(cache), "--out", str(tmp_path / "busy"),
                             "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    waiting = None
    try:
        _wait_for((gate / "waiting").exists, "the matrix to reach its gated stage", busy)
        written = published(cache)
        busy_cells = [json.loads(line) for line in (tmp_path / "busy" / "cells.jsonl").read_text().splitlines()]
        assert [c["status"] for c in busy_cells] == ["done", "pending"]  # identity's cell is published

        refused = subprocess.run([*harness, "cache", "gc", "--keep", str(tmp_path / "kept")], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "in use by a running `harness run`" in refused.stderr
        assert published(cache) == written

        err = tmp_path / "gc.err"
        with open(err, "w") as stderr:
            waiting = subprocess.Popen([*harness, "cache", "gc", "--keep", str(tmp_path / "kept"), "--wait"],
                                       cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        _wait_for(lambda: "waiting for the running" in err.read_text(), "gc to wait", waiting)
        assert published(cache) == written and busy.poll() is None
    finally:
        (gate / "go").touch()
    _, busy_err = busy.communicate(timeout=120)
    assert busy.returncode == 0, busy_err
    gc_out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and "freed" in gc_out

    # the matrix finished whole: every cell done, with the results of an undisturbed run of the same config
    cells = [json.loads(line) for line in (tmp_path / "busy" / "cells.jsonl").read_text().splitlines()]
    assert [c["status"] for c in cells] == ["done", "done"]
    registry.add(_import(tmp_path / "gate_plugin.py"))
    reference = matrix.run(config.load(cfg), registry, out=tmp_path / "reference",
                           store=Store(tmp_path / "cache2"), progress=False)
    assert reference["cells"]["done"] == 2
    assert (tmp_path / "busy" / "results.csv").read_bytes() == (tmp_path / "reference" / "results.csv").read_bytes()
    # and only then did gc free its stages, keeping the kept run's
    kept = {r["key"] for r in cachetool.ls(tmp_path / "kept")["stages"]}
    assert set(published(cache)) == kept


def _import(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_matrix_waits_while_gc_holds_the_cache(registry, tmp_path):
    cache = tmp_path / "cache"
    cfg = write_config(tmp_path / "m.yaml", matrix_config(GENERATED))
    err = tmp_path / "run.err"
    with Store(cache).lock(exclusive=True):
        with open(err, "w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(cfg), "--cache", str(cache),
                                     "--out", str(tmp_path / "run"), "--quiet"], cwd=tmp_path,
                                    env=subprocess_env(), stdout=subprocess.PIPE, stderr=stderr, text=True)
        _wait_for(lambda: "waiting for `harness cache gc`" in err.read_text(), "the run to wait", proc)
        assert not published(cache) and not (tmp_path / "run").exists()  # it planned and wrote nothing yet
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "2/2 cells done" in out
