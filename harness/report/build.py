"""`harness report`: what a finished (or partial) run means, from its run folder and the stage cache.

- ``significance.csv`` (in the run folder): for every adapter cell, the paired bootstrap over test images of
  its AP minus identity's on the same images (same segmenter, setting and seeds);
- ``gap.csv`` (when the run has an oracle-T): every method row's gap closed, (method − source-only) /
  (oracle-T − source-only), with its paired bootstrap interval (see ``gaps``);
- ``selection.csv`` (when cells have a feature gap): per setting, the Spearman correlation across adapters
  between Δgap and ΔAP and the selection regret of picking the adapter with the smallest gap (see
  ``harness.report.selection``);
- ``plots/``: adaptation bars, AP vs severity, PSNR vs AP gain, qualitative panels and failure cases, listed in
  ``plots/manifest.json`` so the leaderboard links them;
- the leaderboard markdown, rendered with both.

Predictions and images are read from the cache through the stage keys each cell records in ``cells.jsonl``,
so a report needs no recomputation; cells whose stages are gone are reported and skipped.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.cache import Store
from harness.data.coco import first_images, load_split, write_json_atomic
from harness.errors import HarnessError
from harness.hashing import seed_from
from harness.leaderboard.schema import GAP_COLUMNS, SELECTION
from harness.report.selection import selection

IDENTITY = "identity"
SIGNIFICANCE_COLUMNS = ["segmenter", "profile", "adapter", "degradation", "severity", "iou_type", "metric", "seeds",
                        "delta", "lo", "hi", "resamples", "significant"]
GROUP = ("segmenter", "profile", "degradation", "severity")
BASELINE_COLUMNS = [*SIGNIFICANCE_COLUMNS[:3], "reference_segmenter", "reference_adapter", *SIGNIFICANCE_COLUMNS[3:],
                    "value", "reference"]


class RunView:
    """A run folder plus where its cells' stages live."""

    def __init__(self, run_dir: Path, cache: str | Path | None = None):
        self.dir = Path(run_dir)
        meta_path = self.dir / "run.json"
        if not meta_path.is_file():
            raise HarnessError(f"{meta_path}: not found; is {self.dir} a run directory?")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{meta_path}: not valid JSON ({exc.msg})") from None
        self.store = Store(cache or self.meta.get("cache"))
        self.cells = [c for c in _read_cells(self.dir / "cells.jsonl") if c.get("status") == "done"]
        self.notes: list[str] = []
        config = self.meta.get("config", {})
        #: real targets by label -> their evaluated split's ground truth (see ``gt_of``)
        self._real = self._real_targets(config)
        #: the cells on the source's own images (the qualitative plots read their clean originals)
        self.source_cells = [c for c in self.cells if c.get("degradation") not in (self.meta.get("targets") or {})]
        dataset = self.meta.get("dataset", {}).get("path")
        if not dataset or not Path(dataset).is_dir():
            raise HarnessError(f"{meta_path}: dataset folder {dataset!r} not found; reports read its ground truth")
        self.dataset = Path(dataset)
        self.gt = first_images(load_split(self.dataset, config.get("split", "test")), config.get("limit"),
                               config.get("sample"))
        self.class_names = {int(c["id"]): str(c["name"]) for c in self.gt["categories"]}
        self._predictions: dict[str, list[dict]] = {}
        self._matched: dict[tuple[str, str], Any] = {}

    def _real_targets(self, config: dict) -> dict[str, dict]:
        """Each real target's evaluated images and labels (its predictions are already in its category ids); a
        target whose folder is gone has its cells left out, with a note."""
        out = {}
        for label, info in (self.meta.get("targets") or {}).items():
            folder = Path(info.get("path") or "")
            if not folder.is_dir():
                self.cells = [c for c in self.cells if c.get("degradation") != label]
                self.notes.append(f"cells of real target '{label}' left out: its data folder {folder} is not here")
                continue
            out[label] = first_images(load_split(folder, info.get("split", "test")), config.get("limit"),
                                      config.get("sample"))
        return out

    def gt_of(self, degradation: str) -> dict:
        """The ground truth a cell of this setting is scored on: a real target's own, else the source split's."""
        return self._real.get(degradation, self.gt)

    def stage(self, cell: dict, kind: str) -> Path | None:
        key = (cell.get("stages") or {}).get(kind)
        if not key:
            return None
        path = self.store.path(kind, key)
        return path if self.store.done(kind, key) else None

    def predictions(self, cell: dict) -> list[dict] | None:
        folder = self.stage(cell, "predict")
        if folder is None:
            self.notes.append(f"cell {cell['cell']}: predictions not in the cache {self.store.root}; skipped")
            return None
        key = folder.name
        if key not in self._predictions:
            self._predictions[key] = json.loads((folder / "predictions.json").read_text())
        return self._predictions[key]


    def matched(self, cell: dict, iou: str):
        """The cell's detections matched to ground truth once (``bootstrap.match``), or None if not cached."""
        from harness.evaluation.bootstrap import match

        preds = self.predictions(cell)
        if preds is None:
            return None
        key = (cell["stages"]["predict"], iou)
        if key not in self._matched:
            self._matched[key] = match(self.gt_of(cell["degradation"]), preds, iou)
        return self._matched[key]


def _read_cells(path: Path) -> list[dict]:
    if not path.is_file():
        raise HarnessError(f"{path}: not found; is {path.parent} a run directory?")
    cells = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            cells.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write: the table renderer reports it
    return cells


def _key(cell: dict) -> tuple:
    return tuple(cell[k] for k in GROUP)


def significance(view: RunView, resamples: int = 1000, iou_types=("bbox", "segm"), metric: str = "AP",
                 progress: bool = True) -> pd.DataFrame:
    """One row per (non-identity cell group over seeds, iou_type): bootstrap of mean(AP_adapter - AP_identity)."""
    from tqdm import tqdm

    from harness.evaluation.bootstrap import paired_bootstrap_seeds

    by_group: dict[tuple, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for cell in view.cells:
        by_group[_key(cell)][cell["adapter"]][int(cell["seed"])] = cell
    jobs = [(group, adapter, seeds) for group, adapters in by_group.items() if IDENTITY in adapters
            for adapter, seeds in adapters.items() if adapter != IDENTITY]
    rows = []
    for group, adapter, seeds in tqdm(jobs, desc="bootstrap", unit="pair", disable=not progress):
        baseline = by_group[group][IDENTITY]
        common = sorted(set(seeds) & set(baseline))
        for iou in iou_types:
            pairs = [(view.matched(seeds[s], iou), view.matched(baseline[s], iou)) for s in common]
            pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
            if not pairs:
                continue
            seed = seed_from("bootstrap", *group, adapter, iou, metric)
            res = paired_bootstrap_seeds(view.gt_of(group[2]), pairs, iou, metric=metric, resamples=resamples,
                                         seed=seed)
            rows.append({**dict(zip(GROUP, group)), "adapter": adapter, "iou_type": iou, "metric": metric,
                         "seeds": len(pairs), "delta": res["delta"], "lo": res["lo"], "hi": res["hi"],
                         "resamples": resamples, "significant": res["significant"]})
    return pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)


def references(config: dict[str, Any]) -> dict[str, str]:
    """Segmenter label -> the plain segmenter it is a training-side baseline of (empty: no baselines).

    A fine-tuned entry (``init: {segmenter: X}``) is compared with X; an entry trained from scratch on an
    augmented or adapted split with the first plain entry of the same plugin and profile."""
    segs = config.get("segmenters", [])
    plain = [s for s in segs if not s.get("train_on") and not isinstance(s.get("init"), dict)]
    out = {}
    for s in segs:
        if isinstance(s.get("init"), dict):
            out[s["label"]] = s["init"]["segmenter"]
        elif s.get("train_on"):
            same = [p for p in plain if (p["name"], p.get("profile")) == (s["name"], s.get("profile"))]
            if same:
                out[s["label"]] = same[0]["label"]
    if out:
        out.update({s["label"]: s["label"] for s in plain})
    return out


def baselines(view: RunView, resamples: int = 1000, iou_types=("bbox", "segm"), metric: str = "AP",
              progress: bool = True) -> pd.DataFrame:
    """Every (segmenter, adapter) row of a run with training-side baselines vs its plain segmenter with
    ``identity``, on the same images and seeds: is pre-processing or a training-side change the better fix?"""
    from tqdm import tqdm

    from harness.evaluation.bootstrap import paired_bootstrap_seeds

    refs = references(view.meta.get("config", {}))
    if not refs:
        return pd.DataFrame(columns=BASELINE_COLUMNS)
    cells: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for c in view.cells:
        cells[(c["segmenter"], c["profile"], c["adapter"], c["degradation"], c["severity"])][int(c["seed"])] = c
    profile_of = {c["segmenter"]: c["profile"] for c in view.cells}
    rows = []
    for (seg, prof, ad, deg, sev), seeds in tqdm(sorted(cells.items(), key=str), desc="baselines", unit="row",
                                                 disable=not progress):
        ref = refs.get(seg)
        if ref is None or (seg == ref and ad == IDENTITY):
            continue
        base = cells.get((ref, profile_of.get(ref), IDENTITY, deg, sev), {})
        common = sorted(set(seeds) & set(base))
        for iou in iou_types:
            pairs = [(view.matched(seeds[s], iou), view.matched(base[s], iou)) for s in common]
            pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
            if not pairs:
                continue
            res = paired_bootstrap_seeds(view.gt_of(deg), pairs, iou, metric=metric, resamples=resamples,
                                         seed=seed_from("baseline", seg, ad, ref, deg, sev, iou, metric))
            rows.append({"segmenter": seg, "profile": prof, "adapter": ad, "reference_segmenter": ref,
                         "reference_adapter": IDENTITY, "degradation": deg, "severity": sev, "iou_type": iou,
                         "metric": metric, "seeds": len(pairs), "delta": res["delta"], "lo": res["lo"],
                         "hi": res["hi"], "resamples": resamples, "significant": res["significant"],
                         "value": res["ap_a"], "reference": res["ap_b"]})
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


#: the least lower bound of the (oracle-T − source-only) interval, in AP (0-1), for a gap closed to be shown
MIN_SPAN = 0.01


def gap_closed(gt: dict, triples: list[tuple[Any, Any, Any]], iou_type: str, metric: str = "AP",
               resamples: int = 1000, seed: int = 0, level: float = 0.95, min_span: float = MIN_SPAN) -> dict:
    """Gap closed = (method − source-only) / (oracle-T − source-only) in %, from one (method, source-only,
    oracle-T) triple of predictions or `Matched` per training seed. Every quantity is the mean over seeds
    under the same image resamples, so the ratio's interval comes from the very resamples that give the
    oracle span's; the ratio is ``shown`` only where the span's lower bound is at least ``min_span``."""
    from harness.evaluation.bootstrap import Matched, ap_from_weights_many, match, resample_counts

    sets = [x if isinstance(x, Matched) else match(gt, x, iou_type) for triple in triples for x in triple]
    n = sets[0].n_images
    counts = resample_counts(n, int(resamples), int(seed))
    ones = np.ones((1, n))
    full = np.array([ap_from_weights_many(m, ones, metric)[0] for m in sets]).reshape(-1, 3).mean(axis=0)
    drawn = np.mean([[ap_from_weights_many(m, counts, metric) for m in sets[i:i + 3]]
                     for i in range(0, len(sets), 3)], axis=0)
    gain_r, span_r = drawn[0] - drawn[1], drawn[2] - drawn[1]
    q = [50 * (1 - level), 50 * (1 + level)]

    def interval(values: np.ndarray) -> tuple[float, float]:
        finite = values[np.isfinite(values)]
        return tuple(float(v) for v in np.percentile(finite, q)) if finite.size else (float("nan"),) * 2

    value, reference, oracle = (float(v) for v in full)
    gain, span = value - reference, oracle - reference
    span_lo, span_hi = interval(span_r)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = interval(np.where(span_r != 0, 100 * gain_r / span_r, np.nan))
    shown = bool(np.isfinite(span_lo) and span_lo >= min_span)
    reason = "" if shown else (f"oracle-T − source-only interval starts at {100 * span_lo:+.1f} AP, below "
                               f"{100 * min_span:g}" if np.isfinite(span_lo) else "no oracle-T − source-only interval")
    return {"value": value, "reference": reference, "oracle_value": oracle, "gain": gain, "span": span,
            "span_lo": span_lo, "span_hi": span_hi, "gap_closed": 100 * gain / span if span else float("nan"),
            "lo": lo, "hi": hi, "resamples": int(resamples), "seeds": len(triples), "shown": shown,
            "reason": reason}


def gap_rows(config: dict[str, Any]) -> list[dict[str, Any]]:
    """What the gap-closed table compares, one entry per oracle-T: its target, the model it measures the way
    from (``base``: the plain segmenter it was fine-tuned from or trained like), and its ``control``.

    Pre-processing rows (``base`` with an adapter) are read against ``base`` + identity; training-side rows
    (entries fine-tuned from or trained like ``base``, oracle-ST included) against the control fine-tune +
    identity when they are fine-tunes, against ``base`` + identity when trained from scratch."""
    from harness.config import oracle_of

    segs = config.get("segmenters", [])
    plain = [s for s in segs if not s.get("train_on") and not isinstance(s.get("init"), dict)]

    def base(s: dict) -> str | None:
        if isinstance(s.get("init"), dict):
            return s["init"]["segmenter"]
        if not s.get("train_on"):
            return s["label"]
        same = [p for p in plain if (p["name"], p.get("profile")) == (s["name"], s.get("profile"))]
        return same[0]["label"] if same else None

    out = []
    for s in segs:
        oracle = oracle_of(s)
        if oracle is None or oracle[0] != "target" or base(s) is None:
            continue
        control = (s.get("train_on") or {}).get("control")
        others = [o for o in segs if o["label"] not in (s["label"], control, base(s)) and base(o) == base(s)]
        out.append({"oracle": s["label"], "target": oracle[1], "base": base(s), "control": control,
                    "training_side": [(o["label"], isinstance(o.get("init"), dict)) for o in others]})
    return out


def gaps(view: RunView, resamples: int = 1000, iou_types=("bbox", "segm"), metric: str = "AP",
         progress: bool = True) -> pd.DataFrame:
    """``gap.csv``: the gap closed of every method row in every setting of a target that has an oracle-T."""
    from tqdm import tqdm

    plans = gap_rows(view.meta.get("config", {}))
    if not plans:
        return pd.DataFrame(columns=GAP_COLUMNS)
    cells: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for c in view.cells:
        cells[(c["segmenter"], c["adapter"], c["degradation"], c["severity"])][int(c["seed"])] = c
    profile_of = {c["segmenter"]: c["profile"] for c in view.cells}
    jobs = []
    for plan in plans:
        settings = sorted({(deg, sev) for (_, _, deg, sev) in cells if deg == plan["target"]}, key=str)
        for deg, sev in settings:
            for (seg, ad, d, sv) in sorted(cells, key=str):
                if (d, sv) != (deg, sev):
                    continue
                if seg == plan["base"] and ad != IDENTITY:
                    ref = plan["base"]
                else:
                    side = dict(plan["training_side"])
                    if seg not in side:
                        continue
                    ref = plan["control"] if side[seg] else plan["base"]
                    if ref is None:
                        continue  # a fine-tune without a control: nothing fair to measure it from
                jobs.append((plan, seg, ad, ref, deg, sev))
    rows = []
    for plan, seg, ad, ref, deg, sev in tqdm(jobs, desc="gap closed", unit="row", disable=not progress):
        m, b, o = (cells.get((s, a, deg, sev), {}) for s, a in ((seg, ad), (ref, IDENTITY), (plan["oracle"], IDENTITY)))
        common = sorted(set(m) & set(b) & set(o))
        for iou in iou_types:
            triples = [(view.matched(m[s], iou), view.matched(b[s], iou), view.matched(o[s], iou)) for s in common]
            triples = [t for t in triples if all(x is not None for x in t)]
            if not triples:
                continue
            res = gap_closed(view.gt_of(deg), triples, iou, metric, resamples,
                             seed_from("gap", seg, ad, ref, plan["oracle"], deg, sev, iou, metric))
            rows.append({"segmenter": seg, "profile": profile_of.get(seg), "adapter": ad, "degradation": deg,
                         "severity": sev, "iou_type": iou, "metric": metric, "oracle": plan["oracle"],
                         "reference_segmenter": ref, "reference_adapter": IDENTITY, **res})
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def _headline(cells: list[dict]) -> tuple[str, float] | None:
    """The setting the qualitative panels show: domain_b s3 if run (the seed report's domain B), else the
    degraded setting with the most adapters, then the mid severity."""
    settings: dict[tuple, set] = defaultdict(set)
    for c in cells:
        if c["degradation"] != "none":
            settings[(c["degradation"], c["severity"])].add(c["adapter"])
    if not settings:
        return None
    if ("domain_b", 3) in settings:
        return ("domain_b", 3)
    return max(settings, key=lambda s: (len(settings[s]), -abs(s[1] - 3), s[0]))


def _images_of(view: RunView, cell: dict) -> tuple[Path | None, Path | None]:
    degraded = view.stage(cell, "degrade") if cell["degradation"] != "none" else view.dataset
    return degraded, view.stage(cell, "adapt")


def _panel_row(view: RunView, cell: dict, image: dict, title: str) -> dict | None:
    from harness.imageio import read_image

    degraded_dir, adapted_dir = _images_of(view, cell)
    preds = view.predictions(cell)
    if degraded_dir is None or adapted_dir is None or preds is None:
        return None
    return {"title": title, "degraded": read_image(degraded_dir / image["file_name"]),
            "adapted": read_image(adapted_dir / image["file_name"]),
            "clean": read_image(view.dataset / image["file_name"]),
            "predictions": [p for p in preds if p["image_id"] == image["id"]],
            "ground_truth": [a for a in view.gt["annotations"] if a["image_id"] == image["id"]]}


def _examples(view: RunView, n: int) -> list[dict]:
    """``n`` images with defects, chosen by a hash of their names (stable across runs of the same data)."""
    with_gt = {a["image_id"] for a in view.gt["annotations"]}
    images = [im for im in view.gt["images"] if im["id"] in with_gt]
    return sorted(images, key=lambda im: seed_from("example", im["file_name"]))[:n]


def plots(view: RunView, results: pd.DataFrame, out: Path, examples: int = 4) -> list[dict[str, str]]:
    """Every figure the report makes, as manifest entries {file (relative to ``out``), title}."""
    from harness.evaluation.bootstrap import per_image_delta
    from harness.report import plots as P

    made: list[dict[str, str]] = []

    def add(path: Path, title: str) -> None:
        made.append({"file": str(path.relative_to(out)), "title": title})

    folder = out / "plots"
    degraded = results[results["degradation"] != "none"]
    for deg in sorted(degraded["degradation"].unique()):
        sevs = sorted(degraded.loc[degraded["degradation"] == deg, "severity"].unique())
        sev = 3 if 3 in sevs else sevs[len(sevs) // 2]
        add(P.adaptation_bars(results, (deg, sev), folder / f"bars-{_slug(deg)}-s{int(sev)}.png"),
            f"With and without adaptation, {deg} s{int(sev)}")
    if degraded.groupby("degradation")["severity"].nunique().gt(1).any():
        for iou in ("bbox", "segm"):
            add(P.severity_curves(results, folder / f"severity-{iou}.png", iou_type=iou),
                f"{iou} AP vs severity, per adapter")
    if (results["iou_type"] == "fidelity").any() and results["adapter"].nunique() > 1:
        add(P.fidelity_vs_gain(results, folder / "psnr-vs-gain.png"), "Adapter PSNR vs segm AP gain over identity")
    for path, name, title in loss_logs(view):
        add(P.loss_curves(path, folder / name, title), title)

    headline = _headline(view.source_cells)
    if headline is None or examples <= 0:
        return made
    seed0 = min(int(c["seed"]) for c in view.source_cells)
    at = [c for c in view.source_cells if (c["degradation"], c["severity"]) == headline and int(c["seed"]) == seed0]
    at.sort(key=lambda c: (c["segmenter"], c["adapter"] != IDENTITY, c["adapter"]))
    label = f"{headline[0]} s{int(headline[1])}"
    for image in _examples(view, examples):
        rows = [r for c in at if (r := _panel_row(view, c, image, f"{c['segmenter']}\n{c['adapter']}"))]
        if rows:
            stem = _slug(Path(image["file_name"]).stem)
            add(P.panels(rows, folder / f"examples-{stem}.png", view.class_names,
                         title=f"{image['file_name']}, {label}"), f"Example {image['file_name']}, {label}")
    baselines = {c["segmenter"]: c for c in at if c["adapter"] == IDENTITY}
    for cell in at:
        base = baselines.get(cell["segmenter"])
        if cell["adapter"] == IDENTITY or base is None:
            continue
        preds_a, preds_b = view.predictions(cell), view.predictions(base)
        if preds_a is None or preds_b is None:
            continue
        scores = [(a - b, image_id, a, b) for image_id, a, b in per_image_delta(view.gt, preds_a, preds_b, "segm")
                  if a == a and b == b and a < b]
        worst = sorted(scores)[:examples]
        images = {im["id"]: im for im in view.gt["images"]}
        rows = [r for d, image_id, a, b in worst
                if (r := _panel_row(view, cell, images[image_id],
                                    f"{images[image_id]['file_name'].rsplit('/', 1)[-1]}\n"
                                    f"segm AP {100 * b:.0f} -> {100 * a:.0f}"))]
        if rows:
            name = f"failures-{_slug(cell['segmenter'])}-{_slug(cell['adapter'])}.png"
            add(P.failure_cases(rows, folder / name, view.class_names,
                                title=f"Where {cell['adapter']} lost most vs identity ({cell['segmenter']}, {label})"),
                f"Failure cases of {cell['adapter']} ({cell['segmenter']}, {label})")
    return made


def loss_logs(view: RunView) -> list[tuple[Any, str, str]]:
    """(loss log, plot file name, title) of every fit and training in run.json ``budgets`` whose stage folder is
    in the cache and whose plugin logged its losses (``Plugin.loss_log``: the fits' losses.csv, the segmenters'
    own training logs), once per stage however many rows it serves."""
    from harness.registry import default_registry

    registry = default_registry()
    rows: dict[tuple[str, str], list[dict]] = {}
    for b in view.meta.get("budgets") or []:
        if b.get("kind") in ("fit", "train"):
            rows.setdefault((b["kind"], b["stage"]), []).append(b)
    out = []
    for (kind, key), served in rows.items():
        folder = view.store.path(kind, key)
        if not view.store.done(kind, key):
            continue
        plugin_kind = "adapter" if kind == "fit" else "segmenter"
        plugin = json.loads((folder / "stage.json").read_text())["stage"]["spec"].get(plugin_kind) or {}
        try:
            cls = registry.get(plugin.get("kind", plugin_kind), plugin.get("name"))
        except HarnessError:
            continue  # a plugin no longer installed: its table row stays, its curve cannot be read
        log = cls.loss_log(folder)
        if log is None or log.empty:
            continue
        first = served[0]
        if kind == "fit":
            what = ", ".join(dict.fromkeys(str(b.get("adapter")) for b in served))
        else:
            what = ", ".join(dict.fromkeys(f"{b.get('segmenter')} ({b.get('profile')})" for b in served))
        out.append((log, f"losses-{_slug(what)}-{key.split('-', 1)[-1][:10]}.png",
                    f"Losses of {what} {'fitted' if kind == 'fit' else 'trained'} on {first.get('fitted_on')}, "
                    f"seed {first.get('seed')}"))
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in str(text))


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, leaderboard: str | Path | None = None,
                 resamples: int = 1000, examples: int = 4, cache: str | Path | None = None,
                 progress: bool = True) -> Path:
    """Significance and plots for each run folder, then one leaderboard over all of them; returns its path."""
    from harness.leaderboard import tables

    if resamples < 1:
        raise HarnessError(f"--resamples: expected a positive integer, got {resamples}")
    dirs = [Path(d) for d in run_dirs]
    out = Path(out) if out else dirs[0]
    leaderboard = Path(leaderboard) if leaderboard else out / "leaderboard.md"
    for i, run_dir in enumerate(dirs):
        view = RunView(run_dir, cache)
        sig = significance(view, resamples=resamples, progress=progress)
        target = out if len(dirs) == 1 else out / _slug(run_dir.name)
        target.mkdir(parents=True, exist_ok=True)
        _write_csv(sig, run_dir / "significance.csv")
        base = baselines(view, resamples=resamples, progress=progress)
        if base.empty:
            (run_dir / "baselines.csv").unlink(missing_ok=True)
        else:
            _write_csv(base, run_dir / "baselines.csv")
        gap = gaps(view, resamples=resamples, progress=progress)
        if gap.empty:
            (run_dir / "gap.csv").unlink(missing_ok=True)
        else:
            _write_csv(gap, run_dir / "gap.csv")
        results = tables.load_run(run_dir).results
        chosen = selection(results, view.meta.get("config", {}))
        if chosen.empty:
            (run_dir / SELECTION).unlink(missing_ok=True)
        else:
            _write_csv(chosen, run_dir / SELECTION)
        made = plots(view, results, target, examples=examples)
        manifest = [{"file": os.path.relpath(target / m["file"], run_dir), "title": m["title"]} for m in made]
        write_json_atomic(run_dir / "plots" / "manifest.json", manifest, indent=1)
        for note in dict.fromkeys(view.notes):
            print(f"harness: note: {note}")
    tables.write(dirs, leaderboard)
    return leaderboard


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    df.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
    os.replace(tmp, path)
