"""Per-class AP for one IoU type, one table per setting, over the classes that results.csv has rows for; a real
target's table shows "—" and why for the source classes its labels lack."""
from __future__ import annotations

from harness.leaderboard.aggregate import aggregate_by, entries
from harness.leaderboard.format import (Agg, grid, is_real_target, pivot, rows_of, seed_phrase, setting_label,
                                        settings_of)
from harness.leaderboard.run import Page
from harness.leaderboard.schema import ROW


def lines(page: Page, iou: str) -> list[str]:
    run = page.run
    if run.cells.empty:
        return []
    out = [f"### Per-class AP — {iou}, ×100, {seed_phrase(run.seeds)}", ""]
    res = run.results
    per_class = (res["iou_type"] == iou) & (res["metric"] == "AP") & (res["category"] != "all")
    classes = sorted(set(res.loc[per_class, "category"]))
    if not classes:
        return out + ["No per-class rows for this IoU type.", ""]
    rows = rows_of(run.cells)
    by_class = entries(run, iou, [("AP", c) for c in classes])
    for setting in settings_of(run.cells):
        sub = by_class[(by_class["degradation"] == setting[0]) & (by_class["severity"] == setting[1])]
        aggs = aggregate_by(sub, ROW + ["category"], len(run.seeds))
        table = pivot(aggs, "category", rows, classes)
        if is_real_target(*setting):
            here = res[per_class & (res["degradation"] == setting[0]) & (res["severity"] == setting[1])]
            for name in sorted(set(classes) - set(here["category"])):
                table[name] = [Agg("—", (f"not a class of target {setting[0]}: not evaluated there",))] * len(table)
        out += [f"#### {setting_label(*setting)}", ""]
        out += grid(table, classes)
    return out
