"""Can an adapter be picked without labels? The feature gap against AP across the adapters of each setting.

Per setting (segmenter, target, severity) and IoU type, over the adapters whose cells have both a KID and an AP
(mean over seeds):

- the Spearman correlation between Δgap and ΔAP (each adapter minus ``identity``; ranks are those of KID and AP),
  with a 95 % interval from Fisher's z with the standard error √(1.06 / (n − 3)) of Fieller, Hartley and Pearson
  (1957), so only with 4 or more adapters; a negative ρ means a smaller gap goes with a higher AP;
- the *selection regret*: AP of the adapter with the smallest KID minus the best adapter's AP (0 when the gap
  picks the best one; never positive). Adapters that optimise the segmenter's own features
  (``Adapter.optimises_segmenter_features``) are flagged and never picked by the gap, which they could game.

Reads only results.csv (``harness.leaderboard.run.Run``), so real targets count as synthetic ones do.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.schema import FEATURE, IDENTITY, SELECTION_COLUMNS

GROUP = ["segmenter", "profile", "degradation", "severity"]


def flagged_adapters(config: dict[str, Any]) -> set[str]:
    """Labels of the run's adapters whose class says they optimise the segmenter's features."""
    from harness.errors import HarnessError
    from harness.registry import default_registry

    registry, out = default_registry(), set()
    for entry in config.get("adapters") or []:
        name = entry.get("name") if isinstance(entry, dict) else entry
        try:
            cls = registry.get("adapter", name)
        except HarnessError:
            continue
        if getattr(cls, "optimises_segmenter_features", False):
            out.add(entry.get("label", name) if isinstance(entry, dict) else name)
    return out


def spearman_interval(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """(ρ, lo, hi); nan where ρ is undefined (fewer than 3 points, or ties everywhere) or the interval is."""
    from scipy.stats import spearmanr

    n = len(x)
    if n < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan, math.nan
    rho = float(spearmanr(x, y).statistic)
    if n < 4 or not math.isfinite(rho):
        return rho, math.nan, math.nan
    if abs(rho) >= 1:
        return rho, rho, rho  # Fisher's z is infinite: the interval degenerates to the point
    z, se = math.atanh(rho), math.sqrt(1.06 / (n - 3))
    return rho, math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)


def selection(results: pd.DataFrame, config: dict[str, Any], iou_types=("bbox", "segm"),
              metric: str = "AP") -> pd.DataFrame:
    """``selection.csv``: one row per setting and IoU type that has a feature gap for 2 or more adapters."""
    flagged = flagged_adapters(config)
    means = (results[results["category"] == "all"].groupby(GROUP + ["iou_type", "metric", "adapter"], dropna=False)
             ["value"].mean())
    by: dict[tuple, dict[str, float]] = {}  # (setting, iou_type, metric) -> adapter -> mean over seeds
    for (*key, ad), v in means.items():
        if np.isfinite(v):
            by.setdefault(tuple(key), {})[ad] = float(v)
    rows = []
    settings = results[results["iou_type"] == FEATURE][GROUP].drop_duplicates().itertuples(index=False, name=None)
    for setting in settings:
        gap = by.get((*setting, FEATURE, "KID"), {})
        for iou in iou_types:
            ap = by.get((*setting, iou, metric), {})
            both = [a for a in gap if a in ap]
            if len(both) < 2:
                continue
            base_gap, base_ap = gap.get(IDENTITY, 0.0), ap.get(IDENTITY, 0.0)
            rho, lo, hi = spearman_interval([gap[a] - base_gap for a in both], [ap[a] - base_ap for a in both])
            pickable = [a for a in both if a not in flagged] or both
            chosen = min(pickable, key=lambda a: (gap[a], a))
            best = max(both, key=lambda a: (ap[a], a))
            rows.append({**dict(zip(GROUP, setting)), "iou_type": iou, "metric": metric, "adapters": len(both),
                         "spearman": rho, "lo": lo, "hi": hi, "chosen": chosen, "chosen_ap": ap[chosen],
                         "best": best, "best_ap": ap[best], "regret": ap[chosen] - ap[best],
                         "flagged": " ".join(sorted(a for a in both if a in flagged))})
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)

