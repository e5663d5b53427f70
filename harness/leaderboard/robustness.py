"""Corruption robustness in the COCO-C / ImageNet-C sense: clean performance P, mean performance under
corruption mPC and relative performance rPC = mPC / P, per segmenter x adapter.

mPC is built by corruption *name*: each corruption's mean over severities 1..5 (mPC_c) is a property of that
name alone, and mPC is the plain mean of the mPC_c, so adding or dropping another corruption never changes
what 'gaussian_noise' scores. Everything is computed per seed and only then averaged, so seeds pair P with
its own mPC. A missing severity or seed is carried as a count and a reason, never averaged as if complete.

Values are in the metric's own units (0..1 for COCO AP; rPC is a fraction). Pure pandas: no files read here.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

KEY = ["segmenter", "profile", "adapter", "degradation", "severity", "seed"]
ROW = ["segmenter", "profile", "adapter"]
CLEAN = "none"
SEVERITIES = (1, 2, 3, 4, 5)
MEASURES = ("P", "mPC", "rPC", "mPC_c")
MISSING = "missing"
NOT_IN_RUN = "not in the run"

PER_SEED_COLUMNS = [*ROW, "seed", "measure", "corruption", "value", "kind", "reason", "severities",
                    "of_severities", "corruptions", "gaps"]
TABLE_COLUMNS = [*ROW, "measure", "corruption", "mean", "se", "seeds", "of_seeds", "severities",
                 "of_severities", "corruptions"]


def entries(results: pd.DataFrame, iou_type: str, metric: str = "AP",
            cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell (KEY) with its ``metric`` value, or kind/reason saying why it has none.

    ``results`` is results.csv as a frame; ``cells`` (KEY + status), when given, is the matrix: a planned
    cell that is not done counts as a gap instead of not existing."""
    res = results[(results["iou_type"] == iou_type) & (results["metric"] == metric)]
    if "category" in res.columns:
        res = res[res["category"] == "all"]
    res = res.drop_duplicates(KEY, keep="last")[KEY + ["value"]]
    grid = (res[KEY].assign(status="done") if cells is None
            else cells[KEY + ["status"]].drop_duplicates(KEY, keep="last"))
    df = grid.merge(res.assign(has_row=True), on=KEY, how="left")
    kinds, reasons = [], []
    for status, has_row, value in zip(df["status"], df["has_row"], df["value"]):
        if status != "done":
            kinds.append(status)
            reasons.append(f"{status} cell")
        elif not (pd.notna(has_row) and has_row) or pd.isna(value) or value < 0:
            kinds.append(MISSING)
            reasons.append(f"no {metric} value")
        else:
            kinds.append("")
            reasons.append("")
    return df.assign(kind=kinds, reason=reasons)[KEY + ["value", "kind", "reason"]].reset_index(drop=True)


def corruptions_of(entries_df: pd.DataFrame, severities: Iterable[int] = SEVERITIES) -> list[str]:
    """The corruption names of a frame of entries that have a cell at one of ``severities``, in table order."""
    wanted = entries_df["severity"].isin([float(s) for s in severities])
    return sorted(set(entries_df.loc[wanted, "degradation"]) - {CLEAN})


def full_sweeps(cells: pd.DataFrame, severities: Iterable[int] = SEVERITIES) -> list[str]:
    """The corruption names the run plans at every one of ``severities`` (any row, seed or status).

    Without one, mPC would be a mean over a few severities that COCO-C's reading does not support."""
    wanted = {float(s) for s in severities}
    corrupted = cells[cells["degradation"] != CLEAN]
    planned = corrupted.groupby("degradation")["severity"].agg(lambda s: wanted <= set(s.astype(float)))
    return sorted(name for name, full in planned.items() if full)


def per_seed(entries_df: pd.DataFrame, severities: Iterable[int] = SEVERITIES) -> pd.DataFrame:
    """P, mPC_c of every corruption, mPC and rPC for each row (segmenter, profile, adapter) and seed.

    ``entries_df`` has KEY + value, kind and reason (kind '' = has a value; else 'failed', 'pending',
    'missing', ...): see :func:`entries`. Output columns (PER_SEED_COLUMNS): value (NaN when it cannot be
    formed, with kind/reason), severities / of_severities (how many (corruption, severity) settings the
    value averages, of how many it should), corruptions (names mPC averages) and gaps ((corruption,
    severity, reason) left out of a value that exists). Every seed of the frame appears for every row."""
    severities = tuple(float(s) for s in severities)
    names = corruptions_of(entries_df, severities)
    seeds = sorted(set(entries_df["seed"]))
    out: list[dict[str, Any]] = []
    for row, group in entries_df.groupby(ROW, sort=True):
        by_seed = dict(list(group.groupby("seed")))
        for seed in seeds:
            sub = by_seed.get(seed, group.iloc[:0])
            base = dict(zip(ROW, row), seed=seed)
            clean = _clean(sub[sub["degradation"] == CLEAN])
            parts = [_corruption(sub[sub["degradation"] == c], c, severities) for c in names]
            overall = _overall(parts, names, len(severities))
            out.append({**base, "measure": "P", "corruption": "", **clean})
            out.append({**base, "measure": "mPC", "corruption": "", **overall})
            out.append({**base, "measure": "rPC", "corruption": "", **_ratio(overall, clean)})
            out += [{**base, "measure": "mPC_c", "corruption": c, **p} for c, p in zip(names, parts)]
    return pd.DataFrame(out, columns=PER_SEED_COLUMNS)


def robustness_table(results: pd.DataFrame, iou_type: str, metric: str = "AP",
                     cells: pd.DataFrame | None = None, severities: Iterable[int] = SEVERITIES) -> pd.DataFrame:
    """P, mPC, rPC and each mPC_c as mean and standard error (ddof=1) over seeds, long format.

    One row per (segmenter, profile, adapter, measure, corruption); corruption is '' except for mPC_c.
    seeds / of_seeds: seeds with a value / seeds in the run; severities / of_severities: the fewest settings
    a seed's value averages / how many it should (5 per corruption); corruptions: names mPC averages."""
    seeds = per_seed(entries(results, iou_type, metric, cells), severities)
    return summarize(seeds)


def summarize(per_seed_df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± standard error over seeds of a :func:`per_seed` frame (see :func:`robustness_table`)."""
    n_seeds = per_seed_df["seed"].nunique()
    out = []
    for key, g in per_seed_df.groupby([*ROW, "measure", "corruption"], sort=False):
        ok = g[g["kind"] == ""]
        values = ok["value"].astype(float).to_numpy()
        used = sorted({c for cs in ok["corruptions"] for c in cs})
        out.append({
            **dict(zip([*ROW, "measure", "corruption"], key)),
            "mean": float(np.mean(values)) if len(values) else math.nan,
            "se": float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan,
            "seeds": len(values),
            "of_seeds": n_seeds,
            "severities": int(ok["severities"].min()) if len(ok) else 0,
            "of_severities": int(g["of_severities"].max()),
            "corruptions": tuple(used),
        })
    return pd.DataFrame(out, columns=TABLE_COLUMNS)


def _value(value: float, severities: int, of: int, corruptions: tuple = (), gaps: tuple = ()) -> dict[str, Any]:
    return {"value": value, "kind": "", "reason": "", "severities": severities, "of_severities": of,
            "corruptions": corruptions, "gaps": gaps}


def _gap(kind: str, reason: str, of: int, corruptions: tuple = ()) -> dict[str, Any]:
    return {"value": math.nan, "kind": kind, "reason": reason, "severities": 0, "of_severities": of,
            "corruptions": corruptions, "gaps": ()}


def _clean(sub: pd.DataFrame) -> dict[str, Any]:
    ok = sub[sub["kind"] == ""]
    if len(ok):
        return _value(float(ok["value"].mean()), 0, 0)
    if sub.empty:
        return _gap(MISSING, "no clean cell (degradation 'none') for this row and seed", 0)
    return _gap(MISSING, f"clean cell: {_one_reason(sub)}", 0)


def _corruption(sub: pd.DataFrame, name: str, severities: tuple[float, ...]) -> dict[str, Any]:
    """mPC_c of one seed: the mean over the severities that have a value, and the ones left out."""
    of = len(severities)
    sub = sub[sub["severity"].isin(severities)]
    if sub.empty:
        return _gap(MISSING, f"no {name} cell for this row and seed", of)
    ok = sub[sub["kind"] == ""]
    if ok.empty:
        kinds = set(sub["kind"])
        return _gap(kinds.pop() if len(kinds) == 1 else MISSING, _one_reason(sub), of)
    per_severity = ok.groupby("severity")["value"].mean()
    reasons = dict(zip(sub["severity"], sub["reason"]))
    gaps = tuple((name, s, reasons.get(s) or NOT_IN_RUN) for s in severities if s not in per_severity.index)
    return _value(float(per_severity.mean()), len(per_severity), of, (name,), gaps)


def _overall(parts: list[dict[str, Any]], names: list[str], per_corruption: int) -> dict[str, Any]:
    """mPC of one seed: the mean of the mPC_c that exist (the others show in severities and corruptions)."""
    of = per_corruption * len(names)
    ok = [(n, p) for n, p in zip(names, parts) if p["kind"] == ""]
    if not ok:
        if not names:
            return _gap(MISSING, "no corruption in the run", of)
        kinds = {p["kind"] for p in parts}
        kind = kinds.pop() if len(kinds) == 1 else MISSING
        reasons = list(dict.fromkeys(p["reason"] for p in parts))
        return _gap(kind, reasons[0] if len(reasons) == 1 else "no corruption has a value (see their columns)", of)
    return _value(float(np.mean([p["value"] for _, p in ok])), sum(p["severities"] for _, p in ok), of,
                  tuple(n for n, _ in ok), tuple(g for _, p in ok for g in p["gaps"]))


def _ratio(overall: dict[str, Any], clean: dict[str, Any]) -> dict[str, Any]:
    if overall["kind"]:
        return {**overall}
    if clean["kind"]:
        return _gap(MISSING, f"no P: {clean['reason']}", overall["of_severities"], overall["corruptions"])
    if clean["value"] <= 0:
        return _gap(MISSING, "P is 0", overall["of_severities"], overall["corruptions"])
    return {**overall, "value": overall["value"] / clean["value"]}


def _one_reason(sub: pd.DataFrame) -> str:
    reasons = [r for r in dict.fromkeys(sub["reason"]) if r]
    return "; ".join(reasons) or "no value"
