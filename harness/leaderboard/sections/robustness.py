"""P, mPC and rPC per row, by corruption name (computed by harness.leaderboard.robustness), when the run has
clean cells and at least one corruption with its full severity sweep; others are shown with the severities
they lack. Without any full sweep the section is replaced by a note under Input notes (`left_out`)."""
from __future__ import annotations

import pandas as pd

from harness.leaderboard import robustness
from harness.leaderboard.aggregate import aggregate, entries
from harness.leaderboard.format import (IOU_TITLES, Agg, esc, grid, is_real_target, num, rows_of, seed_phrase,
                                        setting_label, settings_of)
from harness.leaderboard.run import Page, Run, iou_types
from harness.leaderboard.schema import ROW

METRIC = "AP"
READING = (
    "P: clean {metric} (degradation `none`); mPC_c: a corruption's {metric} averaged over severities 1–5; "
    "mPC: the mean of mPC_c over the corruptions; rPC = mPC / P, in %. Each is computed per seed, then "
    "averaged over seeds. (k/K sev.) marks a mean over fewer severities than it should have, with the missing "
    "ones in a note.")


def _clean_and_corrupted(run: Run) -> bool:
    degradations = set(run.cells["degradation"])
    corrupted = {d for d, s in zip(run.cells["degradation"], run.cells["severity"])
                 if d != "none" and not is_real_target(d, s)}
    return "none" in degradations and bool(corrupted)


def left_out(run: Run) -> list[str]:
    """The note that replaces the Robustness section when no corruption has its full severity sweep."""
    if not _clean_and_corrupted(run) or robustness.full_sweeps(run.cells):
        return []
    has = ", ".join(setting_label(*s) for s in settings_of(run.cells) if s[0] != "none" and not is_real_target(*s))
    return [f"No Robustness section (P, mPC, rPC): no corruption in this run has all of severities 1–5 "
            f"(it has {has})."]


def lines(page: Page, metric: str = METRIC) -> list[str]:
    run = page.run
    if not _clean_and_corrupted(run) or not robustness.full_sweeps(run.cells):
        return []
    seeds = run.seeds
    rows = rows_of(run.cells)
    out = [f"## Robustness — {metric} ×100, {seed_phrase(seeds)}", "", READING.format(metric=metric), ""]
    severities = set(float(s) for s in robustness.SEVERITIES)
    outside = run.cells[(run.cells["degradation"] != "none") & ~run.cells["severity"].isin(severities)
                        & (run.cells["severity"] != 0)]
    if len(outside):
        labels = sorted({setting_label(d, s) for d, s in zip(outside["degradation"], outside["severity"])})
        out += [f"Not in mPC (severity outside 1–5): {esc(', '.join(labels))}.", ""]
    for iou in iou_types(run):
        rows_of_iou = entries(run, iou, [(metric, "all")])
        per = robustness.per_seed(rows_of_iou)
        names = robustness.corruptions_of(rows_of_iou)
        overall = f"mPC ({len(names)} corruption{'s' if len(names) != 1 else ''})"
        labels = ["P", overall, "rPC (%)", *names]
        keys = [("P", ""), ("mPC", ""), ("rPC", ""), *(("mPC_c", c) for c in names)]
        groups = {k: g for k, g in per.groupby([*ROW, "measure", "corruption"], sort=False)}
        body = {label: [_robust_agg(groups.get((*row, *key)), names, len(seeds)) for row in rows]
                for label, key in zip(labels, keys)}
        table = pd.DataFrame(body, index=pd.MultiIndex.from_tuples(rows, names=ROW))
        out += [f"### {IOU_TITLES.get(iou, iou)}", ""] + grid(table, labels)
        out += [f"{overall}: {esc(', '.join(names))}.", ""]
    return out


def _robust_agg(group: pd.DataFrame | None, names: list[str], n_seeds: int) -> Agg:
    """One robustness value as mean ± s.e. over seeds, marked when it averages fewer severities than it should."""
    if group is None:
        return Agg("—", ("no cell for this row",))
    agg = aggregate(group, n_seeds)
    ok = group[group["kind"] == ""]
    if ok.empty:
        return agg
    have, of = int(ok["severities"].min()), int(group["of_severities"].max())
    if have >= of:
        return agg
    notes = []
    if group["measure"].iloc[0] == "mPC_c":
        notes += _gap_notes(ok)
    else:
        absent = [c for c in names if any(c not in used for used in ok["corruptions"])]
        partial = sorted({g[0] for gaps in ok["gaps"] for g in gaps})
        if absent:
            notes.append(f"mPC without {', '.join(absent)}, which has no value here (see its column)")
        if partial:
            notes.append(f"mPC includes {', '.join(partial)} averaged over fewer than "
                         f"{len(robustness.SEVERITIES)} severities (see its column)")
    return Agg(f"{agg.text} ({have}/{of} sev.)", tuple(dict.fromkeys(notes + list(agg.notes))))


def _gap_notes(ok: pd.DataFrame) -> list[str]:
    """'gaussian_noise s5 (seed 1): why' for the severities left out of a corruption's mean."""
    missing: dict[tuple[str, str, float], set[int]] = {}
    for seed, gaps in zip(ok["seed"], ok["gaps"]):
        for name, severity, reason in gaps:
            missing.setdefault((name, reason, severity), set()).add(seed)
    grouped: dict[tuple[str, str, tuple[int, ...]], list[float]] = {}
    for (name, reason, severity), seeds in sorted(missing.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        grouped.setdefault((name, reason, tuple(sorted(seeds))), []).append(severity)
    all_seeds = set(ok["seed"])
    notes = []
    for (name, reason, seeds), severities in grouped.items():
        which = "" if set(seeds) == all_seeds else f" (seed {', '.join(map(str, seeds))})"
        notes.append(f"{name} {', '.join('s' + num(s) for s in severities)}{which}: {reason}")
    return notes
