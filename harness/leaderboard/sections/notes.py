"""What the run folder holds that the tables leave out or had to guess at (Run.notices), and why a section is
absent, so that nothing is dropped silently."""
from __future__ import annotations

from harness.leaderboard.format import esc
from harness.leaderboard.run import Page
from harness.leaderboard.sections import robustness


def lines(page: Page) -> list[str]:
    notes = [*page.run.notices, *robustness.left_out(page.run)]
    if not notes:
        return []
    return ["## Input notes", ""] + [f"- {esc(n)}" for n in notes] + [""]
