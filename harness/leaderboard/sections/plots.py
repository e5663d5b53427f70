"""The images `harness report` listed in plots/manifest.json, linked relative to where the page is written."""
from __future__ import annotations

import os
from pathlib import Path

from harness.leaderboard.format import esc
from harness.leaderboard.run import Page


def lines(page: Page) -> list[str]:
    if not page.run.plots:
        return []
    out = ["## Plots", ""]
    for image, title in page.run.plots:
        target = Path(os.path.relpath(image, page.link_base)).as_posix()
        if any(ch in target for ch in " ()"):
            target = f"<{target}>"
        alt = esc(title).replace("[", "\\[").replace("]", "\\]")
        out += [f"### {esc(title)}", "", f"![{alt}]({target})", ""]
    return out
