"""Deterministic report figures from the tidy results frame (see ``results.csv``) and per-image predictions.

Figures are drawn with the object-oriented API (``Figure`` + ``FigureCanvasAgg``) so importing this module never
switches the caller's pyplot backend, and saved at a fixed dpi without the ``Software`` PNG chunk, so the same
input gives byte-identical files. Missing, NaN or negative (COCO's "nothing to evaluate") numbers are skipped,
and a panel left without data says "no data" instead of failing.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from pycocotools import mask as mask_utils

from harness.errors import HarnessError

DPI = 120
COLUMNS = ("segmenter", "profile", "adapter", "degradation", "severity", "seed", "iou_type", "metric", "category",
           "value")
CLEAN = "none"
FIDELITY = "fidelity"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
PANEL_COLUMNS = ("degraded", "adapted", "prediction", "ground truth")


# --------------------------------------------------------------------------------------------- shared helpers

def _frame(results: pd.DataFrame) -> pd.DataFrame:
    """The usable rows: finite values, COCO's -1 sentinel dropped, severity as float for exact matching."""
    if not isinstance(results, pd.DataFrame):
        raise HarnessError(f"results: expected a pandas DataFrame, got {type(results).__name__}")
    missing = [c for c in COLUMNS if c not in results.columns]
    if missing:
        raise HarnessError(f"results: missing column(s) {', '.join(missing)}")
    df = results.loc[:, list(COLUMNS)].copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["severity"] = pd.to_numeric(df["severity"], errors="coerce")
    for col in ("segmenter", "profile", "adapter", "degradation", "iou_type", "metric", "category"):
        df[col] = df[col].astype(str)
    keep = np.isfinite(df["value"]) & np.isfinite(df["severity"])
    keep &= (df["iou_type"] == FIDELITY) | (df["value"] >= 0)
    return df[keep].reset_index(drop=True)


def _adapters(df: pd.DataFrame, baseline: str) -> list[str]:
    names = sorted(set(df["adapter"]) - {baseline})
    return ([baseline] if baseline in set(df["adapter"]) else []) + names


def _adapter_colors(adapters: Sequence[str], baseline: str) -> dict[str, Any]:
    """Baseline black, the rest in sorted order from tab10 (tab20 beyond ten) so colours agree across panels."""
    others = sorted(a for a in adapters if a != baseline)
    cmap = colormaps["tab10" if len(others) <= 10 else "tab20"]
    colors = {a: cmap(i % cmap.N) for i, a in enumerate(others)}
    colors[baseline] = "black"
    return colors


def _adapter_label(adapter: str, baseline: str) -> str:
    return f"no adaptation ({baseline})" if adapter == baseline else adapter


def _class_color(category_id: int) -> tuple[float, float, float]:
    return colormaps["tab10"](int(category_id) % 10)[:3]


def _segmenters(df: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(df["segmenter"], df["profile"]))) or [("", "")]


def _seg_label(key: tuple[str, str]) -> str:
    return f"{key[0]} ({key[1]})" if key[0] else ""


def _mean_se(values: pd.Series, seeds: pd.Series) -> tuple[float, float, int]:
    """Mean and standard error over seeds (duplicate rows of one seed are averaged first); SE is NaN for one seed."""
    per_seed = values.groupby(seeds.to_numpy()).mean()
    n = len(per_seed)
    if n == 0:
        return math.nan, math.nan, 0
    se = float(per_seed.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(per_seed.mean()), se, n


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=11, color="0.4")


def _severity_text(value: float) -> str:
    return f"{float(value):g}"


def _save(fig: Figure, out: str | Path, dpi: int = DPI) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=dpi, format="png", metadata={"Software": None})
    return out


# ---------------------------------------------------------------------------------------------------- figures

def adaptation_bars(results: pd.DataFrame, setting: tuple[str, float], out: str | Path,
                    iou_types: Sequence[str] = ("bbox", "segm"),
                    metrics: Sequence[str] = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"),
                    baseline: str = "identity") -> Path:
    """Grouped bars (metric groups, one bar per adapter, x100) for one degradation setting.

    One subplot per iou_type, one row per (segmenter, profile); mean over seeds with standard-error bars when
    there is more than one seed. Only ``category == 'all'`` rows are used.
    """
    degradation, severity = setting
    df = _frame(results)
    df = df[(df["category"] == "all") & (df["degradation"] == str(degradation))
            & (df["severity"] == float(severity)) & df["iou_type"].isin(iou_types) & df["metric"].isin(metrics)]
    adapters = _adapters(df, baseline)
    colors = _adapter_colors(adapters, baseline)
    segs = _segmenters(df)
    n_bars = max(len(adapters), 1)
    panel_w = min(24.0, 1.2 + len(metrics) * (0.25 + 0.09 * n_bars))
    stacked = panel_w * len(iou_types) > 16.0  # many adapters: iou_types one above the other, not a long strip
    n_rows, n_cols = (len(segs) * len(iou_types), 1) if stacked else (len(segs), len(iou_types))
    fig = Figure(figsize=(panel_w * n_cols + 2.5, 3.2 * n_rows + 0.6), layout="constrained")
    grid = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    axes = grid.reshape(len(segs), len(iou_types))
    width = 0.8 / n_bars
    x = np.arange(len(metrics))
    for r, seg in enumerate(segs):
        for c, iou in enumerate(iou_types):
            ax = axes[r][c]
            sub = df[(df["segmenter"] == seg[0]) & (df["profile"] == seg[1]) & (df["iou_type"] == iou)]
            drawn = False
            for i, adapter in enumerate(adapters):
                heights, errs, xs = [], [], []
                for j, metric in enumerate(metrics):
                    rows = sub[(sub["adapter"] == adapter) & (sub["metric"] == metric)]
                    mean, se, n = _mean_se(rows["value"], rows["seed"])
                    if n:
                        xs.append(x[j] - 0.4 + width * (i + 0.5))
                        heights.append(mean * 100)
                        errs.append(se * 100 if n > 1 else 0.0)
                if xs:
                    drawn = True
                    ax.bar(xs, heights, width=width, color=colors[adapter], edgecolor="white", linewidth=0.3,
                           yerr=errs if any(errs) else None, capsize=1.5, error_kw={"elinewidth": 0.7},
                           label=_adapter_label(adapter, baseline))
            ax.set_xticks(x, list(metrics), fontsize=8, rotation=30 if len(metrics) > 4 else 0)
            ax.set_xlim(-0.5, len(metrics) - 0.5)
            ax.set_title(" — ".join(p for p in (_seg_label(seg), iou) if p), fontsize=9)
            ax.grid(axis="y", linewidth=0.4, alpha=0.5)
            ax.set_axisbelow(True)
            if c == 0 or stacked:
                ax.set_ylabel("score ×100", fontsize=9)
            if not drawn:
                _no_data(ax)
    _adapter_legend(fig, adapters, colors, baseline, kind="bar")
    fig.suptitle(f"{degradation}, severity {_severity_text(severity)}", fontsize=11)
    return _save(fig, out)


def severity_curves(results: pd.DataFrame, out: str | Path, iou_type: str = "segm", metric: str = "AP",
                    baseline: str = "identity") -> Path:
    """Metric (x100) against severity, one subplot per degradation, one line per adapter.

    Each adapter's clean score (degradation 'none') is a marker at x=0 labelled 'clean'. One row per
    (segmenter, profile); mean over seeds with standard-error bars.
    """
    df = _frame(results)
    df = df[(df["category"] == "all") & (df["iou_type"] == iou_type) & (df["metric"] == metric)]
    adapters = _adapters(df, baseline)
    colors = _adapter_colors(adapters, baseline)
    degradations = sorted(set(df["degradation"]) - {CLEAN}) or ["(no degradation)"]
    segs = _segmenters(df)
    severities = sorted(set(df.loc[df["degradation"] != CLEAN, "severity"]) | {1.0, 2.0, 3.0, 4.0, 5.0})
    has_clean = bool((df["degradation"] == CLEAN).any())
    ticks = ([0.0] if has_clean else []) + severities
    labels = (["clean"] if has_clean else []) + [_severity_text(s) for s in severities]
    fig = Figure(figsize=(3.4 * len(degradations) + 2.5, 3.0 * len(segs) + 0.6), layout="constrained")
    axes = fig.subplots(len(segs), len(degradations), squeeze=False, sharey=True)
    for r, seg in enumerate(segs):
        seg_rows = df[(df["segmenter"] == seg[0]) & (df["profile"] == seg[1])]
        for c, degradation in enumerate(degradations):
            ax = axes[r][c]
            drawn = False
            for adapter in adapters:
                rows = seg_rows[(seg_rows["adapter"] == adapter)]
                style = {"color": colors[adapter], "linestyle": "--" if adapter == baseline else "-",
                         "linewidth": 1.4, "marker": "o", "markersize": 3.5, "capsize": 2, "elinewidth": 0.7}
                xs, ys, es = _curve(rows[rows["degradation"] == degradation])
                if xs:
                    drawn = True
                    ax.errorbar(xs, ys, yerr=es if any(e > 0 for e in es) else None, **style)
                cx, cy, ce = _curve(rows[rows["degradation"] == CLEAN])
                if cx:
                    drawn = True
                    ax.errorbar([0.0], cy[:1], yerr=ce[:1] if ce[0] > 0 else None, color=colors[adapter],
                                marker="D", markersize=5, linestyle="none", capsize=2, elinewidth=0.7)
            ax.set_xticks(ticks, labels, fontsize=8)
            ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
            ax.set_title(" — ".join(p for p in (_seg_label(seg), degradation) if p), fontsize=9)
            ax.grid(linewidth=0.4, alpha=0.5)
            if c == 0:
                ax.set_ylabel(f"{iou_type} {metric} ×100", fontsize=9)
            if r == len(segs) - 1:
                ax.set_xlabel("severity", fontsize=9)
            if not drawn:
                _no_data(ax)
    _adapter_legend(fig, adapters, colors, baseline, kind="line")
    fig.suptitle(f"{iou_type} {metric} by severity", fontsize=11)
    return _save(fig, out)


def _curve(rows: pd.DataFrame) -> tuple[list[float], list[float], list[float]]:
    xs, ys, es = [], [], []
    for sev in sorted(set(rows["severity"])):
        at = rows[rows["severity"] == sev]
        mean, se, n = _mean_se(at["value"], at["seed"])
        if n:
            xs.append(float(sev))
            ys.append(mean * 100)
            es.append(se * 100 if n > 1 else 0.0)
    return xs, ys, es


def fidelity_vs_gain(results: pd.DataFrame, out: str | Path, iou_type: str = "segm", metric: str = "AP",
                     baseline: str = "identity") -> Path:
    """Scatter of PSNR (dB) of the adapted images against the metric gain (x100) over ``baseline``.

    The gain pairs each adapter with the baseline on the same (segmenter, profile, degradation, severity, seed);
    infinite PSNR (an unchanged clean image) is skipped. One colour per adapter, one marker per degradation,
    one subplot per (segmenter, profile).
    """
    key = ["segmenter", "profile", "degradation", "severity", "seed"]
    df = _frame(results)
    df = df[df["category"] == "all"]
    perf = df[(df["iou_type"] == iou_type) & (df["metric"] == metric)].groupby(key + ["adapter"], as_index=False)[
        "value"].mean()
    base = perf[perf["adapter"] == baseline].drop(columns="adapter").rename(columns={"value": "base"})
    psnr = df[(df["iou_type"] == FIDELITY) & (df["metric"] == "PSNR")].groupby(key + ["adapter"], as_index=False)[
        "value"].mean().rename(columns={"value": "psnr"})
    points = perf.merge(base, on=key).merge(psnr, on=key + ["adapter"])
    points["gain"] = (points["value"] - points["base"]) * 100
    points = points[np.isfinite(points["gain"]) & np.isfinite(points["psnr"])]
    points = points.sort_values(key + ["adapter"], kind="mergesort").reset_index(drop=True)
    adapters = _adapters(points, baseline)
    colors = _adapter_colors(adapters, baseline)
    degradations = sorted(set(points["degradation"]))
    markers = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(degradations)}
    segs = _segmenters(points)
    fig = Figure(figsize=(5.0 * len(segs) + 2.8, 4.2), layout="constrained")
    axes = fig.subplots(1, len(segs), squeeze=False, sharey=True)[0]
    for ax, seg in zip(axes, segs):
        sub = points[(points["segmenter"] == seg[0]) & (points["profile"] == seg[1])]
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        for (adapter, degradation), grp in sub.groupby(["adapter", "degradation"], sort=True):
            ax.scatter(grp["psnr"], grp["gain"], color=colors[adapter], marker=markers[degradation], s=28,
                       edgecolors="white", linewidths=0.4, zorder=3)
        if 0 < len(sub) < 30:
            for row in sub.itertuples():
                ax.annotate(row.adapter, (row.psnr, row.gain), xytext=(3, 3), textcoords="offset points",
                            fontsize=6.5, color=colors[row.adapter])
        ax.set_xlabel("PSNR of adapted images (dB)", fontsize=9)
        ax.set_title(_seg_label(seg) or f"{iou_type} {metric}", fontsize=9)
        ax.grid(linewidth=0.4, alpha=0.5)
        if sub.empty:
            _no_data(ax)
    axes[0].set_ylabel(f"{iou_type} {metric} gain vs {baseline} (×100)", fontsize=9)
    if adapters:
        _adapter_legend(fig, adapters, colors, baseline, kind="dot", loc="outside right upper")
    if degradations:
        handles = [Line2D([], [], linestyle="none", marker=markers[d], color="0.3", label=d) for d in degradations]
        fig.legend(handles=handles, loc="outside right lower", fontsize=8, title="degradation", title_fontsize=8,
                   frameon=False)
    fig.suptitle(f"fidelity vs {iou_type} {metric} gain", fontsize=11)
    return _save(fig, out)


#: columns of a fit's losses.csv that are not losses
LOSS_LOG_OTHER = ("iteration", "lr", "seconds")


def loss_curves(log, out: str | Path, title: str) -> Path:
    """A training's logged losses (a DataFrame from ``Plugin.loss_log``, or a fit's ``losses.csv``: means over
    each logging interval) against iteration, one panel per loss on its own scale, and the learning rate:
    whether it converged or was still moving when it stopped."""
    from harness.interfaces import read_loss_csv

    if isinstance(log, pd.DataFrame):
        df, path = log, Path(out)
    else:
        path = Path(log)
        df = read_loss_csv(path)
    if "iteration" not in df.columns:
        raise HarnessError(f"{path}: no 'iteration' column (expected iteration, LOSS..., lr, seconds)")
    losses = [c for c in df.columns if c not in LOSS_LOG_OTHER]
    shown = losses + (["lr"] if "lr" in df.columns else [])
    n_cols = min(3, max(1, len(shown)))
    n_rows = math.ceil(max(1, len(shown)) / n_cols)
    fig = Figure(figsize=(3.2 * n_cols, 2.4 * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    x = pd.to_numeric(df["iteration"], errors="coerce")
    for ax, column in zip(axes, shown):
        y = pd.to_numeric(df[column], errors="coerce")
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.any():
            ax.plot(x[keep], y[keep], color="black" if column == "lr" else "tab:blue", linewidth=1.2)
        else:
            _no_data(ax)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(linewidth=0.4, alpha=0.5)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    if not shown:
        _no_data(axes[0])
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def _adapter_legend(fig: Figure, adapters: Sequence[str], colors: dict[str, Any], baseline: str, kind: str,
                    loc: str = "outside right upper") -> None:
    if not adapters:
        return
    handles = []
    for a in adapters:
        label = _adapter_label(a, baseline)
        if kind == "bar":
            handles.append(Patch(facecolor=colors[a], label=label))
        elif kind == "line":
            handles.append(Line2D([], [], color=colors[a], linestyle="--" if a == baseline else "-", marker="o",
                                  markersize=3.5, label=label))
        else:
            handles.append(Line2D([], [], color=colors[a], linestyle="none", marker="o", label=label))
    fig.legend(handles=handles, loc=loc, fontsize=8, title="adapter", title_fontsize=8, frameon=False)


# ------------------------------------------------------------------------------------------ qualitative panels

def panels(rows: list[dict], out: str | Path, class_names: dict[int, str], title: str | None = None,
           score_thr: float = 0.5, bgr: bool = True) -> Path:
    """Qualitative grid, one row per item: degraded | adapted | prediction | ground truth.

    Predictions (score >= ``score_thr``) are drawn on the adapted image, ground truth on the item's optional
    ``'clean'`` image, else on the degraded one. Images are uint8 HxW or HxWx3, BGR by default as read by
    ``harness.imageio`` (``bgr=False`` for RGB).
    """
    n = max(len(rows), 1)
    aspect = 1.0
    if rows:
        first = _image(rows[0], "degraded", 0, bgr)
        aspect = first.shape[0] / max(first.shape[1], 1)
    cell = 2.6
    fig = Figure(figsize=(cell * 4 + 0.4, cell * aspect * n + (0.5 if title else 0.2) + 0.3), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c, name in enumerate(PANEL_COLUMNS):
        axes[0][c].set_title(name, fontsize=9)
    if not rows:
        for ax in axes[0]:
            _no_data(ax)
    for r, item in enumerate(rows):
        if not isinstance(item, dict):
            raise HarnessError(f"panels: row {r} must be a dict, got {type(item).__name__}")
        degraded = _image(item, "degraded", r, bgr)
        adapted = _image(item, "adapted", r, bgr)
        clean = _image(item, "clean", r, bgr) if item.get("clean") is not None else None
        preds = [p for p in _records(item, "predictions", r) if float(p.get("score", 1.0)) >= score_thr]
        preds = sorted(preds, key=lambda p: float(p.get("score", 1.0)))
        gts = _records(item, "ground_truth", r)
        axes[r][0].imshow(degraded)
        axes[r][1].imshow(adapted)
        _overlay(axes[r][2], adapted, preds, class_names, r, with_score=True)
        _overlay(axes[r][3], clean if clean is not None else degraded, gts, class_names, r, with_score=False)
        axes[r][3].set_xlabel("on clean image" if clean is not None else "on degraded image", fontsize=7)
        axes[r][0].set_ylabel(str(item.get("title", f"#{r}")), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    # about one figure pixel per image pixel: upsampled photographs only make the PNG heavier
    native = round(first.shape[1] / cell) if rows else DPI
    return _save(fig, out, dpi=max(72, min(DPI, native)))


def failure_cases(rows: list[dict], out: str | Path, class_names: dict[int, str], title: str = "failure cases",
                  score_thr: float = 0.5, bgr: bool = True) -> Path:
    """``panels`` under a failure-cases title; choosing which items failed is the caller's job."""
    return panels(rows, out, class_names, title=title, score_thr=score_thr, bgr=bgr)


def _image(item: dict, key: str, r: int, bgr: bool) -> np.ndarray:
    """An RGB uint8 HxWx3 copy for drawing; grayscale is repeated to three channels."""
    if item.get(key) is None:
        raise HarnessError(f"panels: row {r} ({item.get('title', '')!r}) has no '{key}' image")
    img = np.asarray(item[key])
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or img.size == 0:
        raise HarnessError(f"panels: row {r} '{key}' must be HxW or HxWx3, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = img.astype(np.float64)
        img = np.nan_to_num(img * 255.0 if np.nanmax(img) <= 1.0 else img)
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    return np.ascontiguousarray(img[:, :, ::-1] if bgr else img)


def _records(item: dict, key: str, r: int) -> list[dict]:
    records = item.get(key) or []
    if not isinstance(records, (list, tuple)) or not all(isinstance(x, dict) for x in records):
        raise HarnessError(f"panels: row {r} '{key}' must be a list of COCO dicts")
    return list(records)


def _decode(seg: Any, shape: tuple[int, int], r: int) -> np.ndarray | None:
    """The HxW mask of an RLE dict, or None when absent, not RLE, or sized for another image."""
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        return None
    counts = seg["counts"]
    if isinstance(counts, list):
        h, w = seg["size"]
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = {"size": list(seg["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    try:
        mask = mask_utils.decode(rle)
    except Exception as exc:  # pycocotools raises bare errors on corrupt counts
        raise HarnessError(f"panels: row {r} has an undecodable segmentation RLE ({exc})") from exc
    return mask.astype(bool) if mask.shape == shape else None


def _overlay(ax, image: np.ndarray, records: Iterable[dict], class_names: dict[int, str], r: int,
             with_score: bool, alpha: float = 0.45) -> None:
    canvas = image.astype(np.float32)
    records = list(records)
    for rec in records:
        mask = _decode(rec.get("segmentation"), image.shape[:2], r)
        if mask is not None:
            color = np.array(_class_color(rec.get("category_id", 0))) * 255.0
            canvas[mask] = (1 - alpha) * canvas[mask] + alpha * color
    ax.imshow(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    h, w = image.shape[:2]
    for rec in records:
        cid = int(rec.get("category_id", 0))
        color = _class_color(cid)
        bbox = rec.get("bbox")
        if bbox is None or len(bbox) != 4 or not all(np.isfinite(float(v)) for v in bbox):
            continue
        x, y, bw, bh = (float(v) for v in bbox)
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, edgecolor=color, linewidth=1.0))
        label = class_names.get(cid, str(cid))
        if with_score:
            label = f"{label} {float(rec.get('score', 1.0)):.2f}"
        inside = y < 0.08 * h  # no room above the box: label inside its top edge
        ax.text(min(max(x, 0.0), w - 1), y + 1.0 if inside else y - 1.5, label, fontsize=6, color="white",
                va="top" if inside else "bottom", ha="left", clip_on=True,
                bbox={"facecolor": color, "alpha": 0.8, "pad": 0.8, "linewidth": 0})
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def overlay(image: np.ndarray, predictions: list[dict], out: str | Path, class_names: dict[int, str],
            score_thr: float = 0.5, bgr: bool = True, title: str | None = None) -> Path:
    """One image with its predictions drawn on it (what ``harness infer`` writes per image)."""
    item = {"image": image, "title": title or ""}
    rgb = _image(item, "image", 0, bgr)
    preds = sorted((p for p in _records({"p": predictions}, "p", 0) if float(p.get("score", 1.0)) >= score_thr),
                   key=lambda p: float(p.get("score", 1.0)))
    h, w = rgb.shape[:2]
    scale = 4.0 / max(h, w)
    fig = Figure(figsize=(max(w * scale, 1.0), max(h * scale, 1.0) + (0.3 if title else 0.0)), layout="constrained")
    ax = fig.subplots()
    ax.set_xticks([])
    ax.set_yticks([])
    _overlay(ax, rgb, preds, class_names, 0, with_score=True)
    if title:
        ax.set_title(title, fontsize=8)
    return _save(fig, out)
