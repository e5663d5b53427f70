"""One table per setting with what a reader looks for first: AP, its change vs identity (with the bootstrap
interval of significance.csv when `harness report` wrote one), AP50 and fidelity."""
from __future__ import annotations

import pandas as pd

from harness.leaderboard.aggregate import aggregate_by, delta_aggs, entries
from harness.leaderboard.format import Agg, fmt, grid, rows_of, seed_phrase, setting_label, settings_of
from harness.leaderboard.run import Page, Run, iou_types
from harness.leaderboard.schema import FIDELITY, FIDELITY_METRICS, IDENTITY, ROW, SETTING

#: why a real target's cells have no PSNR/SSIM
NO_ORIGINAL = ("no PSNR/SSIM on a real target: its images have no clean original to compare with "
               "(the fidelity stage is not run there)")


def lines(page: Page) -> list[str]:
    run = page.run
    if run.cells.empty or run.results.empty:
        return []
    seeds = run.seeds
    rows = rows_of(run.cells)
    settings = settings_of(run.cells)
    compared = [r for r in rows if r[2] != IDENTITY and (r[0], r[1], IDENTITY) in rows]
    real = set(run.meta.get("targets") or {})
    has_fidelity = bool((run.results["iou_type"] == FIDELITY).any()) or bool(real)
    columns: list[tuple[str, pd.Series]] = []
    intervals: dict[tuple, tuple[Agg, int]] = {}
    for iou in iou_types(run):
        columns.append((f"{iou} AP", aggregate_by(entries(run, iou, [("AP", "all")]), ROW + SETTING, len(seeds))))
        if compared:
            deltas = delta_aggs(run, iou, "AP", compared)
            columns.append((f"Δ {iou} AP", deltas))
            intervals.update(delta_intervals(run, iou, deltas))
        columns.append((f"{iou} AP50", aggregate_by(entries(run, iou, [("AP50", "all")]), ROW + SETTING,
                                                    len(seeds), metric="AP50")))
    fidelity_columns = []
    if has_fidelity:
        for metric in FIDELITY_METRICS:
            fidelity_columns.append(f"{metric}{' (dB)' if metric == 'PSNR' else ''}")
            columns.append((fidelity_columns[-1],
                            aggregate_by(entries(run, FIDELITY, [(metric, "all")]), ROW + SETTING, len(seeds),
                                         metric=metric)))
    out = [f"## Summary — AP ×100 and Δ vs `{IDENTITY}` paired by seed, {seed_phrase(seeds)}", ""]
    if has_fidelity:
        out += ["PSNR (dB) and SSIM compare each adapted image with the clean image it was degraded from "
                "(scikit-image, data range 255, mean over images): high fidelity need not mean high AP.", ""]
    for setting in settings:
        resamples: set[int] = set()
        data = {}
        for label, aggs in columns:
            data[label] = []
            for row in rows:
                shown = intervals.get((label, *row, *setting))
                if shown:
                    resamples.add(shown[1])
                if label in fidelity_columns and setting[0] in real and setting[1] == 0:
                    data[label].append(Agg("—", (NO_ORIGINAL,)))
                    continue
                data[label].append(shown[0] if shown else aggs.get((*row, *setting)))
        table = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(rows, names=ROW))
        out += [f"### {setting_label(*setting)}", ""] + grid(table, [label for label, _ in columns])
        if resamples:
            counts = ", ".join(map(str, sorted(resamples)))
            out += [f"[lo, hi]: 95 % paired bootstrap interval over test images ({counts} resamples); "
                    "* = excludes 0.", ""]
    return out


def delta_intervals(run: Run, iou: str, deltas: pd.Series) -> dict[tuple, tuple[Agg, int]]:
    """The Δ cells that significance.csv has a bootstrap interval for: (column, row, setting) -> (Agg, resamples).

    The number shown is the file's Δ over the pooled seeds' images, so that it sits inside its own interval;
    the seed-paired Δ's notes (why a seed is missing) are kept."""
    if run.significance is None:
        return {}
    n_seeds = len(run.seeds)
    out = {}
    sig = run.significance[(run.significance["iou_type"] == iou) & (run.significance["metric"] == "AP")]
    for r in sig.itertuples(index=False):
        key = (r.segmenter, r.profile, r.adapter, r.degradation, r.severity)
        if key not in deltas.index:
            continue
        text = f"{fmt(100 * r.delta, True)} [{fmt(100 * r.lo, True)}, {fmt(100 * r.hi, True)}]"
        text += ("*" if r.significant else "") + (f" (n={r.seeds})" if r.seeds < n_seeds else "")
        base = deltas.get(key)
        out[(f"Δ {iou} AP", *key)] = (Agg(text, base.notes if isinstance(base, Agg) else ()), int(r.resamples))
    return out
