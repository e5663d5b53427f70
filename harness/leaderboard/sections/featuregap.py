"""Feature gap: KID of each cell's images to the source val images in the trained segmenter's own features, before
adaptation (`identity`) and after (Δ), and, when `harness report` wrote selection.csv, whether picking the adapter
with the smallest gap would have picked the best one."""
from __future__ import annotations

import math

from harness.leaderboard.aggregate import aggregate_by, delta_aggs, entries
from harness.leaderboard.format import esc, fmt, grid, md_table, pivot, rows_of, seed_phrase, segmenter_label, \
    setting_label, settings_of
from harness.leaderboard.run import Page
from harness.leaderboard.schema import FEATURE, IDENTITY, ROW, SETTING

READING = ("KID ×10³ (unbiased, polynomial kernel, features standardised by the source val images; [lo, hi] a 95 % "
           "bootstrap interval over both image sets) between the images a cell's segmenter saw and the source val "
           "images, pooled from that segmenter's own FPN while it predicted; FD32 the Fréchet distance after a PCA "
           "to 32 dimensions fitted on source val. The trained segmenter is the feature extractor, so values compare "
           "only within one trained model (one table per model), never across segmenters. `identity`'s row is the "
           "gap before adaptation; Δ is after minus before.")


def lines(page: Page) -> list[str]:
    run = page.run
    feature = run.results[run.results["iou_type"] == FEATURE]
    if feature.empty:
        return []
    cells = run.cells[run.cells["cell"].isin(set(feature["cell"]))]
    out = [f"## Feature gap — distance to the source domain as the segmenter sees it, {seed_phrase(run.seeds)}", "",
           READING, ""]
    n_seeds = len(run.seeds)
    kid = aggregate_by(entries(run, FEATURE, [("KID", "all")]), ROW + SETTING, n_seeds, metric="KID")
    fd = aggregate_by(entries(run, FEATURE, [("FD32", "all")]), ROW + SETTING, n_seeds, metric="FD32")
    intervals = _intervals(run) if n_seeds == 1 else {}
    settings = settings_of(cells)
    labels = [setting_label(*s) for s in settings]
    for model in dict.fromkeys(cells[["segmenter", "profile"]].itertuples(index=False, name=None)):
        rows = [r for r in rows_of(cells) if r[:2] == model]
        shown = kid.copy()
        for key, text in intervals.items():
            if key in shown.index:
                shown[key] = type(shown[key])(f"{shown[key].text} {text}", shown[key].notes)
        out += [f"### {esc(segmenter_label(*model))}", "", "KID ×10³ [lo, hi]:", ""]
        out += grid(pivot(shown, SETTING, rows, settings), labels)
        others = [r for r in rows if r[2] != IDENTITY]
        if others and (*model, IDENTITY) in rows:
            out += ["Δ KID ×10³ vs `identity` (after − before adaptation; negative: closer to the source):", ""]
            out += grid(pivot(delta_aggs(run, FEATURE, "KID", others), SETTING, others, settings), labels)
        out += ["FD32:", ""] + grid(pivot(fd, SETTING, rows, settings), labels)
    return out + _selection(page)


def _intervals(run) -> dict[tuple, str]:
    """(row, setting) -> "[lo, hi]" of the single seed's KID interval."""
    sub = run.results[(run.results["iou_type"] == FEATURE) & run.results["metric"].isin(("KID_lo", "KID_hi"))]
    bounds: dict[tuple, dict[str, float]] = {}
    for r in sub.itertuples(index=False):
        bounds.setdefault((r.segmenter, r.profile, r.adapter, r.degradation, r.severity), {})[r.metric] = r.value
    return {key: f"[{fmt(1000 * b['KID_lo'], False)}, {fmt(1000 * b['KID_hi'], False)}]"
            for key, b in bounds.items() if len(b) == 2 and all(math.isfinite(v) for v in b.values())}


def _selection(page: Page) -> list[str]:
    df = page.run.selection
    if df is None or df.empty:
        return []
    out = ["### Picking an adapter by its feature gap, without labels", "",
           "Per setting: Spearman ρ across adapters between Δgap (KID) and ΔAP, each vs `identity` ([lo, hi]: 95 % "
           "interval by Fisher's z, 4 or more adapters; negative: a smaller gap goes with a higher AP), and the "
           "selection regret: AP ×100 of the adapter with the smallest gap minus the best adapter's (0: the gap picks "
           "the best). Flagged adapters optimise the segmenter's own features and are never picked by their gap.", ""]
    body = []
    for r in df.itertuples(index=False):
        rho = "—" if not math.isfinite(r.spearman) else fmt(r.spearman, True, 2)
        if math.isfinite(r.lo):
            rho += f" [{fmt(r.lo, True, 2)}, {fmt(r.hi, True, 2)}]"
        body.append([esc(segmenter_label(r.segmenter, r.profile)), esc(setting_label(r.degradation, r.severity)),
                     esc(r.iou_type), str(r.adapters), rho, esc(r.chosen), esc(r.best),
                     fmt(100 * r.regret, True), esc(r.flagged) or "—"])
    return out + md_table(["Segmenter", "Setting", "IoU", "Adapters", "ρ(Δgap, ΔAP)", "Smallest gap", "Best AP",
                           "Regret (AP ×100)", "Flagged"], body, 3) + [""]
