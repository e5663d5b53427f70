"""Each leaderboard section rendered alone on the fixture runs, byte-exact against its own golden file, and the
whole-page golden file as exactly their concatenation, so a change to one section shows up in that section's
fixture and nowhere else.

The files are tests/fixtures/sections/SECTION.RUN.md (a section repeated per IoU type is SECTION-IOU; an empty
file is a section that does not apply to that run). After a deliberate change to a section, rewrite them with

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_leaderboard_sections.py -k golden

and read the diff (git diff tests/fixtures) before committing it.
"""
from __future__ import annotations

import difflib
import os
import pkgutil
from pathlib import Path

import pytest

from harness.leaderboard import page, sections
from harness.leaderboard.run import load_page

FIXTURES = Path(__file__).parent / "fixtures"
SECTIONS = FIXTURES / "sections"
RUNS = ["run_small", "run_robust"]


def _parts(name: str) -> list[tuple[str, str]]:
    return page.parts(load_page(FIXTURES / name))


@pytest.mark.parametrize("name", RUNS)
def test_golden_section_matches_reference(name):
    parts = _parts(name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        SECTIONS.mkdir(exist_ok=True)
        for stale in SECTIONS.glob(f"*.{name}.md"):
            stale.unlink()
        for section, text in parts:
            (SECTIONS / f"{section}.{name}.md").write_text(text, encoding="utf-8", newline="\n")
        pytest.skip(f"rewrote tests/fixtures/sections/*.{name}.md; review the diff")
    assert {p.name for p in SECTIONS.glob(f"*.{name}.md")} == {f"{s}.{name}.md" for s, _ in parts}
    for section, got in parts:
        expected = SECTIONS / f"{section}.{name}.md"
        want = expected.read_text(encoding="utf-8")
        if got != want:
            diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "expected", "rendered"))
            pytest.fail(f"section {section} differs from tests/fixtures/sections/{expected.name} "
                        f"(UPDATE_GOLDEN=1 rewrites it, see the module docstring):\n" + diff)


@pytest.mark.parametrize("name", RUNS)
def test_section_fixtures_are_slices_of_the_page(name):
    whole = (FIXTURES / f"{name}.expected.md").read_text(encoding="utf-8")
    names = [section for section, _ in _parts(name)]
    pieces = [(SECTIONS / f"{section}.{name}.md").read_text(encoding="utf-8") for section in names]
    joined = "".join(pieces)
    # the page ends with one newline where the last section's text ends with a blank line
    assert joined[:len(whole)] == whole and joined[len(whole):].strip("\n") == ""
    assert all(p.startswith("#") for p in pieces if p), "every section starts at a heading"
    assert sum(1 for p in pieces if p) >= 10


def test_page_renders_every_section_module():
    modules = {m.name for m in pkgutil.iter_modules(sections.__path__)}
    assert modules == {m.__name__.rsplit(".", 1)[1] for m in (*page.BEFORE, *page.PER_IOU, *page.AFTER)}
