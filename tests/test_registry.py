"""Plugin discovery: broken plugins are reported and skipped (fatal with --strict); listings say where things come from."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import tests.broken_plugins as broken
from conftest import subprocess_env
from harness.errors import HarnessError
from harness.registry import Registry
from plugins.adapters.identity import Identity

BUILTINS = {("adapter", "identity"), ("degradation", "gaussian_noise"), ("degradation", "motion_blur"),
            ("degradation", "jpeg"), ("degradation", "domain_b"), ("segmenter", "mmdet-mask-rcnn")}
DIST = f"harness {metadata.version('harness')}"


def harness(*args: str, plugins: str = "", path: Path | None = None, **extra: str) -> subprocess.CompletedProcess:
    env = subprocess_env(HARNESS_PLUGINS=plugins, **extra)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env["PYTHONPATH"]])
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def site(tmp_path) -> Path:
    """A folder on PYTHONPATH holding a module that fails on import and an installed distribution
    (a dist-info with an entry point) that points at it, as a broken third-party package would."""
    (tmp_path / "exploding_mod.py").write_text('raise RuntimeError("needs a library that is not installed")\n')
    info = tmp_path / "fakedist-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakedist\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[harness]\nbroken = exploding_mod\n")
    return tmp_path


@pytest.fixture
def clean_registry(monkeypatch) -> Registry:
    monkeypatch.delenv("HARNESS_PLUGINS", raising=False)
    return Registry().load_entry_points()


def test_builtins_load_without_errors(clean_registry):
    assert BUILTINS <= set(clean_registry.entries)
    assert clean_registry.errors == []
    assert all(e.origin.startswith(DIST) for e in clean_registry.listing())


def test_misbehaving_hooks_are_reported_and_skipped(clean_registry):
    reg = clean_registry
    reg.add(broken)
    errors = {e.origin: e.error for e in reg.errors}
    hook = "tests.broken_plugins [harness_register_{}]".format
    assert set(errors) == {hook("degradations"), hook("adapters"), hook("segmenters")}
    assert errors[hook("degradations")] == "RuntimeError: degradation hook exploded"
    assert errors[hook("adapters")] == (
        f"HarnessError: adapter 'identity' is already registered by {DIST} (adapters = plugins.adapters)")
    assert "is not a subclass of harness.interfaces.Segmenter" in errors[hook("segmenters")]
    assert all(e.error.split(":")[0] in e.detail for e in reg.errors)

    assert reg.get("adapter", "identity") is Identity  # the original is kept
    assert reg.entries[("adapter", "identity")].version == "1"
    assert reg.get("adapter", "negate") is broken.Negate  # registered beside the duplicate: kept
    assert reg.entries[("adapter", "negate")].origin == "tests.broken_plugins"
    assert BUILTINS <= set(reg.entries)
    assert ("segmenter", "not-a-plugin") not in reg.entries
    with pytest.raises(HarnessError, match=r"unknown degradation 'x' \(available: domain_b, .*plugin load errors: 3"):
        reg.get("degradation", "x")


def test_strict_registry_raises_on_the_first_broken_hook(monkeypatch):
    monkeypatch.delenv("HARNESS_PLUGINS", raising=False)
    reg = Registry(strict=True).load_entry_points()
    with pytest.raises(HarnessError, match=r"plugin tests.broken_plugins \[harness_register_\w+\]"):
        reg.add(broken)


def test_module_failing_on_import_is_reported_and_builtins_still_load(site):
    proc = harness("plugins", "--json", plugins="exploding_mod,tests.fake_plugins", path=site)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    names = {(p["kind"], p["name"]) for p in listing["plugins"]}
    assert BUILTINS | {("segmenter", "threshold"), ("adapter", "smooth")} <= names
    assert sorted(e["origin"] for e in listing["errors"]) == [
        "exploding_mod (HARNESS_PLUGINS)", "fakedist 1.2 (broken = exploding_mod)"]
    assert all(e["error"] == "RuntimeError: needs a library that is not installed" for e in listing["errors"])


def test_strict_makes_a_broken_plugin_fatal(site):
    proc = harness("--strict", "plugins", plugins="exploding_mod", path=site)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert "exploding_mod" in proc.stderr and "needs a library that is not installed" in proc.stderr


def test_unimportable_module_name_is_reported():
    proc = harness("plugins", "--json", plugins="tests.no_such_plugin_module")
    assert proc.returncode == 0
    errors = json.loads(proc.stdout)["errors"]
    assert [e["origin"] for e in errors] == ["tests.no_such_plugin_module (HARNESS_PLUGINS)"]
    assert errors[0]["error"].startswith("ModuleNotFoundError")


def test_listing_shows_kind_name_version_origin():
    proc = harness("plugins", plugins="tests.fake_plugins,tests.broken_plugins")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["kind", "name", "version", "origin", "summary"]
    rows = {tuple(line.split()[:2]): line for line in lines[2:]}
    assert rows[("segmenter", "threshold")].split()[2:4] == ["1", "tests.fake_plugins"]
    assert "(HARNESS_PLUGINS)" in rows[("segmenter", "threshold")]
    assert rows[("adapter", "negate")].split()[2] == "2"
    assert rows[("adapter", "identity")].split()[2:5] == ["1", *DIST.split()]
    # load problems go to stderr, one line each, naming where they came from
    problems = proc.stderr.splitlines()
    assert len(problems) == 3 and all(p.startswith("load error: tests.broken_plugins (HARNESS_PLUGINS) [")
                                      for p in problems)


def test_blocked_or_not_allowed_broken_package_is_never_imported(site):
    for args, env in ((["-p", "no:fakedist"], {}), ([], {"HARNESS_ALLOW_PLUGINS": "harness"})):
        proc = harness(*args, "plugins", "--json", path=site, **env)
        assert proc.returncode == 0, proc.stderr
        listing = json.loads(proc.stdout)
        assert listing["errors"] == [] and BUILTINS <= {(p["kind"], p["name"]) for p in listing["plugins"]}
        assert [(s["kind"], s["origin"]) for s in listing["skipped"]] == [("", "fakedist 1.2 (broken = exploding_mod)")]


def test_installed_package_taking_a_builtin_name_is_reported_and_the_rest_kept(tmp_path):
    """Its entry point sorts before the built-ins' (`aaa` < `adapters`), yet built-ins load first and keep
    their names; its other plugin still registers."""
    (tmp_path / "dup_mod.py").write_text(
        "from harness.hookspecs import hookimpl\n"
        "from tests.broken_plugins import ImpostorIdentity, Negate\n"
        "@hookimpl\n"
        "def harness_register_adapters(register):\n"
        "    register(ImpostorIdentity)\n"
        "    register(Negate)\n")
    info = tmp_path / "dupdist-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dupdist\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[harness]\naaa = dup_mod\n")
    listing = json.loads(harness("plugins", "--json", path=tmp_path).stdout)
    assert listing["errors"] == [{
        "origin": "dupdist 0.3 (aaa = dup_mod) [harness_register_adapters]",
        "error": f"HarnessError: adapter 'identity' is already registered by {DIST} (adapters = plugins.adapters)"}]
    origins = {p["name"]: p["origin"] for p in listing["plugins"] if p["kind"] == "adapter"}
    assert origins["identity"].startswith(DIST) and origins["negate"] == "dupdist 0.3 (aaa = dup_mod)"
    assert BUILTINS <= {(p["kind"], p["name"]) for p in listing["plugins"]}
