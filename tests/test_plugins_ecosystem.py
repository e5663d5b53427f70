"""Writing, installing and choosing plugins: `harness plugins new`, the examples/ package, allow/block
lists and hook tracing.

Generated packages are pip-installed (offline, no dependencies) into a temporary folder that only the
subprocesses here put on PYTHONPATH, so the project's environment is never changed.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, matrix_config, subprocess_env, write_config
from harness import config
from harness.cli import main
from harness.errors import HarnessError
from harness.registry import Registry, Selection
from harness.scaffold import names, new_plugin

NEW = {"adapter": "gamma-fix", "degradation": "grain", "segmenter": "blob_seg"}


def run(args: list[str], site: Path | None = None, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """A subprocess with the repo (and ``site``) on the path; HARNESS_PLUGINS empty unless given."""
    full = subprocess_env(**{"HARNESS_PLUGINS": "", **env})
    if site:
        full["PYTHONPATH"] = os.pathsep.join([str(site), full["PYTHONPATH"]])
    return subprocess.run(args, env=full, cwd=cwd, capture_output=True, text=True, timeout=180)


def harness(*args: str, site: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "harness.cli", *args], site=site, **env)


def pip_install(packages: list[Path], target: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--target", str(target),
                           *map(str, packages)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """One package per kind from `harness plugins new`, and a copy of examples/harness-unsharp (so the
    build leaves nothing in the repo), installed into ``site``."""
    root = tmp_path_factory.mktemp("plugins")
    packages = {kind: new_plugin(kind, name, root / f"pkg-{kind}") for kind, name in NEW.items()}
    packages["example"] = Path(shutil.copytree(ROOT / "examples" / "harness-unsharp", root / "pkg-example"))
    pip_install(list(packages.values()), root / "site")
    return {**packages, "site": root / "site"}


def listing(site: Path, *args: str, **env: str) -> dict:
    proc = harness(*args, "plugins", "--json", site=site, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def results(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- harness plugins new -------------------------------------------------------------------------
def test_new_writes_a_complete_package(tmp_path, capsys):
    out = tmp_path / "pkg"
    out.mkdir()  # an empty folder is fine
    assert main(["plugins", "new", "adapter", "gamma-fix", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "example.yaml", "harness_gamma_fix/__init__.py", "pyproject.toml",
                     "tests/test_plugin.py"]
    assert not any("{{" in (out / f).read_text() for f in files)
    project = tomllib.loads((out / "pyproject.toml").read_text())
    assert project["project"]["name"] == "harness-gamma-fix"
    assert project["project"]["entry-points"]["harness"] == {"gamma_fix": "harness_gamma_fix"}
    assert 'name = "gamma-fix"' in (out / "harness_gamma_fix" / "__init__.py").read_text()
    example = config.load(out / "example.yaml")
    assert [e.name for e in example.adapters] == ["identity", "gamma-fix"]
    assert "harness -p no:gamma-fix" in (out / "README.md").read_text()


def test_names_derived_from_the_plugin_name():
    assert {k: v for k, v in names("segmenter", "blob_seg").items() if k in ("dist", "module", "entry", "cls")} == {
        "dist": "harness-blob-seg", "module": "harness_blob_seg", "entry": "blob_seg", "cls": "BlobSegSegmenter"}


@pytest.mark.parametrize("name, needle", [("Gamma", "bad plugin name 'Gamma'"), ("1x", "bad plugin name"),
                                          ("a b", "bad plugin name"), ("x--y", "bad plugin name"),
                                          ("harness-gamma", "without the 'harness-' prefix")])
def test_new_refuses_bad_names(tmp_path, capsys, name, needle):
    assert main(["plugins", "new", "adapter", name, "--out", str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not (tmp_path / "pkg").exists()


def test_new_never_writes_into_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(HarnessError, match=f"{tmp_path}: already exists and is not an empty folder"):
        new_plugin("degradation", "grain", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_generated_and_example_packages_install_list_and_pass_their_own_tests(installed):
    got = {(p["kind"], p["name"]): p["origin"] for p in listing(installed["site"])["plugins"]}
    for kind, name in NEW.items():
        n = names(kind, name)
        assert got[(kind, name)] == f"{n['dist']} 0.1.0 ({n['entry']} = {n['module']})"
    assert got[("adapter", "unsharp")] == "harness-unsharp 0.1.0 (unsharp = harness_unsharp)"
    assert got[("adapter", "identity")].startswith("harness ")  # built-ins beside them

    for key in (*NEW, "example"):
        proc = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], site=installed["site"],
                   cwd=installed[key])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        summary = proc.stdout.strip().splitlines()[-1]
        assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary


def test_generated_plugins_run_in_a_matrix(installed, dataset, tmp_path):
    """One cell on the threshold test segmenter, with the generated adapter and degradation; one cell
    with the generated segmenter and the example adapter."""
    cells = {"new": matrix_config(dataset, adapters=[NEW["adapter"]],
                                  degradations=[{"name": NEW["degradation"], "severities": [3]}]),
             "example": matrix_config(dataset, segmenters=[{"name": NEW["segmenter"], "profile": "cpu"}],
                                      adapters=["unsharp"], degradations=["none"])}
    for name, cfg in cells.items():
        path = write_config(tmp_path / f"{name}.yaml", cfg)
        proc = harness("run", str(path), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / name),
                       "--quiet", site=installed["site"], HARNESS_PLUGINS="tests.fake_plugins")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "1/1 cells done, 0 failed" in proc.stdout
    rows = results(tmp_path / "new")
    assert {(r["segmenter"], r["adapter"], r["degradation"], r["severity"]) for r in rows} == {
        ("threshold", NEW["adapter"], NEW["degradation"], "3")}
    rows = results(tmp_path / "example")
    assert {(r["segmenter"], r["adapter"], r["degradation"]) for r in rows} == {(NEW["segmenter"], "unsharp", "none")}
    ap = [float(r["value"]) for r in rows if r["metric"] == "AP" and r["category"] == "all" and r["value"]]
    assert len(ap) == 2 and all(0.0 <= v <= 1.0 for v in ap)


# -- allow and block lists ----------------------------------------------------------------------
def load(strict: bool = False, **kwargs) -> Registry:
    env = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("HARNESS_")}
    return Registry(strict=strict, selection=Selection.from_env(env, **kwargs)).load_entry_points()


@pytest.mark.parametrize("selector", ["identity", "adapter:identity", "Adapter:IDENTITY"])
def test_block_one_builtin_by_plugin_name(selector):
    reg = load(HARNESS_BLOCK_PLUGINS=selector)
    assert ("adapter", "identity") not in reg.entries and ("degradation", "jpeg") in reg.entries
    skip = [s for s in reg.skipped if s.name == "identity"]
    assert len(skip) == 1 and skip[0].kind == "adapter" and skip[0].origin.startswith("harness ")
    assert skip[0].reason == f"blocked by HARNESS_BLOCK_PLUGINS={selector}"
    assert reg.errors == [] and reg.warnings == []
    with pytest.raises(HarnessError, match=r"adapter 'identity' from harness .* is not loaded: blocked by"):
        reg.get("adapter", "identity")


@pytest.mark.parametrize("selector", ["degradations", "harness:degradations", "plugins.degradations"])
def test_block_by_entry_point_or_distribution_skips_the_whole_package(selector):
    reg = load(block=[selector])
    assert reg.names("degradation") == [] and "identity" in reg.names("adapter")
    assert [(s.kind, s.reason) for s in reg.skipped] == [("", f"blocked by -p no:{selector}")]
    assert reg.skipped[0].origin.endswith("(degradations = plugins.degradations)")
    assert load(block=["harness"]).entries == {}  # built-ins follow the same rules as anyone


def test_allow_keeps_only_what_matches_and_the_command_line_replaces_the_environment():
    reg = load(HARNESS_ALLOW_PLUGINS="segmenters,identity")
    assert {k for k, _ in reg.entries} == {"segmenter", "adapter"} and reg.names("adapter") == ["identity"]
    assert all(s.reason == "not in the allow list (HARNESS_ALLOW_PLUGINS)" for s in reg.skipped)
    assert ("degradation", "jpeg") in {(s.kind, s.name) for s in reg.skipped}
    reg = load(HARNESS_ALLOW_PLUGINS="segmenters", allow=["degradation:jpeg"])
    assert list(reg.entries) == [("degradation", "jpeg")]
    reg = load(HARNESS_ALLOW_PLUGINS="harness", HARNESS_BLOCK_PLUGINS="jpeg")  # block beats allow
    assert "jpeg" not in reg.names("degradation") and "motion_blur" in reg.names("degradation")


def test_unknown_names_warn_and_are_an_error_when_strict():
    reg = load(HARNESS_BLOCK_PLUGINS="identity,no-such-thing", allow=["harness", "adapter:nope"])
    assert reg.warnings == [
        "--allow-plugins adapter:nope: no installed plugin, distribution, entry point or module has this name",
        "HARNESS_BLOCK_PLUGINS=no-such-thing: no installed plugin, distribution, entry point or module has this name"]
    with pytest.raises(HarnessError, match="HARNESS_BLOCK_PLUGINS=no-such-thing: no installed plugin"):
        load(strict=True, HARNESS_BLOCK_PLUGINS="no-such-thing")


def test_command_line_options_and_listing(installed):
    site = installed["site"]
    out = listing(site, "-p", "no:unsharp", "-p", "no:adapter:gamma-fix", "--block-plugins", "grain,zzz",
                  "-p", "tests.fake_plugins")
    names_ = {p["name"] for p in out["plugins"]}
    assert {"threshold", "smooth", "identity", NEW["segmenter"]} <= names_
    assert not names_ & {"unsharp", "gamma-fix", "grain"}
    assert {p["origin"] for p in out["plugins"] if p["name"] == "threshold"} == {"tests.fake_plugins (-p)"}
    status = {(s["kind"], s["name"] or s["origin"]): s["status"] for s in out["skipped"]}
    assert status == {("", "harness-unsharp 0.1.0 (unsharp = harness_unsharp)"): "blocked by -p no:unsharp",
                      ("adapter", "gamma-fix"): "blocked by -p no:adapter:gamma-fix",
                      ("", "harness-grain 0.1.0 (grain = harness_grain)"): "blocked by -p no:grain"}
    assert out["errors"] == [] and out["warnings"] == [
        "-p no:zzz: no installed plugin, distribution, entry point or module has this name"]

    proc = harness("--allow-plugins", "harness-unsharp,threshold", "plugins", site=site,
                   HARNESS_PLUGINS="tests.fake_plugins", HARNESS_BLOCK_PLUGINS="nothing-here")
    assert proc.returncode == 0
    table, _, skipped = proc.stdout.partition("not loaded (allow/block lists):")
    assert [line.split()[:2] for line in table.strip().splitlines()[2:]] == [
        ["adapter", "unsharp"], ["segmenter", "threshold"]]
    assert "not in the allow list (--allow-plugins)" in skipped and "identity" in skipped
    assert proc.stderr == ("harness: warning: HARNESS_BLOCK_PLUGINS=nothing-here: no installed plugin, "
                           "distribution, entry point or module has this name\n")


def test_a_blocked_plugin_named_in_a_config_says_why(dataset, tmp_path):
    cfg = write_config(tmp_path / "m.yaml", matrix_config(dataset, adapters=["smooth"], degradations=["none"]))
    proc = harness("-p", "no:smooth", "run", str(cfg), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "r"),
                   HARNESS_PLUGINS="tests.fake_plugins")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("adapter 'smooth' from tests.fake_plugins (HARNESS_PLUGINS) is not loaded: "
                                        "blocked by -p no:smooth")


# -- tracing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["env", "option"])
def test_tracing_prints_each_hook_call_and_what_it_registered(how):
    args, env = (["--trace-hooks"], {}) if how == "option" else ([], {"HARNESS_TRACE": "1"})
    proc = harness(*args, "-p", "no:segmenters", "plugins", "--json", HARNESS_PLUGINS="tests.fake_plugins", **env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["plugins"]
    lines = proc.stderr.splitlines()
    start = lines.index("load tests.fake_plugins (HARNESS_PLUGINS) [harness]")
    end = lines.index("  finish harness_register_adapters --> [] [hook]", start)
    assert lines[start + 1:start + 3] == ["  harness_register_adapters [hook]",
                                          "      register: <register for tests.fake_plugins (HARNESS_PLUGINS)>"]
    assert {"  registered adapter smooth version 1 [harness]",
            "  registered adapter explode version 1 [harness]"} <= set(lines[start + 3:end])
    assert "  registered adapter identity version 1 [harness]" in lines
    assert any(line.startswith("skip harness ") and "(segmenters = plugins.segmenters)" in line for line in lines)
    assert harness("plugins", HARNESS_TRACE="0").stderr == ""
