"""From a Run's rows to table cells: every planned cell joined with its value or the reason it has none, then
mean ± s.e. over seeds and adapter-minus-identity differences paired by seed. A missing seed is carried as a
count and a note, never averaged as if the run were complete."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.format import SHOWN, Agg, fmt
from harness.leaderboard.run import Run
from harness.leaderboard.schema import IDENTITY, KEY, MISSING, ROW, SETTING


def entries(run: Run, iou: str, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per (cell, metric, category): its value, or why it has none (kind, text)."""
    wanted = pd.DataFrame(pairs, columns=["metric", "category"])
    grid = run.cells.merge(wanted, how="cross")
    rows = run.results[run.results["iou_type"] == iou][KEY + ["metric", "category", "value", "note"]]
    df = grid.merge(rows.assign(has_row=True), on=KEY + ["metric", "category"], how="left")
    kinds, texts = [], []
    columns = zip(df["status"], df["has_row"], df["value"], df["note"], df["metric"])
    for status, has_row, value, note, metric in columns:
        if status != "done":
            kinds.append(status)
            texts.append(_status_note(status))
        elif not _flag(has_row):
            kinds.append(MISSING)
            texts.append(f"no {metric} row in results.csv for this cell")
        elif pd.isna(value):
            kinds.append(MISSING)
            texts.append(str(note).strip() if isinstance(note, str) and note.strip() else "no value reported")
        else:
            kinds.append("")
            texts.append("")
    return df.assign(kind=kinds, reason=texts)


def _flag(x: Any) -> bool:
    """A merge indicator column: True where the right side matched (NaN elsewhere)."""
    return bool(pd.notna(x) and x)


def _has_reason(kind: Any) -> bool:
    return isinstance(kind, str) and kind != ""


def _status_note(status: str) -> str:
    if status == "failed":
        return "failed seed(s) excluded; errors are listed under Failed cells"
    return f"{status} seed(s) excluded"


def aggregate(group: pd.DataFrame, n_seeds: int, signed: bool = False, scale: float = 100.0,
              digits: int = 1) -> Agg:
    """Mean ± standard error over seeds; a shortfall of seeds is shown as (n=k) with the reasons."""
    values = [float(v) for v, k in zip(group["value"], group["kind"]) if not _has_reason(k)]
    reasons = [(k, r) for k, r in zip(group["kind"], group["reason"]) if _has_reason(k)]
    notes = tuple(dict.fromkeys(r for _, r in reasons))
    if not values:
        kinds = {k for k, _ in reasons}
        if len(kinds) == 1 and MISSING not in kinds:
            return Agg(kinds.pop())
        return Agg("—", notes)
    text = fmt(scale * float(np.mean(values)), signed, digits)
    if len(values) > 1:
        text += f" ± {scale * float(np.std(values, ddof=1)) / math.sqrt(len(values)):.{digits}f}"
    if len(values) < n_seeds or reasons:
        text += f" (n={len(values)})"
    return Agg(text, notes)


def aggregate_by(df: pd.DataFrame, by: list[str], n_seeds: int, signed: bool = False,
                 metric: str = "AP") -> pd.Series:
    """`aggregate` of each group of ``by``, as a Series indexed by it, in the scale and digits of ``metric``."""
    scale, digits = SHOWN.get(metric, (100.0, 1))
    aggs = {key: aggregate(g, n_seeds, signed, scale, digits) for key, g in df.groupby(by, sort=False, dropna=False)}
    index = pd.MultiIndex.from_tuples(list(aggs), names=by)
    return pd.Series(list(aggs.values()), index=index, dtype=object)


def delta_aggs(run: Run, iou: str, metric: str, compared: list[tuple]) -> pd.Series:
    """Adapter-minus-identity ``metric`` per row and setting, paired by seed."""
    rows = entries(run, iou, [(metric, "all")])
    pair_on = ["segmenter", "profile", "degradation", "severity", "seed"]
    base = rows[rows["adapter"] == IDENTITY][pair_on + ["value", "kind", "reason"]].assign(paired=True)
    df = rows[rows["adapter"] != IDENTITY].merge(base, on=pair_on, how="left", suffixes=("", "_id"))
    paired = zip(df["value"], df["kind"], df["reason"], df["paired"], df["value_id"], df["kind_id"], df["reason_id"])
    values, kinds, reasons = zip(*(_difference(*p) for p in paired)) if len(df) else ((), (), ())
    df = df.assign(value=list(values), kind=list(kinds), reason=list(reasons))
    keep = set(compared)
    df = df[[r in keep for r in df[ROW].itertuples(index=False, name=None)]]
    return aggregate_by(df, ROW + SETTING, len(run.seeds), signed=True, metric=metric)


def _difference(v: float, k: Any, r: Any, paired: Any, v0: float, k0: Any, r0: Any) -> tuple[float, str, str]:
    """One seed's adapter-minus-identity AP, or why it cannot be formed."""
    if _has_reason(k):
        return math.nan, k, r
    if not _flag(paired):
        return math.nan, MISSING, "no identity cell for this seed"
    if _has_reason(k0):
        return math.nan, MISSING, f"identity: {r0}"
    return v - v0, "", ""
