"""A run folder read into one checked `Run`: run.json, cells.jsonl and results.csv, plus what `harness report`
may have added (significance.csv, baselines.csv, plots/manifest.json). Bad files fail here with the file named,
so the sections can trust what they get; oddities that do not stop a render become notices."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.leaderboard.format import segmenter_label, setting_label
from harness.leaderboard.schema import (BASELINE_COLUMNS, BASELINES, COCO_METRICS, GAP, GAP_COLUMNS, IDENTITY,
                                        IOU_ORDER, KEY, MEASURES, PLOTS_MANIFEST, RESULT_COLUMNS, ROW, SELECTION,
                                        SELECTION_COLUMNS, SETTING, SIGNIFICANCE, SIGNIFICANCE_COLUMNS,
                                        SIGNIFICANCE_KEY)
from harness.methods import FIELDS as METHOD_FIELDS
from harness.methods import KINDS as METHOD_KINDS


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
    #: gap.csv rows (None: no such file, i.e. no oracle-T or no report yet)
    gap: pd.DataFrame | None = None
    #: selection.csv rows (None: no such file, i.e. no feature gap or no report yet)
    selection: pd.DataFrame | None = None

    @property
    def seeds(self) -> list[int]:
        return sorted(self.cells["seed"].unique().tolist())


@dataclass
class Page:
    """What one leaderboard shows: its run folders, each read, and the Run merged from them that the tables use."""
    dirs: list[Path]
    runs: list[Run]
    run: Run
    title: str | None
    #: the folder plot links are relative to
    link_base: Path


def load_page(run_dir: str | Path | list, title: str | None = None, link_base: str | Path | None = None) -> Page:
    dirs = [Path(d) for d in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    runs = [load_run(d) for d in dirs]
    run = merge(runs) if len(runs) > 1 else runs[0]
    return Page(dirs, runs, run, title, Path(link_base) if link_base is not None else dirs[0])


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
    budgets = meta.get("budgets", [])
    if not isinstance(budgets, list) or not all(isinstance(b, dict) and "kind" in b for b in budgets):
        raise HarnessError(f"{meta_path}: budgets: expected a list of objects with a 'kind' (train or fit)")
    methods = meta.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, dict) and set(METHOD_FIELDS) <= set(m)
                                                and m["kind"] in METHOD_KINDS for m in methods):
        raise HarnessError(f"{meta_path}: methods: expected a list of objects with {', '.join(METHOD_FIELDS)} "
                           f"(kind one of {', '.join(METHOD_KINDS)})")
    notices: list[str] = []
    results = _load_results(run_dir / "results.csv", notices)
    cells = _load_cells(run_dir / "cells.jsonl", notices)
    cells = _union_cells(cells, results)
    results = _drop_rows_of_unfinished(results, cells, notices)
    significance = _load_significance(run_dir / SIGNIFICANCE, cells, notices)
    plots = _load_plots(run_dir, notices)
    return Run(meta, cells, results, notices, significance, plots, _load_baselines(run_dir / BASELINES),
               _load_gap(run_dir / GAP), _load_selection(run_dir / SELECTION))


def merge(runs: list[Run]) -> Run:
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
    targets = {label: info for r in runs for label, info in (r.meta.get("targets") or {}).items()}
    meta = {"name": " + ".join(str(r.meta.get("name")) for r in runs), **({"targets": targets} if targets else {})}
    budgets = [b for r in runs for b in r.meta.get("budgets") or []]
    if budgets:
        meta["budgets"] = [b for i, b in enumerate(budgets) if b not in budgets[:i]]
    methods = [m for r in runs for m in r.meta.get("methods") or []]
    if methods:
        meta["methods"] = [m for i, m in enumerate(methods) if m not in methods[:i]]
    gaps = [r.gap for r in runs if r.gap is not None]
    selections = [r.selection for r in runs if r.selection is not None]
    return Run(meta, cells, results, notices, significance,
               plots, pd.concat(baselines, ignore_index=True) if baselines else None,
               pd.concat(gaps, ignore_index=True) if gaps else None,
               pd.concat(selections, ignore_index=True) if selections else None)


def iou_types(run: Run) -> list[str]:
    """The IoU types the run has results for (both when it has none yet, so an empty run shows its tables)."""
    present = set(run.results["iou_type"].unique()) - set(MEASURES)
    if not present:
        return list(IOU_ORDER)
    return [i for i in IOU_ORDER if i in present] + sorted(present - set(IOU_ORDER))


def numeric(col: pd.Series, path: Path, name: str, kind: type, allow_empty: bool = False) -> pd.Series:
    """A column of a CSV or JSONL file as numbers, or an error naming the file, row and value."""
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
    known = [m in MEASURES.get(i, COCO_METRICS) for i, m in zip(df["iou_type"], df["metric"])]
    other = df[[not k for k in known]]
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
    df["severity"] = numeric(df["severity"], path, "severity", float)
    df["seed"] = numeric(df["seed"], path, "seed", int)
    df["value"] = numeric(df["value"], path, "value", float, allow_empty=True)
    negative = (df["value"] < 0) & ~df["iou_type"].isin(MEASURES)  # an unbiased KID may be below 0
    df.loc[negative, "note"] = [n or "COCO reported -1 (nothing to evaluate)" for n in df.loc[negative, "note"]]
    df.loc[negative, "value"] = np.nan
    return df


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
    df["severity"] = numeric(df["severity"], path, "severity", float)
    df["seed"] = numeric(df["seed"], path, "seed", int)
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


def _report_table(path: Path, columns: list[str]) -> pd.DataFrame | None:
    """A CSV `harness report` wrote, as text, with exactly ``columns`` (None when the file is absent)."""
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise HarnessError(f"{path}: empty (expected a header with {', '.join(columns)})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HarnessError(f"{path}: missing column(s) {', '.join(missing)}")
    return df[columns].astype(object).reset_index(drop=True)


def _flags(df: pd.DataFrame, col: str, path: Path) -> list[bool]:
    flags = []
    for i, raw in enumerate(df[col]):
        text = str(raw).strip().lower()
        if text not in ("true", "false"):
            raise HarnessError(f"{path}: row {i + 2}: {col} {str(raw)!r} is not True or False")
        flags.append(text == "true")
    return flags


def _read_report_csv(path: Path, columns: list[str], numbers: list[tuple[str, type]]) -> pd.DataFrame | None:
    """A table `harness report` wrote, checked: its columns, finite numbers, True/False flags, lo <= hi."""
    df = _report_table(path, columns)
    if df is None:
        return None
    for col in ["segmenter", "profile", "adapter", "degradation", "iou_type", "metric"]:
        df[col] = df[col].astype(str)
    for col, kind in numbers:
        df[col] = numeric(df[col], path, col, kind)
        bad = [i for i, v in enumerate(df[col]) if not math.isfinite(v)]
        if bad:
            raise HarnessError(f"{path}: row {bad[0] + 2}: {col} {df[col].iloc[bad[0]]!r} is not a finite number")
    df["significant"] = _flags(df, "significant", path)
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
    other = (df["metric"] != "AP") | df["iou_type"].isin(MEASURES)
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
        example = (f"{segmenter_label(first.segmenter, first.profile)} {first.adapter} "
                   f"{setting_label(first.degradation, first.severity)}")
        notices.append(f"{path.name}: {len(stray)} row(s) ignored: no finished pair of an adapter cell and its "
                       f"{IDENTITY} cell in this run (e.g. {example}).")
    return df[paired].reset_index(drop=True)


def _load_baselines(path: Path) -> pd.DataFrame | None:
    return _read_report_csv(path, BASELINE_COLUMNS, _INTERVAL_NUMBERS + [("value", float), ("reference", float)])


def _load_gap(path: Path) -> pd.DataFrame | None:
    """gap.csv, checked: its columns, and numbers where a gap closed is shown (nan elsewhere is its reason)."""
    df = _report_table(path, GAP_COLUMNS)
    if df is None:
        return None
    for col in ("severity", "value", "reference", "oracle_value", "gain", "span", "span_lo", "span_hi", "gap_closed",
                "lo", "hi"):
        df[col] = numeric(df[col], path, col, float, allow_empty=True)
    for col in ("seeds", "resamples"):
        df[col] = numeric(df[col], path, col, int)
    df["shown"] = _flags(df, "shown", path)
    bad = df.index[df["shown"] & ~np.isfinite(df["gap_closed"].astype(float))]
    if len(bad):
        raise HarnessError(f"{path}: row {bad[0] + 2}: gap_closed shown but not a finite number")
    return df


def _load_selection(path: Path) -> pd.DataFrame | None:
    """selection.csv, checked: its columns and numbers (a correlation over too few adapters is nan)."""
    df = _report_table(path, SELECTION_COLUMNS)
    if df is None:
        return None
    for col in ("severity", "spearman", "lo", "hi", "chosen_ap", "best_ap", "regret"):
        df[col] = numeric(df[col], path, col, float, allow_empty=True)
    df["adapters"] = numeric(df["adapters"], path, "adapters", int)
    return df


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
