"""No peeking at test: tuning refuses test images, and the leaderboard says which split every selection came from."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness.imageio import write_image
from harness.leaderboard.sections import header
from harness.registry import default_registry

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_adapters", ROOT / "benchmarks" / "adapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture
def prepared(tmp_path):
    """A prepared-dataset layout whose test.json takes its images from a folder not named test."""
    image = np.full((32, 32), 100, np.uint8)
    for split, folder in (("val", "val"), ("test", "holdout")):
        write_image(tmp_path / "images" / folder / "000001.png", image)
        (tmp_path / f"{split}.json").write_text(json.dumps(
            {"images": [{"id": 1, "file_name": f"images/{folder}/000001.png", "width": 32, "height": 32}]}))
    write_image(tmp_path / "release" / "images" / "test" / "000001.png", image)
    return tmp_path


@pytest.mark.parametrize("args, what", [
    (["--split", "test"], "--split test"),
    (["--images", "{data}/images/holdout"], "images/holdout"),
    (["--images", "{data}/release/images/test"], "release/images/test"),
])
def test_tune_refuses_test_images(bench, prepared, args, what):
    argv = ["--tune", "--data", str(prepared), *(a.format(data=prepared) for a in args)]
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    message = str(exc.value)
    assert "--tune refuses" in message and what in message and "\n" not in message


def test_tune_runs_on_val_by_default(bench, prepared, capsys):
    bench.main(["--tune", "--data", str(prepared), "--adapters", "median", "--n", "1"])
    out = capsys.readouterr().out
    assert f"images: {prepared / 'images' / 'val'}" in out and re.search(r"^median +\{'ksize': 5\}", out, re.M)


def test_tune_command_line_refuses_test(prepared):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "adapters.py"), "--tune", "--split", "test",
                           "--data", str(prepared)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "benchmarks/adapters.py: --tune refuses --split test: defaults are selected on val or train, never on test"]


def test_no_installed_default_is_selected_on_test():
    reg = default_registry()
    for kind in ("segmenter", "adapter", "degradation"):
        for name in reg.names(kind):
            text = reg.get(kind, name).selected_on
            assert text is None or re.match(r"NEU-Seg (val|train) \(\d+ images", text), (kind, name, text)


def _meta(adapters, plugins=None):
    meta = {"config": {"segmenters": ["no-such-segmenter"], "adapters": adapters, "degradations": ["none"]}}
    return {**meta, "plugins": plugins} if plugins is not None else meta


def test_selections_line_groups_plugins_by_split():
    from plugins.adapters.classical import Bilateral, Median, NLM

    line = header.selections(_meta([{"name": "nlm"}, {"name": "median", "label": "m5"}, "identity"]))
    assert NLM.selected_on == Median.selected_on
    assert line == f"no-such-segmenter: unknown (not installed here); median, nlm: {NLM.selected_on}"
    old = header.selections(_meta(["bilateral"], {"adapter": {"bilateral": "1"}}))
    assert old.endswith("bilateral: NEU-Seg test (12 images), before re-tuning")
    assert header.selections(_meta(["bilateral"], {"adapter": {"bilateral": Bilateral.version}})).endswith(
        f"bilateral: {Bilateral.selected_on}")
    assert "bilateral: version not recorded: v2 NEU-Seg val" in header.selections(_meta(["bilateral"]))
    assert header.selections({"config": {"adapters": ["identity"], "degradations": ["none"]}}) == \
        "none (no plugin of this run has defaults tuned on data)"


def test_provenance_ends_with_the_selections_line():
    from harness.leaderboard.run import load_page

    run = load_page(ROOT / "tests" / "fixtures" / "run_robust").runs[0]
    lines = header.provenance(run)
    assert lines[-2] == f"- **Selections:** {header.selections(run.meta)}" and lines[-1] == ""


def test_selections_line_names_a_model_configs_choice(registry, tmp_path):
    """A model config that says where its schedule came from (`# selected_on: ...`, a comment: not part of the
    model's key) shows in the line; the shipped CPU fine-tune says val."""
    chosen, plain = tmp_path / "chosen.py", tmp_path / "plain.py"
    chosen.write_text("# a schedule\n# selected_on: val (40 images)\nmax_iters = 5\n")
    plain.write_text("max_iters = 5\n")
    meta = {"config": {"segmenters": [{"name": "threshold", "params": {"config": str(chosen)}},
                                      {"name": "threshold", "params": {"config": str(plain)}},
                                      {"name": "threshold", "params": {"config": str(tmp_path / "gone.py")}}],
                       "adapters": ["identity"], "degradations": ["none"]}}
    assert header.selections(meta) == "chosen.py: val (40 images)"
    shipped = header.model_config_selection("configs/mmdet/mask-rcnn_r18_fpn_gn_cpu_finetune.py")
    assert shipped.startswith("NEU-Seg val (363 clean images")
