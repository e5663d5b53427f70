"""Pre-processing and training-side baselines side by side, each as its gain over doing nothing: the plain
segmenter (the one a baseline was fine-tuned from, or trained like) without adaptation, on the same images.
Shown only when `harness report` wrote baselines.csv."""
from __future__ import annotations

from harness.leaderboard.format import IOU_TITLES, esc, fmt, md_table, segmenter_label, setting_label, settings_of
from harness.leaderboard.run import Page
from harness.leaderboard.schema import IOU_ORDER


def delta_text(r) -> str:
    """A baselines.csv row's gain over the plain segmenter: `Δ [lo, hi]`, * where the interval excludes 0."""
    return (f"{fmt(100 * r['delta'], True)} [{fmt(100 * r['lo'], True)}, {fmt(100 * r['hi'], True)}]"
            f"{'*' if r['significant'] else ''}")


def lines(page: Page) -> list[str]:
    df = page.run.baselines
    if df is None or df.empty:
        return []
    out = ["## Pre-processing vs training-side baselines — AP ×100 (Δ vs the plain segmenter without adaptation)",
           "",
           "Each row against the segmenter it was fine-tuned from or trained like, with the `identity` adapter, on "
           "the same test images: `Δ [lo, hi]`, a 95 % paired bootstrap interval over images "
           f"({', '.join(map(str, sorted(set(df['resamples']))))} resamples); * = excludes 0.", ""]
    settings = settings_of(df)
    for iou in [i for i in IOU_ORDER if i in set(df["iou_type"])]:
        sub = df[df["iou_type"] == iou]
        rows = list(dict.fromkeys(sub[["segmenter", "profile", "adapter", "reference_segmenter"]]
                                  .itertuples(index=False, name=None)))
        header = ["Segmenter", "Adapter", "vs", *[setting_label(*st) for st in settings]]
        body = []
        for seg, prof, ad, ref in rows:
            cells = []
            for deg, sev in settings:
                hit = sub[(sub["segmenter"] == seg) & (sub["adapter"] == ad) & (sub["degradation"] == deg)
                          & (sub["severity"] == sev)]
                if hit.empty:
                    cells.append("—")
                    continue
                r = hit.iloc[-1]
                cells.append(f"{fmt(100 * r['value'], False)} ({delta_text(r)})")
            body.append([esc(segmenter_label(seg, prof)), esc(ad), esc(ref), *cells])
        out += [f"### {IOU_TITLES[iou]}", ""] + md_table(header, body, 3) + [""]
    return out
