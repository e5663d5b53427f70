"""Methods: what each row had of each target that a deployed method would not (its labels, its true degradation)
or might (its unlabelled images), as run.json ``methods`` recorded it at run time, and per setting the best row
that uses neither of the first two: the fair answer to "which adaptation method works". Shown only for runs that
recorded ``methods``."""
from __future__ import annotations

import pandas as pd

from harness.leaderboard.aggregate import aggregate_by, delta_aggs, entries
from harness.leaderboard.format import (esc, md_table, row_order, rows_of, segmenter_label, setting_label,
                                       settings_of)
from harness.leaderboard.run import Page, Run, iou_types
from harness.leaderboard.schema import IDENTITY, ROW, SETTING
from harness.leaderboard.sections.baselines import delta_text
from harness.leaderboard.sections.gap import gap_text
from harness.leaderboard.sections.summary import delta_intervals

#: the kinds that can be "the best method": source-only is the reference, controls and oracles are yardsticks
CANDIDATES = ("pre-processing", "training-side")
MARKS = [("uses_target_labels", "Target labels"), ("uses_true_degradation", "True degradation"),
         ("uses_target_images", "Target images")]
BEST = "Best method using neither target labels nor the true degradation"
FLAG = "optimises the segmenter's features"


READING = ("Kind: source-only (the plain segmenter with `identity`), pre-processing (the plain segmenter with an "
           "adapter), training-side (trained or fine-tuned on something else), control (the same fine-tune without "
           "the target), oracle (trained on the target's labelled images). ✓: the row's training or fit used the "
           "target's labels, its true degradation (a synthetic target's own degradation, known to paired fits, "
           "augmentation with it and its oracles; a real target has none to know) or its unlabelled images "
           "(unpaired fits, self-training).")


def lines(page: Page) -> list[str]:
    records = page.run.meta.get("methods")
    if not records:
        return []
    run = page.run
    iou = "segm" if "segm" in iou_types(run) else iou_types(run)[0]
    methods = pd.DataFrame(records)
    real = set(run.meta.get("targets") or {})
    figures = _Figures(run, iou)
    flags = bool(methods["optimises_segmenter_features"].any())
    out = ["## Methods — what each row used of the target", "", READING
           + (" Flag: an adapter that optimises the segmenter's own features." if flags else "")
           + f" The best method is the pre-processing or training-side row with the highest {iou} AP (×100, mean "
           "± s.e. over seeds as in the summary) among those using neither labels nor the true degradation; Δ is "
           "against source-only on the same images.", ""]
    header = ["Segmenter", "Adapter", "Kind", *(["Flag"] if flags else []), *[title for _, title in MARKS]]
    for target in dict.fromkeys(methods["degradation"]):
        sub = methods[methods["degradation"] == target]
        by_row = dict(zip(sub[ROW].itertuples(index=False, name=None), sub.to_dict("records")))
        rows = row_order(by_row)
        body = [_row(r, by_row[r], flags) for r in rows]
        out += [f"### {esc(target)} ({'real' if target in real else 'synthetic'} target)", ""]
        out += md_table(header, body, 3 + flags) + [""]
        fair = [r for r in rows if by_row[r]["kind"] in CANDIDATES
                and not by_row[r]["uses_target_labels"] and not by_row[r]["uses_true_degradation"]]
        for setting in [s for s in settings_of(run.cells) if s[0] == target]:
            out += [f"- **{esc(setting_label(*setting))}**: {BEST}: {figures.best(fair, setting, by_row)}", ""]
    return out


def _row(row: tuple, record: dict, flags: bool) -> list[str]:
    flag = [FLAG if record["optimises_segmenter_features"] else ""] if flags else []
    return [esc(segmenter_label(row[0], row[1])), esc(row[2]), record["kind"], *flag,
            *["✓" if record[key] else "" for key, _ in MARKS]]


class _Figures:
    """The numbers other sections already show, looked up per row and setting: the summary's AP and Δ vs
    `identity` (with significance.csv's interval), baselines.csv's Δ vs the plain segmenter, gap.csv's gap closed."""

    def __init__(self, run: Run, iou: str):
        self.run, self.iou = run, iou
        rows = entries(run, iou, [("AP", "all")])
        valid = rows[rows["kind"] == ""]
        self.means = valid.groupby(ROW + SETTING)["value"].mean().to_dict()
        self.ap = aggregate_by(rows, ROW + SETTING, len(run.seeds))
        present = rows_of(run.cells)
        compared = [r for r in present if r[2] != IDENTITY and (r[0], r[1], IDENTITY) in present]
        self.deltas = delta_aggs(run, iou, "AP", compared) if compared else pd.Series(dtype=object)
        self.intervals = delta_intervals(run, iou, self.deltas)

    def best(self, fair: list[tuple], setting: tuple, by_row: dict) -> str:
        scored = [r for r in fair if (*r, *setting) in self.means]
        if not scored:
            return f"none (no pre-processing or training-side row without them has a {self.iou} AP here)."
        row = max(scored, key=lambda r: self.means[(*r, *setting)])
        name = segmenter_label(row[0], row[1]) + ("" if row[2] == IDENTITY else f" + {row[2]}")
        if by_row[row]["optimises_segmenter_features"]:
            name += f" (flagged: {FLAG})"
        text = f"{esc(name)}, {self.iou} AP {self.ap[(*row, *setting)].text} ({self._delta(row, setting, by_row)})"
        gap = self._report_row(self.run.gap, row, setting)
        return text + (f", gap closed {gap_text(gap)}" if gap is not None else "") + "."

    def _delta(self, row: tuple, setting: tuple, by_row: dict) -> str:
        if by_row[row]["kind"] == "pre-processing":
            shown = self.intervals.get((f"Δ {self.iou} AP", *row, *setting))
            agg = shown[0] if shown else self.deltas.get((*row, *setting))
            return f"Δ {agg.text} vs source-only" if agg is not None else "no Δ: no source-only cell"
        hit = self._report_row(self.run.baselines, row, setting)
        if hit is None:
            return "no Δ vs source-only before `harness report` writes baselines.csv"
        return f"Δ {delta_text(hit)} vs source-only"

    def _report_row(self, df: pd.DataFrame | None, row: tuple, setting: tuple):
        """The last row of a `harness report` table for this row, setting and IoU type (AP), else None."""
        if df is None:
            return None
        hit = df[(df["segmenter"] == row[0]) & (df["adapter"] == row[2]) & (df["degradation"] == setting[0])
                 & (df["severity"] == setting[1]) & (df["iou_type"] == self.iou) & (df["metric"] == "AP")]
        return None if hit.empty else hit.iloc[-1]
