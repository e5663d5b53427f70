"""Every committed leaderboard is what the current code renders from its committed raw run.

leaderboards/results/index.yaml maps each leaderboards/NAME.md to its raw run folder(s) under
leaderboards/results/ (and the render options); this re-renders each with the function `harness leaderboard`
and `harness report --leaderboard` write with, so a leaderboard cannot fall behind the renderer or its data.
After a deliberate renderer change, refresh a leaderboard with the command in the index's header and read the
diff before committing it.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
import yaml

from harness import config
from harness.leaderboard import render

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ROOT / "leaderboards"
RESULTS = BOARDS / "results"
INDEX = yaml.safe_load((RESULTS / "index.yaml").read_text(encoding="utf-8"))
RENDERED: dict = INDEX["rendered"]
NOT_RENDERED: dict = INDEX["not_rendered"]
#: published in earlier sessions whose stage cache is gone; no leaderboard may be added to this list
WITHOUT_RAW_RUN = {"neu-seg-cpu.md", "neu-seg-adapters-cpu.md", "neu-seg-segmenters-cpu.md"}
HASH = re.compile(r"^- \*\*Config hash:\*\* `([0-9a-f]+)`$", re.M)


def test_index_lists_every_leaderboard_and_raw_run():
    boards = {p.name for p in BOARDS.glob("*.md")}
    assert not set(RENDERED) & set(NOT_RENDERED)
    assert set(RENDERED) | set(NOT_RENDERED) == boards, "leaderboards/results/index.yaml must list every leaderboard"
    used = {run for entry in [*RENDERED.values(), *NOT_RENDERED.values()] for run in entry.get("runs", [])}
    used |= set(INDEX.get("raw_only", []))
    folders = {p.name for p in RESULTS.iterdir() if p.is_dir()}
    assert used == folders, "every raw run folder is used by a leaderboard or listed under raw_only"
    for run in used:
        assert (RESULTS / run / "run.json").is_file() and (RESULTS / run / "results.csv").is_file(), run


def test_only_the_known_old_leaderboards_lack_a_raw_run():
    assert set(NOT_RENDERED) == WITHOUT_RAW_RUN
    for name, entry in NOT_RENDERED.items():
        assert "not kept" in entry["reason"] and entry["configs"], name
        header = HASH.findall((BOARDS / name).read_text(encoding="utf-8"))
        kept = [yaml.safe_load((RESULTS / r / "run.json").read_text())["config_hash"] for r in entry.get("runs", [])]
        configs = [config.load(ROOT / c).hash for c in entry["configs"]]
        # rerunning the named config reproduces the experiment the leaderboard's header describes
        assert sorted(header) == sorted(kept + configs), f"{name}: header config hash(es) {header}"


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_committed_leaderboard_is_a_render_of_its_raw_run(name):
    entry = RENDERED[name]
    runs = [RESULTS / r for r in entry["runs"]]
    got = render(runs, entry.get("title"), link_base=BOARDS)  # what `harness leaderboard --out BOARDS/name` writes
    want = (BOARDS / name).read_text(encoding="utf-8")
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), f"leaderboards/{name}",
                                            "rendered from " + ", ".join(entry["runs"])))
        title = f" --title {entry['title']!r}" if entry.get("title") else ""
        pytest.fail(f"leaderboards/{name} is stale; if the change is deliberate, refresh it with `harness "
                    f"leaderboard {' '.join(f'leaderboards/results/{r}' for r in entry['runs'])} --out "
                    f"leaderboards/{name}{title}`:\n{diff}")
