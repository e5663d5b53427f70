"""Render a matrix run directory (finished or partial) as a deterministic GitHub-markdown leaderboard.

Every cell of the matrix appears in every table it belongs to: a missing number is shown as "—", "failed" or
"pending" with a footnote, never dropped, so a partial run reads as partial rather than as a smaller benchmark.
Files that `harness report` adds to a run folder are optional inputs: significance.csv puts bootstrap intervals
on the summary's Δ columns and plots/manifest.json adds a Plots section.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from harness import atomic
from harness.errors import HarnessError
from harness.leaderboard import robustness

KEY = ["segmenter", "profile", "adapter", "degradation", "severity", "seed"]
ROW = ["segmenter", "profile", "adapter"]
SETTING = ["degradation", "severity"]
RESULT_COLUMNS = ["cell", *KEY, "iou_type", "metric", "category", "value", "note"]
MAIN_METRICS = ("AP", "AP50", "AP75")
SCALE_METRICS = ("AP_small", "AP_medium", "AP_large")
FIDELITY = "fidelity"
FIDELITY_METRICS = ("PSNR", "SSIM")
COCO_METRICS = MAIN_METRICS + SCALE_METRICS
#: how each metric is shown: multiplier, decimals
SHOWN = {"PSNR": (1.0, 2), "SSIM": (1.0, 3)}
IOU_ORDER = ("bbox", "segm")
IOU_TITLES = {"bbox": "Boxes (bbox)", "segm": "Masks (segm)"}
SCALE_LABELS = {"AP_small": "small", "AP_medium": "medium", "AP_large": "large"}
VERSION_ORDER = ("harness", "python", "torch", "mmdet", "mmcv", "pycocotools")
IDENTITY = "identity"
MISSING = "missing"
ROBUSTNESS_METRIC = "AP"
SIGNIFICANCE = "significance.csv"
SIGNIFICANCE_COLUMNS = ["segmenter", "profile", "adapter", "degradation", "severity", "iou_type", "metric", "seeds",
                        "delta", "lo", "hi", "resamples", "significant"]
#: written by `harness report` when a run has training-side baselines: every row vs its plain segmenter + identity
BASELINES = "baselines.csv"
BASELINE_COLUMNS = [*SIGNIFICANCE_COLUMNS[:3], "reference_segmenter", "reference_adapter", *SIGNIFICANCE_COLUMNS[3:],
                    "value", "reference"]
SIGNIFICANCE_KEY = [*ROW, *SETTING, "iou_type", "metric"]
PLOTS_MANIFEST = Path("plots") / "manifest.json"


@dataclass
class Run:
    meta: dict[str, Any]
    cells: pd.DataFrame  # one row per matrix cell: KEY + cell, status, error
    results: pd.DataFrame  # known metrics only, unique per KEY + iou_type + metric + category
    notices: list[str] = field(default_factory=list)
    #: significance.csv rows shown in the summary's Δ columns (None: the run folder has no such file)
    significance: pd.DataFrame | None = None
    #: plots/manifest.json entries: (path of the image, title)
    plots: list[tuple[Path, str]] = field(default_factory=list)
    #: baselines.csv rows (None: no such file)
    baselines: pd.DataFrame | None = None

    @property
    def seeds(self) -> list[int]:
        return sorted(self.cells["seed"].unique().tolist())


def render(run_dir: str | Path | list, title: str | None = None, link_base: str | Path | None = None) -> str:
    """The whole leaderboard as one markdown string (ends with a newline). Several run folders (e.g. one per
    segmenter, computed on different machines) are shown side by side in the same tables.

    ``link_base`` is the folder the markdown will be written to, so that plot links resolve from there;
    without it they are relative to the (first) run folder."""
    dirs = [Path(d) for d in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    runs = [load_run(d) for d in dirs]
    run = _merge(runs) if len(runs) > 1 else runs[0]
    name = " + ".join(str(r.meta.get("name") or d.name) for r, d in zip(runs, dirs))
    out: list[str] = [f"# {_esc(title or 'Leaderboard: ' + name)}", ""]
    for r in runs:
        out += ([f"### Run {_esc(r.meta.get('name', 'unknown'))}", ""] if len(runs) > 1 else []) + _provenance(r)
    out += [READING, ""]
    out += _summary_section(run)
    out += _robustness_section(run)
    out += _baselines_section(run)
    for iou in _iou_types(run):
        out += _iou_section(run, iou)
    out += _failed_section(run)
    notes = [*run.notices, *_robustness_left_out(run)]
    if notes:
        out += ["## Input notes", ""] + [f"- {_esc(n)}" for n in notes] + [""]
    out += _plots_section(run, Path(link_base) if link_base is not None else dirs[0])
    return "\n".join(out).rstrip("\n") + "\n"


def write(run_dir: str | Path | list, out_path: str | Path, title: str | None = None) -> Path:
    """Render and write atomically, so a reader never sees half a leaderboard."""
    out_path = Path(out_path)
    text = render(run_dir, title, link_base=out_path.parent)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic.mkstemp(out_path.parent, suffix=out_path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path


# ---------------------------------------------------------------- loading


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise HarnessError(f"{meta_path}: not found; is {run_dir} a run directory?")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HarnessError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise HarnessError(f"{meta_path}: expected a JSON object")
    notices: list[str] = []
    results = _load_results(run_dir / "results.csv", notices)
    cells = _load_cells(run_dir / "cells.jsonl", notices)
    cells = _union_cells(cells, results)
    results = _drop_rows_of_unfinished(results, cells, notices)
    significance = _load_significance(run_dir / SIGNIFICANCE, cells, notices)
    plots = _load_plots(run_dir, notices)
    return Run(meta, cells, results, notices, significance, plots, _load_baselines(run_dir / BASELINES))


def _merge(runs: list[Run]) -> Run:
    """One table set from several runs; a cell (same labels) found in two runs is taken from the later one."""
    notices = [n for r in runs for n in r.notices]
    cells = pd.concat([r.cells for r in runs], ignore_index=True)
    dup = cells.duplicated(KEY, keep="last")
    if dup.any():
        notices.append(f"{int(dup.sum())} cell(s) appear in more than one run; the last run's were used.")
    cells = cells[~dup].reset_index(drop=True)
    results = pd.concat([r.results for r in runs], ignore_index=True)
    results = results[~results.duplicated(KEY + ["iou_type", "metric", "category"], keep="last")]
    results = results[results["cell"].isin(set(cells["cell"]))].reset_index(drop=True)
    tests = [r.significance for r in runs if r.significance is not None]
    significance = None
    if tests:
        significance = pd.concat(tests, ignore_index=True)
        significance = significance[~significance.duplicated(SIGNIFICANCE_KEY, keep="last")].reset_index(drop=True)
    plots = [p for r in runs for p in r.plots]
    baselines = [r.baselines for r in runs if r.baselines is not None]
    return Run({"name": " + ".join(str(r.meta.get("name")) for r in runs)}, cells, results, notices, significance,
               plots, pd.concat(baselines, ignore_index=True) if baselines else None)


def _load_results(path: Path, notices: list[str]) -> pd.DataFrame:
    if not path.is_file():
        notices.append(f"{path.name} not found: no results yet.")
        return _typed_results(pd.DataFrame({c: pd.Series(dtype=object) for c in RESULT_COLUMNS}), path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in RESULT_COLUMNS})
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise HarnessError(f"{path}: missing column(s) {', '.join(missing)}")
    df = _typed_results(df[RESULT_COLUMNS].fillna(""), path)
    fidelity = df["iou_type"] == FIDELITY
    other = df[~((fidelity & df["metric"].isin(FIDELITY_METRICS)) | (~fidelity & df["metric"].isin(COCO_METRICS)))]
    if len(other):
        kinds = sorted({f"{i}/{m}" for i, m in zip(other["iou_type"], other["metric"])})
        notices.append(f"Not tabulated: {len(other)} row(s) of other metrics ({', '.join(kinds)}).")
    df = df.drop(index=other.index)
    split = (df["category"] != "all") & (df["metric"] != "AP")
    if split.any():
        notices.append(f"Not tabulated: {int(split.sum())} per-class row(s) of metrics other than AP.")
        df = df[~split]
    dup = df.duplicated(KEY + ["iou_type", "metric", "category"], keep="last")
    if dup.any():
        notices.append(f"{path.name}: {int(dup.sum())} duplicate row(s); the last of each was used.")
    return df[~dup].reset_index(drop=True)


def _typed_results(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    df = df.astype({c: object for c in df.columns})
    df["severity"] = _numeric(df["severity"], path, "severity", float)
    df["seed"] = _numeric(df["seed"], path, "seed", int)
    df["value"] = _numeric(df["value"], path, "value", float, allow_empty=True)
    negative = df["value"] < 0
    df.loc[negative, "note"] = [n or "COCO reported -1 (nothing to evaluate)" for n in df.loc[negative, "note"]]
    df.loc[negative, "value"] = np.nan
    return df


def _numeric(col: pd.Series, path: Path, name: str, kind: type, allow_empty: bool = False) -> pd.Series:
    out = []
    for i, raw in enumerate(col.tolist()):
        text = "" if raw is None else str(raw).strip()
        if text == "" and allow_empty:
            out.append(math.nan)
            continue
        try:
            number = float(text)
            if kind is int:
                if not number.is_integer():
                    raise ValueError
                number = int(number)
        except ValueError:
            raise HarnessError(f"{path}: row {i + 2}: {name} {text!r} is not a number") from None
        out.append(number)
    return pd.Series(out, index=col.index, dtype=float if kind is float else "int64")


def _load_cells(path: Path, notices: list[str]) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    if not path.is_file():
        notices.append(f"{path.name} not found: cell status taken from results rows.")
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                if n == len(lines):
                    notices.append(f"{path.name}: unreadable last line ignored (run interrupted while writing?).")
                    continue
                raise HarnessError(f"{path}: line {n}: not a JSON object ({e})") from None
            absent = [k for k in ["cell", *KEY] if k not in rec]
            if absent:
                raise HarnessError(f"{path}: line {n}: missing key(s) {', '.join(absent)}")
            records.append(rec)
    df = pd.DataFrame(records, columns=["cell", *KEY, "status", "error"]).astype(object)
    df["severity"] = _numeric(df["severity"], path, "severity", float)
    df["seed"] = _numeric(df["seed"], path, "seed", int)
    df["status"] = [s if isinstance(s, str) and s else "pending" for s in df["status"]]
    df["cell"] = df["cell"].astype(str)
    return df.drop_duplicates("cell", keep="last").reset_index(drop=True)


def _union_cells(cells: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Cells that only appear in results.csv count as done, so their rows are still shown."""
    from_results = results.drop_duplicates(KEY)[["cell", *KEY]].assign(status="done", error=None)
    merged = pd.concat([cells, from_results], ignore_index=True).drop_duplicates(KEY, keep="first")
    for col in ["segmenter", "profile", "adapter", "degradation", "cell"]:
        merged[col] = merged[col].fillna("").astype(str)
    return merged.reset_index(drop=True)


def _drop_rows_of_unfinished(results: pd.DataFrame, cells: pd.DataFrame, notices: list[str]) -> pd.DataFrame:
    status = results.merge(cells[KEY + ["status"]], on=KEY, how="left")["status"]
    stale = (status != "done").to_numpy()
    if stale.any():
        notices.append(f"{int(stale.sum())} result row(s) belong to cells not marked done and are not tabulated.")
    return results[~stale].reset_index(drop=True)


def _read_report_csv(path: Path, columns: list[str], numeric: list[tuple[str, type]]) -> pd.DataFrame | None:
    """A table `harness report` wrote, checked: its columns, finite numbers, True/False flags, lo <= hi."""
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise HarnessError(f"{path}: empty (expected a header with {', '.join(columns)})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HarnessError(f"{path}: missing column(s) {', '.join(missing)}")
    df = df[columns].astype(object).reset_index(drop=True)
    for col in ["segmenter", "profile", "adapter", "degradation", "iou_type", "metric"]:
        df[col] = df[col].astype(str)
    for col, kind in numeric:
        df[col] = _numeric(df[col], path, col, kind)
        bad = [i for i, v in enumerate(df[col]) if not math.isfinite(v)]
        if bad:
            raise HarnessError(f"{path}: row {bad[0] + 2}: {col} {df[col].iloc[bad[0]]!r} is not a finite number")
    flags = []
    for i, raw in enumerate(df["significant"]):
        text = str(raw).strip().lower()
        if text not in ("true", "false"):
            raise HarnessError(f"{path}: row {i + 2}: significant {str(raw)!r} is not True or False")
        flags.append(text == "true")
    df["significant"] = flags
    inverted = df.index[df["lo"] > df["hi"]]
    if len(inverted):
        raise HarnessError(f"{path}: row {inverted[0] + 2}: lo is greater than hi")
    return df


_INTERVAL_NUMBERS = [("severity", float), ("seeds", int), ("delta", float), ("lo", float), ("hi", float),
                     ("resamples", int)]


def _load_significance(path: Path, cells: pd.DataFrame, notices: list[str]) -> pd.DataFrame | None:
    """The paired-bootstrap table of `harness report`, checked, and only its rows that the summary can show."""
    df = _read_report_csv(path, SIGNIFICANCE_COLUMNS, _INTERVAL_NUMBERS)
    if df is None:
        return None
    dup = df.duplicated(SIGNIFICANCE_KEY, keep="last")
    if dup.any():
        notices.append(f"{path.name}: {int(dup.sum())} duplicate row(s); the last of each was used.")
        df = df[~dup]
    other = (df["metric"] != "AP") | (df["iou_type"] == FIDELITY)
    if other.any():
        kinds = sorted({f"{i}/{m}" for i, m in zip(df.loc[other, "iou_type"], df.loc[other, "metric"])})
        notices.append(f"{path.name}: {int(other.sum())} row(s) of metrics the summary has no Δ column for "
                       f"({', '.join(kinds)}) not shown.")
        df = df[~other]
    done = cells[cells["status"] == "done"]
    finished = set(done[ROW + SETTING].itertuples(index=False, name=None))
    paired = [(seg, prof, IDENTITY, deg, sev) in finished and (seg, prof, ad, deg, sev) in finished and ad != IDENTITY
              for seg, prof, ad, deg, sev in df[ROW + SETTING].itertuples(index=False, name=None)]
    stray = df[[not p for p in paired]]
    if len(stray):
        first = stray.iloc[0]
        example = (f"{_segmenter_label(first.segmenter, first.profile)} {first.adapter} "
                   f"{_setting_label(first.degradation, first.severity)}")
        notices.append(f"{path.name}: {len(stray)} row(s) ignored: no finished pair of an adapter cell and its "
                       f"{IDENTITY} cell in this run (e.g. {example}).")
    return df[paired].reset_index(drop=True)


def _load_plots(run_dir: Path, notices: list[str]) -> list[tuple[Path, str]]:
    """Images that `harness report` listed for this run: (path, title), in the manifest's order."""
    path = run_dir / PLOTS_MANIFEST
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(entries, list):
        raise HarnessError(f"{path}: expected a JSON list of {{\"file\": ..., \"title\": ...}} objects")
    plots, absent = [], []
    for i, entry in enumerate(entries):
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(file, str) or not file.strip():
            raise HarnessError(f"{path}: entry {i}: expected an object with a 'file' path")
        title = entry.get("title")
        if title is not None and not isinstance(title, str):
            raise HarnessError(f"{path}: entry {i}: 'title' must be a string")
        image = run_dir / file
        if not image.is_file():
            absent.append(file)
        plots.append((image, title or Path(file).stem))
    if absent:
        notices.append(f"{PLOTS_MANIFEST.as_posix()}: {len(absent)} listed image(s) not found: {', '.join(absent)}.")
    return plots


# ---------------------------------------------------------------- entries and aggregation


def _entries(run: Run, iou: str, pairs: list[tuple[str, str]]) -> pd.DataFrame:
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


@dataclass(frozen=True)
class Agg:
    text: str
    notes: tuple[str, ...] = ()


def _aggregate(group: pd.DataFrame, n_seeds: int, signed: bool = False, scale: float = 100.0,
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
    text = _fmt(scale * float(np.mean(values)), signed, digits)
    if len(values) > 1:
        text += f" ± {scale * float(np.std(values, ddof=1)) / math.sqrt(len(values)):.{digits}f}"
    if len(values) < n_seeds or reasons:
        text += f" (n={len(values)})"
    return Agg(text, notes)


def _fmt(x: float, signed: bool, digits: int = 1) -> str:
    text = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    zero = f"{0:.{digits}f}"
    return zero if text.lstrip("+-") == zero else text


def _aggregate_by(df: pd.DataFrame, by: list[str], n_seeds: int, signed: bool = False,
                  metric: str = "AP") -> pd.Series:
    scale, digits = SHOWN.get(metric, (100.0, 1))
    aggs = {key: _aggregate(g, n_seeds, signed, scale, digits) for key, g in df.groupby(by, sort=False, dropna=False)}
    index = pd.MultiIndex.from_tuples(list(aggs), names=by)
    return pd.Series(list(aggs.values()), index=index, dtype=object)


# ---------------------------------------------------------------- ordering and labels


def _row_order(rows: Iterable[tuple]) -> list[tuple]:
    return sorted(set(rows), key=lambda r: (r[0], r[1], r[2] != IDENTITY, r[2]))


def _setting_order(settings: Iterable[tuple]) -> list[tuple]:
    return sorted(set(settings), key=lambda s: (s[0] != "none", s[0], s[1]))


def _setting_label(degradation: str, severity: float) -> str:
    if degradation == "none" and severity == 0:
        return "clean"
    return f"{degradation} s{_num(severity)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _segmenter_label(segmenter: str, profile: str) -> str:
    return f"{segmenter} ({profile})" if profile else segmenter


def _esc(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _seed_phrase(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return "single seed"
    return f"mean ± s.e. over {len(seeds)} seeds"


# ---------------------------------------------------------------- markdown


def _md_table(header: list[str], rows: list[list[str]], n_left: int) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < n_left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return [line(header), rule] + [line(r) for r in rows]


def _grid(table: pd.DataFrame, col_labels: list[str]) -> list[str]:
    """A pivoted frame of Agg (index = ROW) as a table, with its notes numbered under it."""
    notes: dict[str, int] = {}
    body = []
    for (segmenter, profile, adapter), aggs in table.iterrows():
        cells = [_esc(_segmenter_label(segmenter, profile)), _esc(adapter)]
        for agg in aggs:
            if not isinstance(agg, Agg):
                cells.append("")
                continue
            marks = [notes.setdefault(n, len(notes) + 1) for n in agg.notes]
            cells.append(agg.text + (f" [{','.join(map(str, marks))}]" if marks else ""))
        body.append(cells)
    out = _md_table(["Segmenter", "Adapter", *map(_esc, col_labels)], body, n_left=2) + [""]
    if notes:
        out += [f"- [{i}] {_esc(n)}" for n, i in notes.items()] + [""]
    return out


def _pivot(aggs: pd.Series, columns: list[str] | str, rows: list[tuple], cols: list) -> pd.DataFrame:
    table = aggs.unstack(columns)
    return table.reindex(index=pd.MultiIndex.from_tuples(rows, names=ROW), columns=cols)


# ---------------------------------------------------------------- sections


def _provenance(run: Run) -> list[str]:
    meta = run.meta
    dataset = meta.get("dataset") or {}
    versions = meta.get("versions") or {}
    names = [k for k in VERSION_ORDER if k in versions] + sorted(k for k in versions if k not in VERSION_ORDER)
    status = run.cells["status"].value_counts()
    counts = meta.get("cells") or {}
    total = max(len(run.cells), int(counts.get("total") or 0))
    done, failed = int(status.get("done", 0)), int(status.get("failed", 0))
    profiles = sorted(p for p in run.cells["profile"].unique() if p)
    fingerprint = _esc(dataset.get("fingerprint", "unknown"))
    return [
        f"- **Run:** {_esc(meta.get('name', 'unknown'))}",
        f"- **Config hash:** `{_esc(meta.get('config_hash', 'unknown'))}`",
        f"- **Dataset:** {_esc(dataset.get('name', 'unknown'))} (fingerprint `{fingerprint}`)",
        f"- **Profile(s):** {_esc(', '.join(profiles) or 'unknown')}",
        f"- **Versions:** {_esc(', '.join(f'{k} {versions[k]}' for k in names) or 'unknown')}",
        f"- **Created:** {_esc(meta.get('created') or 'unknown')}",
        f"- **Finished:** {_esc(meta.get('finished') or 'not finished (partial run)')}",
        f"- **Cells:** {done} done, {failed} failed, {total - done - failed} pending, {total} total",
        f"- **Seeds:** {', '.join(map(str, run.seeds)) or 'none'}",
        "",
    ]


READING = ("Values are COCO AP ×100. With several seeds a cell reads mean ± standard error (ddof=1); "
           "(n=k) marks a cell averaged over fewer seeds, with the reason in a numbered note under the table.")


def _iou_types(run: Run) -> list[str]:
    present = set(run.results["iou_type"].unique()) - {FIDELITY}
    if not present:
        return list(IOU_ORDER)
    return [i for i in IOU_ORDER if i in present] + sorted(present - set(IOU_ORDER))


def _iou_section(run: Run, iou: str) -> list[str]:
    if run.cells.empty:
        return [f"## {IOU_TITLES.get(iou, iou)}", "", "No cells in this run.", ""]
    seeds = run.seeds
    rows = _row_order(run.cells[ROW].itertuples(index=False, name=None))
    settings = _setting_order(run.cells[SETTING].itertuples(index=False, name=None))
    labels = [_setting_label(*s) for s in settings]
    out = [f"## {IOU_TITLES.get(iou, iou)}", ""]
    for metric in MAIN_METRICS:
        aggs = _aggregate_by(_entries(run, iou, [(metric, "all")]), ROW + SETTING, len(seeds))
        out += [f"### {metric} — {iou}, ×100, {_seed_phrase(seeds)}", ""]
        out += _grid(_pivot(aggs, SETTING, rows, settings), labels)
    out += _delta_section(run, iou, rows, settings, labels)
    out += [f"### AP by object size — {iou}, ×100, {_seed_phrase(seeds)}", ""]
    scale = _entries(run, iou, [(m, "all") for m in SCALE_METRICS])
    for setting, label in zip(settings, labels):
        sub = scale[(scale["degradation"] == setting[0]) & (scale["severity"] == setting[1])]
        aggs = _aggregate_by(sub, ROW + ["metric"], len(seeds))
        out += [f"#### {label}", ""]
        out += _grid(_pivot(aggs, "metric", rows, list(SCALE_METRICS)), [SCALE_LABELS[m] for m in SCALE_METRICS])
    out += _class_section(run, iou, rows, settings, labels)
    return out


def _delta_section(run: Run, iou: str, rows: list[tuple], settings: list[tuple], labels: list[str]) -> list[str]:
    seeds = run.seeds
    out = [f"### ΔAP vs {IDENTITY} — {iou}, ×100, paired by seed, {_seed_phrase(seeds)}", ""]
    others = [r for r in rows if r[2] != IDENTITY]
    if not others:
        return out + ["No adapter other than `identity` in this run, so there is nothing to compare.", ""]
    with_identity = {r[:2] for r in rows if r[2] == IDENTITY}
    lacking = sorted({r[:2] for r in others} - with_identity)
    if lacking:
        names = ", ".join(_segmenter_label(*s) for s in lacking)
        out += [f"No `identity` adapter run for {_esc(names)}: no deltas for it.", ""]
    compared = [r for r in others if r[:2] in with_identity]
    if not compared:
        return out
    return out + _grid(_pivot(_delta_aggs(run, iou, "AP", compared), SETTING, compared, settings), labels)


def _delta_aggs(run: Run, iou: str, metric: str, compared: list[tuple]) -> pd.Series:
    """Adapter-minus-identity ``metric`` per row and setting, paired by seed."""
    entries = _entries(run, iou, [(metric, "all")])
    pair_on = ["segmenter", "profile", "degradation", "severity", "seed"]
    base = entries[entries["adapter"] == IDENTITY][pair_on + ["value", "kind", "reason"]].assign(paired=True)
    df = entries[entries["adapter"] != IDENTITY].merge(base, on=pair_on, how="left", suffixes=("", "_id"))
    paired = zip(df["value"], df["kind"], df["reason"], df["paired"], df["value_id"], df["kind_id"], df["reason_id"])
    values, kinds, reasons = zip(*(_difference(*p) for p in paired)) if len(df) else ((), (), ())
    df = df.assign(value=list(values), kind=list(kinds), reason=list(reasons))
    keep = set(compared)
    df = df[[r in keep for r in df[ROW].itertuples(index=False, name=None)]]
    return _aggregate_by(df, ROW + SETTING, len(run.seeds), signed=True, metric=metric)


def _difference(v: float, k: Any, r: Any, paired: Any, v0: float, k0: Any, r0: Any) -> tuple[float, str, str]:
    """One seed's adapter-minus-identity AP, or why it cannot be formed."""
    if _has_reason(k):
        return math.nan, k, r
    if not _flag(paired):
        return math.nan, MISSING, "no identity cell for this seed"
    if _has_reason(k0):
        return math.nan, MISSING, f"identity: {r0}"
    return v - v0, "", ""


def _class_section(run: Run, iou: str, rows: list[tuple], settings: list[tuple], labels: list[str]) -> list[str]:
    out = [f"### Per-class AP — {iou}, ×100, {_seed_phrase(run.seeds)}", ""]
    res = run.results
    per_class = (res["iou_type"] == iou) & (res["metric"] == "AP") & (res["category"] != "all")
    classes = sorted(set(res.loc[per_class, "category"]))
    if not classes:
        return out + ["No per-class rows for this IoU type.", ""]
    entries = _entries(run, iou, [("AP", c) for c in classes])
    for setting, label in zip(settings, labels):
        sub = entries[(entries["degradation"] == setting[0]) & (entries["severity"] == setting[1])]
        aggs = _aggregate_by(sub, ROW + ["category"], len(run.seeds))
        out += [f"#### {label}", ""]
        out += _grid(_pivot(aggs, "category", rows, classes), classes)
    return out


def _failed_section(run: Run) -> list[str]:
    failed = run.cells[run.cells["status"] == "failed"]
    out = ["## Failed cells", ""]
    if failed.empty:
        return out + ["No failed cells.", ""]
    ordered = sorted(
        failed.itertuples(index=False),
        key=lambda c: (c.segmenter, c.profile, c.adapter != IDENTITY, c.adapter, c.degradation != "none",
                       c.degradation, c.severity, c.seed, c.cell),
    )
    body = [
        [
            f"`{_esc(c.cell)}`",
            _esc(_segmenter_label(c.segmenter, c.profile)),
            _esc(c.adapter),
            _esc(_setting_label(c.degradation, c.severity)),
            str(c.seed),
            _esc(c.error) if isinstance(c.error, str) and c.error.strip() else "(no error message)",
        ]
        for c in ordered
    ]
    return out + _md_table(["Cell", "Segmenter", "Adapter", "Setting", "Seed", "Error"], body, n_left=6) + [""]


def _summary_section(run: Run) -> list[str]:
    """One table per setting with what a reader looks for first: AP, its change vs identity, fidelity."""
    if run.cells.empty or run.results.empty:
        return []
    seeds = run.seeds
    rows = _row_order(run.cells[ROW].itertuples(index=False, name=None))
    settings = _setting_order(run.cells[SETTING].itertuples(index=False, name=None))
    compared = [r for r in rows if r[2] != IDENTITY and (r[0], r[1], IDENTITY) in rows]
    has_fidelity = bool((run.results["iou_type"] == FIDELITY).any())
    columns: list[tuple[str, pd.Series]] = []
    intervals: dict[tuple, tuple[Agg, int]] = {}
    for iou in _iou_types(run):
        columns.append((f"{iou} AP", _aggregate_by(_entries(run, iou, [("AP", "all")]), ROW + SETTING, len(seeds))))
        if compared:
            deltas = _delta_aggs(run, iou, "AP", compared)
            columns.append((f"Δ {iou} AP", deltas))
            intervals.update(_intervals(run, iou, deltas))
        columns.append((f"{iou} AP50", _aggregate_by(_entries(run, iou, [("AP50", "all")]), ROW + SETTING,
                                                     len(seeds), metric="AP50")))
    if has_fidelity:
        for metric in FIDELITY_METRICS:
            columns.append((f"{metric}{' (dB)' if metric == 'PSNR' else ''}",
                            _aggregate_by(_entries(run, FIDELITY, [(metric, "all")]), ROW + SETTING, len(seeds),
                                          metric=metric)))
    out = [f"## Summary — AP ×100 and Δ vs `{IDENTITY}` paired by seed, {_seed_phrase(seeds)}", ""]
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
                data[label].append(shown[0] if shown else aggs.get((*row, *setting)))
        table = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(rows, names=ROW))
        out += [f"### {_setting_label(*setting)}", ""] + _grid(table, [label for label, _ in columns])
        if resamples:
            counts = ", ".join(map(str, sorted(resamples)))
            out += [f"[lo, hi]: 95 % paired bootstrap interval over test images ({counts} resamples); "
                    "* = excludes 0.", ""]
    return out


def _load_baselines(path: Path) -> pd.DataFrame | None:
    return _read_report_csv(path, BASELINE_COLUMNS, _INTERVAL_NUMBERS + [("value", float), ("reference", float)])


def _baselines_section(run: Run) -> list[str]:
    """Pre-processing and training-side baselines side by side, each as its gain over doing nothing: the plain
    segmenter (the one a baseline was fine-tuned from, or trained like) without adaptation, on the same images."""
    df = run.baselines
    if df is None or df.empty:
        return []
    out = ["## Pre-processing vs training-side baselines — AP ×100 (Δ vs the plain segmenter without adaptation)",
           "",
           "Each row against the segmenter it was fine-tuned from or trained like, with the `identity` adapter, on "
           "the same test images: `Δ [lo, hi]`, a 95 % paired bootstrap interval over images "
           f"({', '.join(map(str, sorted(set(df['resamples']))))} resamples); * = excludes 0.", ""]
    settings = _setting_order(df[SETTING].itertuples(index=False, name=None))
    for iou in [i for i in IOU_ORDER if i in set(df["iou_type"])]:
        sub = df[df["iou_type"] == iou]
        rows = list(dict.fromkeys(sub[["segmenter", "profile", "adapter", "reference_segmenter"]]
                                  .itertuples(index=False, name=None)))
        header = ["Segmenter", "Adapter", "vs", *[_setting_label(*st) for st in settings]]
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
                cells.append(f"{_fmt(100 * r['value'], False)} ({_fmt(100 * r['delta'], True)} "
                             f"[{_fmt(100 * r['lo'], True)}, {_fmt(100 * r['hi'], True)}]"
                             f"{'*' if r['significant'] else ''})")
            body.append([_esc(_segmenter_label(seg, prof)), _esc(ad), _esc(ref), *cells])
        out += [f"### {IOU_TITLES[iou]}", ""] + _md_table(header, body, 3) + [""]
    return out


def _intervals(run: Run, iou: str, deltas: pd.Series) -> dict[tuple, tuple[Agg, int]]:
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
        text = f"{_fmt(100 * r.delta, True)} [{_fmt(100 * r.lo, True)}, {_fmt(100 * r.hi, True)}]"
        text += ("*" if r.significant else "") + (f" (n={r.seeds})" if r.seeds < n_seeds else "")
        base = deltas.get(key)
        out[(f"Δ {iou} AP", *key)] = (Agg(text, base.notes if isinstance(base, Agg) else ()), int(r.resamples))
    return out


ROBUSTNESS_READING = (
    "P: clean {metric} (degradation `none`); mPC_c: a corruption's {metric} averaged over severities 1–5; "
    "mPC: the mean of mPC_c over the corruptions; rPC = mPC / P, in %. Each is computed per seed, then "
    "averaged over seeds. (k/K sev.) marks a mean over fewer severities than it should have, with the missing "
    "ones in a note.")


def _clean_and_corrupted(run: Run) -> bool:
    degradations = set(run.cells["degradation"])
    return "none" in degradations and bool(degradations - {"none"})


def _robustness_left_out(run: Run) -> list[str]:
    """The note that replaces the Robustness section when no corruption has its full severity sweep."""
    if not _clean_and_corrupted(run) or robustness.full_sweeps(run.cells):
        return []
    settings = _setting_order(run.cells[SETTING].itertuples(index=False, name=None))
    has = ", ".join(_setting_label(*s) for s in settings if s[0] != "none")
    return [f"No Robustness section (P, mPC, rPC): no corruption in this run has all of severities 1–5 "
            f"(it has {has})."]


def _robustness_section(run: Run, metric: str = ROBUSTNESS_METRIC) -> list[str]:
    """P, mPC and rPC per row, by corruption name, when the run has clean cells and at least one corruption
    with its full severity sweep (others are shown with the severities they lack)."""
    if not _clean_and_corrupted(run) or not robustness.full_sweeps(run.cells):
        return []
    seeds = run.seeds
    rows = _row_order(run.cells[ROW].itertuples(index=False, name=None))
    out = [f"## Robustness — {metric} ×100, {_seed_phrase(seeds)}", "",
           ROBUSTNESS_READING.format(metric=metric), ""]
    severities = set(float(s) for s in robustness.SEVERITIES)
    outside = run.cells[(run.cells["degradation"] != "none") & ~run.cells["severity"].isin(severities)]
    if len(outside):
        labels = sorted({_setting_label(d, s) for d, s in zip(outside["degradation"], outside["severity"])})
        out += [f"Not in mPC (severity outside 1–5): {_esc(', '.join(labels))}.", ""]
    for iou in _iou_types(run):
        entries = _entries(run, iou, [(metric, "all")])
        per = robustness.per_seed(entries)
        names = robustness.corruptions_of(entries)
        overall = f"mPC ({len(names)} corruption{'s' if len(names) != 1 else ''})"
        labels = ["P", overall, "rPC (%)", *names]
        keys = [("P", ""), ("mPC", ""), ("rPC", ""), *(("mPC_c", c) for c in names)]
        groups = {k: g for k, g in per.groupby([*ROW, "measure", "corruption"], sort=False)}
        body = {label: [_robust_agg(groups.get((*row, *key)), names, len(seeds)) for row in rows]
                for label, key in zip(labels, keys)}
        table = pd.DataFrame(body, index=pd.MultiIndex.from_tuples(rows, names=ROW))
        out += [f"### {IOU_TITLES.get(iou, iou)}", ""] + _grid(table, labels)
        out += [f"{overall}: {_esc(', '.join(names))}.", ""]
    return out


def _robust_agg(group: pd.DataFrame | None, names: list[str], n_seeds: int) -> Agg:
    """One robustness value as mean ± s.e. over seeds, marked when it averages fewer severities than it should."""
    if group is None:
        return Agg("—", ("no cell for this row",))
    agg = _aggregate(group, n_seeds)
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
        notes.append(f"{name} {', '.join('s' + _num(s) for s in severities)}{which}: {reason}")
    return notes


def _plots_section(run: Run, base: Path) -> list[str]:
    if not run.plots:
        return []
    out = ["## Plots", ""]
    for image, title in run.plots:
        target = Path(os.path.relpath(image, base)).as_posix()
        if any(ch in target for ch in " ()"):
            target = f"<{target}>"
        alt = _esc(title).replace("[", "\\[").replace("]", "\\]")
        out += [f"### {_esc(title)}", "", f"![{alt}]({target})", ""]
    return out

