"""Every failed cell with its error, so a reader can tell a failure from a result that is merely low."""
from __future__ import annotations

from harness.leaderboard.format import esc, md_table, segmenter_label, setting_label
from harness.leaderboard.run import Page
from harness.leaderboard.schema import IDENTITY


def lines(page: Page) -> list[str]:
    cells = page.run.cells
    failed = cells[cells["status"] == "failed"]
    out = ["## Failed cells", ""]
    if failed.empty:
        return out + ["No failed cells.", ""]
    ordered = sorted(
        failed.itertuples(index=False),
        key=lambda c: (c.segmenter, c.profile, c.adapter != IDENTITY, c.adapter, c.degradation != "none",
                       c.degradation, c.severity, c.seed, c.cell),
    )
    body = [
        [
            f"`{esc(c.cell)}`",
            esc(segmenter_label(c.segmenter, c.profile)),
            esc(c.adapter),
            esc(setting_label(c.degradation, c.severity)),
            str(c.seed),
            esc(c.error) if isinstance(c.error, str) and c.error.strip() else "(no error message)",
        ]
        for c in ordered
    ]
    return out + md_table(["Cell", "Segmenter", "Adapter", "Setting", "Seed", "Error"], body, n_left=6) + [""]
