"""ΔAP of every adapter vs `identity` for one IoU type, paired by seed: the adaptation's effect with the
segmenter, setting and seed held fixed."""
from __future__ import annotations

from harness.leaderboard.aggregate import delta_aggs
from harness.leaderboard.format import (esc, grid, pivot, rows_of, seed_phrase, segmenter_label, setting_label,
                                        settings_of)
from harness.leaderboard.run import Page
from harness.leaderboard.schema import IDENTITY, SETTING


def lines(page: Page, iou: str) -> list[str]:
    run = page.run
    if run.cells.empty:
        return []
    rows, settings = rows_of(run.cells), settings_of(run.cells)
    out = [f"### ΔAP vs {IDENTITY} — {iou}, ×100, paired by seed, {seed_phrase(run.seeds)}", ""]
    others = [r for r in rows if r[2] != IDENTITY]
    if not others:
        return out + ["No adapter other than `identity` in this run, so there is nothing to compare.", ""]
    with_identity = {r[:2] for r in rows if r[2] == IDENTITY}
    lacking = sorted({r[:2] for r in others} - with_identity)
    if lacking:
        names = ", ".join(segmenter_label(*s) for s in lacking)
        out += [f"No `identity` adapter run for {esc(names)}: no deltas for it.", ""]
    compared = [r for r in others if r[:2] in with_identity]
    if not compared:
        return out
    labels = [setting_label(*s) for s in settings]
    return out + grid(pivot(delta_aggs(run, iou, "AP", compared), SETTING, compared, settings), labels)
