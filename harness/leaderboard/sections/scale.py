"""AP by object size (COCO small / medium / large) for one IoU type, one table per setting."""
from __future__ import annotations

from harness.leaderboard.aggregate import aggregate_by, entries
from harness.leaderboard.format import SCALE_LABELS, grid, pivot, rows_of, seed_phrase, setting_label, settings_of
from harness.leaderboard.run import Page
from harness.leaderboard.schema import ROW, SCALE_METRICS


def lines(page: Page, iou: str) -> list[str]:
    run = page.run
    if run.cells.empty:
        return []
    seeds = run.seeds
    rows = rows_of(run.cells)
    out = [f"### AP by object size — {iou}, ×100, {seed_phrase(seeds)}", ""]
    scale = entries(run, iou, [(m, "all") for m in SCALE_METRICS])
    for setting in settings_of(run.cells):
        sub = scale[(scale["degradation"] == setting[0]) & (scale["severity"] == setting[1])]
        aggs = aggregate_by(sub, ROW + ["metric"], len(seeds))
        out += [f"#### {setting_label(*setting)}", ""]
        out += grid(pivot(aggs, "metric", rows, list(SCALE_METRICS)), [SCALE_LABELS[m] for m in SCALE_METRICS])
    return out
