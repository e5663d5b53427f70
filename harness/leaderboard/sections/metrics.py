"""The heading of one IoU type's part of the page (under which delta, scale and classes follow) and its AP,
AP50 and AP75 tables: every row by every setting."""
from __future__ import annotations

from harness.leaderboard.aggregate import aggregate_by, entries
from harness.leaderboard.format import IOU_TITLES, grid, pivot, rows_of, seed_phrase, setting_label, settings_of
from harness.leaderboard.run import Page
from harness.leaderboard.schema import MAIN_METRICS, ROW, SETTING


def lines(page: Page, iou: str) -> list[str]:
    run = page.run
    if run.cells.empty:
        return [f"## {IOU_TITLES.get(iou, iou)}", "", "No cells in this run.", ""]
    seeds = run.seeds
    rows, settings = rows_of(run.cells), settings_of(run.cells)
    labels = [setting_label(*s) for s in settings]
    out = [f"## {IOU_TITLES.get(iou, iou)}", ""]
    for metric in MAIN_METRICS:
        aggs = aggregate_by(entries(run, iou, [(metric, "all")]), ROW + SETTING, len(seeds))
        out += [f"### {metric} — {iou}, ×100, {seed_phrase(seeds)}", ""]
        out += grid(pivot(aggs, SETTING, rows, settings), labels)
    return out
