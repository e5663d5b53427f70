"""Shared fixtures: a tiny synthetic dataset, a registry with the test-double plugins, config writers."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.fake_plugins` must import the same way here and in subprocesses
    sys.path.insert(0, str(ROOT))

SYNTHETIC = {"n_train": 8, "n_val": 2, "n_test": 6, "size": 64, "seed": 0}


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """A prepared synthetic dataset; read-only for tests (copy it before changing anything)."""
    from harness.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic(out, progress=False, **SYNTHETIC)
    return out


def builtin_segmenters() -> list:
    """pytest params of the built-in segmenters this install can run (mmdet needs mmcv's compiled ops). Call it
    after ``pytest.importorskip("torch")``."""
    from plugins.segmenters.tv_mask_rcnn import TVMaskRCNN

    out = [pytest.param(TVMaskRCNN, id="tv-mask-rcnn")]
    try:
        import mmcv.ops  # noqa: F401
        import mmdet  # noqa: F401
    except ImportError:
        return out
    from plugins.segmenters.mmdet_mask_rcnn import MMDetMaskRCNN

    return [pytest.param(MMDetMaskRCNN, id="mmdet-mask-rcnn"), *out]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, dataset) -> dict[str, Path]:
    """A 2-iteration `tiny` model of each built-in segmenter (1 thread), trained once per session: for tests
    that need a real network, not a good one."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("tiny-models")
    out = {}
    for param in builtin_segmenters():
        cls = param.values[0]
        cls(max_iters=2, threads=1).train(dataset, root / cls.name, "tiny", seed=0)
        out[cls.name] = root / cls.name
    return out


@pytest.fixture
def registry(monkeypatch):
    """Built-in plugins plus tests.fake_plugins, installed as the process-wide registry that stages use."""
    import harness.registry
    import tests.fake_plugins

    monkeypatch.delenv("HARNESS_PLUGINS", raising=False)
    reg = harness.registry.Registry().load_entry_points()
    reg.add(tests.fake_plugins)
    monkeypatch.setattr(harness.registry, "_default", reg)
    return reg


@pytest.fixture
def fake_env(monkeypatch):
    """Environment for in-process CLI calls that build the default registry from HARNESS_PLUGINS."""
    import harness.registry

    monkeypatch.setenv("HARNESS_PLUGINS", "tests.fake_plugins")
    monkeypatch.setattr(harness.registry, "_default", None)


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m harness.cli` in a subprocess: repo on the path, fake plugins loaded."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["HARNESS_PLUGINS"] = "tests.fake_plugins"
    env.update(extra)
    return env


def matrix_config(dataset: Any, **overrides: Any) -> dict[str, Any]:
    """A small matrix on the threshold segmenter: 2 degradation cells x given adapters."""
    cfg = {
        "name": "test",
        "dataset": str(dataset) if isinstance(dataset, Path) else dataset,
        "segmenters": [{"name": "threshold", "profile": "tiny"}],
        "adapters": ["identity"],
        "degradations": ["none", {"name": "gaussian_noise", "severities": [3]}],
        "seeds": [0],
    }
    cfg.update(overrides)
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
