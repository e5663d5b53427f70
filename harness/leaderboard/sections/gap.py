"""Gap closed: how much of the way from source-only to the oracle trained on the target's own labelled images
each method goes, (method − source-only) / (oracle-T − source-only) in %, with a paired bootstrap interval.
Shown only when `harness report` wrote gap.csv (the run has an oracle-T)."""
from __future__ import annotations

import math

from harness.leaderboard.format import IOU_TITLES, esc, fmt, md_table, segmenter_label, setting_label, settings_of
from harness.leaderboard.run import Page
from harness.leaderboard.schema import IOU_ORDER


def gap_text(r) -> str:
    """A gap.csv row's gap closed with its interval, or "—" and why it is not shown."""
    if not r["shown"]:
        return f"— ({esc(r['reason'])})"
    return f"{fmt(r['gap_closed'], False, 0)} % [{fmt(r['lo'], False, 0)}, {fmt(r['hi'], False, 0)}]"


def _span(r) -> str:
    ok = math.isfinite(r["span_lo"])
    interval = f" [{fmt(100 * r['span_lo'], True)}, {fmt(100 * r['span_hi'], True)}]" if ok else ""
    return f"{fmt(100 * r['oracle_value'], False)} ({fmt(100 * r['span'], True)}{interval})"


def lines(page: Page) -> list[str]:
    df = page.run.gap
    if df is None or df.empty:
        return []
    out = ["## Gap closed — % of the way from source-only to oracle-T",
           "",
           "(method − source-only) / (oracle-T − source-only) on the same test images, `gap [lo, hi]` a 95 % paired "
           f"bootstrap interval over images ({', '.join(map(str, sorted(set(df['resamples']))))} resamples) from the "
           "same resamples as the oracle's; shown only where the oracle-T − source-only interval starts at 1 AP or "
           "more. Source-only is the plain segmenter with `identity` for pre-processing rows and the same-iterations "
           "control fine-tune for training-side rows (column vs).", ""]
    settings = settings_of(df)
    for iou in [i for i in IOU_ORDER if i in set(df["iou_type"])]:
        sub = df[df["iou_type"] == iou]
        header = ["Segmenter", "Adapter", "vs", "Oracle", *[setting_label(*st) for st in settings]]
        spans, body = [], []
        for key in dict.fromkeys(sub[["oracle", "reference_segmenter"]].itertuples(index=False, name=None)):
            cells = []
            for deg, sev in settings:
                hit = sub[(sub["oracle"] == key[0]) & (sub["reference_segmenter"] == key[1])
                          & (sub["degradation"] == deg) & (sub["severity"] == sev)]
                cells.append("—" if hit.empty else _span(hit.iloc[-1]))
            spans.append([esc(key[0]), esc(key[1]), *cells])
        rows = dict.fromkeys(sub[["segmenter", "profile", "adapter", "reference_segmenter", "oracle"]]
                             .itertuples(index=False, name=None))
        for seg, prof, ad, ref, oracle in rows:
            cells = []
            for deg, sev in settings:
                hit = sub[(sub["segmenter"] == seg) & (sub["adapter"] == ad) & (sub["reference_segmenter"] == ref)
                          & (sub["oracle"] == oracle) & (sub["degradation"] == deg) & (sub["severity"] == sev)]
                cells.append("—" if hit.empty else gap_text(hit.iloc[-1]))
            body.append([esc(segmenter_label(seg, prof)), esc(ad), esc(ref), esc(oracle), *cells])
        out += [f"### {IOU_TITLES[iou]}", "", "Oracle-T AP ×100 (Δ vs source-only [lo, hi]):", ""]
        out += md_table(["Oracle", "vs", *[setting_label(*st) for st in settings]], spans, 2) + [""]
        out += md_table(header, body, 4) + [""]
    return out
