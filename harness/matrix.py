"""Expands a matrix config into stages and cells, runs the missing stages, writes the run folder.

Run folder (named by the config's content hash unless ``--out`` is given)::

    run.json      provenance: config + hash, dataset fingerprint, package versions, counts, and what each
                  row used of each target (``methods``: its labels, true degradation, unlabelled images)
    config.yaml   the config as given
    cells.jsonl   one line per cell: its labels, status and error
    results.csv   tidy metric rows of every finished cell (what `harness leaderboard` reads)

Finished stages live in the shared cache, so rerunning, extending or resuming a run recomputes only
what is missing; the run folder is rewritten (atomically) after every cell.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from harness import atomic
from harness.cache import Store, holding_lock
from harness.config import Entry, MatrixConfig, oracle_of, self_training_of
from harness.errors import HarnessError
from harness.hashing import stable_hash
from harness.methods import methods as methods_of
from harness.stages import KINDS as STAGE_KINDS
from harness.stages import Context, Stage

RESULT_COLUMNS = ["cell", "segmenter", "profile", "adapter", "degradation", "severity", "seed",
                  "iou_type", "metric", "category", "value", "note"]
CELL_COLUMNS = ["segmenter", "profile", "adapter", "degradation", "severity", "seed"]


@dataclass
class Cell:
    labels: dict[str, Any]
    final: str  # key of the evaluate stage
    extra: list[str] = field(default_factory=list)  # further stages whose metrics.json rows belong to the cell
    stages: dict[str, str | None] = field(default_factory=dict)  # its train/degrade/adapt/predict keys (report)
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or stable_hash({"labels": self.labels, "final": self.final}, 12)


@dataclass
class Plan:
    stages: dict[str, Stage] = field(default_factory=dict)  # insertion order is a topological order
    cells: list[Cell] = field(default_factory=list)
    context: Context | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    #: real targets by label: what the provenance says of each (run.json ``targets``)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: kind -> plugin name -> version of every plugin the config names (run.json ``plugins``: which defaults and
    #: which tuning a run used, as the leaderboard's provenance says)
    plugins: dict[str, dict[str, str]] = field(default_factory=dict)
    #: train/fit stage key -> the labels of each table row it belongs to (run.json ``budgets``)
    trained: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: what each row used of each target (run.json ``methods``, see harness.methods)
    methods: list[dict[str, Any]] = field(default_factory=list)

    def add(self, stage: Stage) -> str:
        self.stages.setdefault(stage.key, stage)
        return stage.key

    def label(self, key: str, **labels: Any) -> str:
        """Record that train or fit stage ``key`` serves the row ``labels`` (segmenter, adapter, fitted on...)."""
        rows = self.trained.setdefault(key, [])
        if labels not in rows:
            rows.append(labels)
        return key

    def upstream(self, *keys: str) -> list[str]:
        """All stages ``keys`` depend on, themselves included, in dependency order."""
        seen: list[str] = []

        def walk(k: str) -> None:
            for dep in self.stages[k].inputs.values():
                walk(dep)
            if k not in seen:
                seen.append(k)

        for key in keys:
            walk(key)
        return seen


def _identity(registry, entry: Entry) -> dict[str, Any]:
    return registry.create(entry.kind, entry.name, entry.params).identity()


def plan(cfg: MatrixConfig, registry, store: Store, progress: bool = True) -> Plan:
    p = Plan(context=Context(cache=str(store.root), progress=progress))
    if isinstance(cfg.dataset, dict):
        data = p.add(Stage("dataset", {"generator": "synthetic", "version": 1, "params": cfg.dataset["params"]}))
        p.dataset = {"name": "synthetic", "path": str(store.path("dataset", data)), "fingerprint": data}
    else:
        from harness.data.coco import dataset_fingerprint

        folder = Path(cfg.dataset)
        if not folder.is_dir():
            raise HarnessError(f"{cfg.path}: dataset: folder {folder} not found (run `harness data prepare` first)")
        fingerprint = dataset_fingerprint(folder)
        data = p.add(Stage("source", {"fingerprint": fingerprint}))
        p.context.sources[data] = str(folder.resolve())
        p.dataset = {"name": _dataset_name(folder), "path": str(folder.resolve()), "fingerprint": fingerprint}

    view = {"split": cfg.split, "limit": cfg.limit}
    if cfg.sample:
        view["sample"] = cfg.sample
    p.plugins = _versions_of(cfg, registry)
    p.methods = methods_of(cfg, registry)
    deg_ids = {d.label: _identity(registry, d) for d in cfg.degradations if d.name != "none"}
    adapters = {a.label: registry.create(a.kind, a.name, a.params) for a in cfg.adapters}
    ad_ids = {label: plugin.identity() for label, plugin in adapters.items()}
    ad_runtime = {label: {"adapter": plugin.runtime()} for label, plugin in adapters.items()}
    ad_fit = {label: plugin.fit_data for label, plugin in adapters.items() if plugin.trainable}
    real = [_real_target(p, cfg, t, data) for t in cfg.targets or []]
    models: dict[tuple[str, int], str] = {}
    # a segmenter that starts from another's model is planned after it
    for seg in sorted(cfg.segmenters, key=lambda e: isinstance(e.init, dict)):
        segmenter = registry.create(seg.kind, seg.name, seg.params)
        seg_id = segmenter.identity()
        seg_runtime = {"segmenter": segmenter.runtime()}
        model_fp = segmenter.model_fingerprint(seg.profile)
        features = _features(cfg, segmenter, p.context, data)
        train_data = _trainset(p, registry, seg, data, cfg, real) if seg.train_on else data
        for seed in cfg.seeds:
            # model_seed: one model, trained at that seed, serves every seed's cells (their fits and
            # fine-tunes still draw from the cell's seed)
            train_seed = seed if seg.model_seed is None else seg.model_seed
            train_inputs = {"data": train_data}
            if isinstance(seg.init, dict):
                train_inputs["init"] = models[(seg.init["segmenter"], seed)]
            elif seg.init:
                train_inputs["init"] = _init_source(p, seg.init, cfg.path)
            model = models[(seg.label, seed)] = p.add(Stage(
                "train", {"segmenter": seg_id, "profile": seg.profile, "seed": train_seed, "model": model_fp,
                          **_self_training_spec(seg)}, train_inputs,
                runtime=seg_runtime))
            p.label(model, segmenter=seg.label, profile=seg.profile, adapter=None, fitted_on=_trained_on(seg),
                    seed=train_seed)
            reference = None
            if features:
                reference = p.add(Stage("predict", {"segmenter": seg_id, "split": "val", "limit": cfg.limit,
                                                    **features}, {"data": data, "model": model, "images": data},
                                        runtime=seg_runtime))
            for deg in cfg.degradations:
                for severity in deg.severities:
                    if deg.name == "none":
                        images = data
                    else:
                        images = p.add(Stage("degrade", {"degradation": deg_ids[deg.label], "severity": severity,
                                                         "data_seed": cfg.data_seed, **view},
                                             {"data": data, "images": data}))
                    for ad in cfg.adapters:
                        if seg.only_adapters is not None and ad.label not in seg.only_adapters:
                            continue
                        adapt_inputs = {"data": data, "images": images}
                        if ad.label in ad_fit:
                            adapt_inputs["fit"] = _fit_stage(p, registry, ad, ad_fit[ad.label], data, cfg, seed,
                                                             deg_ids.get(deg.label), severity,
                                                             task=_task(registry, cfg, ad, seg, model, seg_id,
                                                                        seg_runtime))
                            p.label(adapt_inputs["fit"], **_fit_owner(p, adapt_inputs["fit"], seg), adapter=ad.label,
                                    fitted_on=_fitted_on(p.stages[adapt_inputs["fit"]].spec, ad_fit[ad.label]),
                                    seed=seed)
                        adapted = p.add(Stage("adapt", {"adapter": ad_ids[ad.label], **view}, adapt_inputs,
                                              runtime=ad_runtime[ad.label]))
                        preds = p.add(Stage("predict", {"segmenter": seg_id, **view, **features},
                                            {"data": data, "model": model, "images": adapted}, runtime=seg_runtime))
                        final = p.add(Stage("evaluate", dict(view), {"data": data, "predictions": preds}))
                        fidelity = p.add(Stage("fidelity", dict(view), {"data": data, "images": adapted}))
                        p.cells.append(Cell({"segmenter": seg.label, "profile": seg.profile, "adapter": ad.label,
                                             "degradation": deg.label if deg.name != "none" else "none",
                                             "severity": severity, "seed": seed}, final,
                                            [fidelity, *_gap(p, preds, reference)],
                                            stages={"train": model, "degrade": images if images != data else None,
                                                    "adapt": adapted, "predict": preds}))
            for target in real:
                _plan_real_cells(p, cfg, registry, target, seg, seg_id, seg_runtime, model, seed, data, ad_ids,
                                 ad_runtime, ad_fit, features, reference)
    return p


def _versions_of(cfg: MatrixConfig, registry) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    entries = [*cfg.segmenters, *cfg.adapters, *cfg.degradations]
    entries += [Entry("adapter", a["name"], a["name"]) for s in cfg.segmenters
                for a in [(s.train_on or {}).get("adapter")] if a]
    entries += [Entry("degradation", d["name"], d["name"]) for s in cfg.segmenters
                for d in (s.train_on or {}).get("augment", [])]
    for e in entries:
        if e.kind == "degradation" and e.name == "none":
            continue
        out.setdefault(e.kind, {})[e.name] = str(registry.get(e.kind, e.name).version)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def _features(cfg: MatrixConfig, segmenter, ctx: Context, data: str) -> dict[str, str]:
    """The predict spec's ``features`` entry when cells get a feature gap: the config asks for it, the segmenter
    can capture features while predicting, and the source has a val split (the reference; test would make a
    clean cell's gap 0 by construction). Empty otherwise, which leaves every predict key as it was."""
    from harness.data.coco import present_splits
    from harness.evaluation.featuregap import POOLING

    if not cfg.feature_gap or not segmenter.captures_features:
        return {}
    if isinstance(cfg.dataset, dict):
        has_val = int(cfg.dataset["params"].get("n_val", 20)) >= 2
    else:
        has_val = "val" in present_splits(ctx.sources[data])
    return {"features": POOLING} if has_val else {}


def _gap(p: Plan, preds: str, reference: str | None) -> list[str]:
    """The cell's feature-gap stage (none without a reference)."""
    if reference is None:
        return []
    from harness.evaluation.featuregap import PCA_DIMS, RESAMPLES

    return [p.add(Stage("featuregap", {"resamples": RESAMPLES, "pca_dims": PCA_DIMS},
                        {"features": preds, "reference": reference}))]


def _real_target(p: Plan, cfg: MatrixConfig, target, data: str) -> dict[str, Any]:
    """A real target's data (and pool) as source stages, checked before any work: its split exists, its classes
    are the source's (when the source is a folder; a generated one is checked when predictions are remapped),
    and its pool shares no image with the evaluated split."""
    from harness.data.coco import POOL, chosen, dataset_fingerprint, load_split
    from harness.data.content import pool_overlap
    from harness.stages import category_map

    where = f"{cfg.path}: targets: '{target.label}'"
    folder = Path(target.data)
    if not folder.is_dir():
        raise HarnessError(f"{where}: data folder {folder} not found (run `harness data prepare` first)")
    try:
        labelled = load_split(folder, target.split)
        if not isinstance(cfg.dataset, dict):
            category_map(Path(cfg.dataset), folder, target.split)
        fingerprint = dataset_fingerprint(folder)
    except HarnessError as exc:
        raise HarnessError(f"{where}: {exc}") from None
    key = p.add(Stage("source", {"fingerprint": fingerprint}))
    p.context.sources[key] = str(folder.resolve())
    view = {"split": target.split, "limit": cfg.limit}
    if cfg.sample:
        view["sample"] = cfg.sample
    info: dict[str, Any] = {
        "name": _dataset_name(folder), "path": str(folder.resolve()), "fingerprint": fingerprint,
        "split": target.split, "images": len(labelled["images"]),
        "evaluated": len(chosen(labelled["images"], cfg.limit, cfg.sample)), "pool": None}
    pool_key = None
    if target.pool is not None:
        pool = Path(target.pool)
        if not pool.is_dir():
            raise HarnessError(f"{where}: pool folder {pool} not found (run `harness data prepare images` first)")
        try:
            pool_images = len(load_split(pool, POOL)["images"])
            pool_fp = dataset_fingerprint(pool, (POOL,))
            overlap = pool_overlap(pool, folder, target.split)
        except HarnessError as exc:
            raise HarnessError(f"{where}: pool: {exc}") from None
        if overlap:
            shown = ", ".join(f"{a} = {b}" for a, b in overlap[:5])
            more = f" and {len(overlap) - 5} more" if len(overlap) > 5 else ""
            raise HarnessError(f"{where}: pool {pool} shares {len(overlap)} image(s) with the evaluated "
                               f"{target.split} split (same pixels): {shown}{more}")
        pool_key = p.add(Stage("source", {"fingerprint": pool_fp}))
        p.context.sources[pool_key] = str(pool.resolve())
        info["pool"] = {"path": str(pool.resolve()), "fingerprint": pool_fp, "images": pool_images}
    p.targets[target.label] = info
    return {"label": target.label, "key": key, "pool": pool_key, "view": view, "folder": folder}


def _plan_real_cells(p: Plan, cfg: MatrixConfig, registry, target: dict[str, Any], seg: Entry, seg_id, seg_runtime,
                     model: str, seed: int, data: str, ad_ids, ad_runtime, ad_fit, features: dict[str, str],
                     reference: str | None) -> None:
    """The cells of one segmenter and seed on a real target: its labelled images are adapted as they are (no
    degradation), predictions are remapped to its category ids by name, and no fidelity is planned (there
    is no clean original). Recorded as degradation = the target's label, severity 0."""
    tkey, view = target["key"], target["view"]
    for ad in cfg.adapters:
        if seg.only_adapters is not None and ad.label not in seg.only_adapters:
            continue
        adapt_inputs = {"data": tkey, "images": tkey}
        if ad.label in ad_fit:
            adapt_inputs["fit"] = _real_fit_stage(p, registry, ad, ad_fit[ad.label], data, cfg, seed, target,
                                                  task=_task(registry, cfg, ad, seg, model, seg_id, seg_runtime))
            fit = p.stages[adapt_inputs["fit"]]
            p.label(fit.key, **_fit_owner(p, fit.key, seg), adapter=ad.label, seed=seed,
                    fitted_on=f"{target['label']} pool" if "pool" in fit.inputs else _fitted_on(fit.spec,
                                                                                               ad_fit[ad.label]))
        adapted = p.add(Stage("adapt", {"adapter": ad_ids[ad.label], **view}, adapt_inputs,
                              runtime=ad_runtime[ad.label]))
        preds = p.add(Stage("predict", {"segmenter": seg_id, **view, **features},
                            {"data": tkey, "model": model, "images": adapted, "source": data}, runtime=seg_runtime))
        final = p.add(Stage("evaluate", dict(view), {"data": tkey, "predictions": preds}))
        p.cells.append(Cell({"segmenter": seg.label, "profile": seg.profile, "adapter": ad.label,
                             "degradation": target["label"], "severity": 0, "seed": seed}, final,
                            _gap(p, preds, reference),
                            stages={"train": model, "degrade": None, "adapt": adapted, "predict": preds}))


def _real_fit_stage(p: Plan, registry, ad: Entry, fit_data: str, data: str, cfg: MatrixConfig, seed: int,
                    target: dict[str, Any], task: tuple | None = None) -> str:
    """An adapter's fit for a real target: source-only and fixed-degradation fits as for any cell; an unpaired
    one on the source's ``fit_split`` images as A and the target's pool as B; a paired one cannot be fitted."""
    if fit_data == "source" or ad.fit_on is not None:
        return _fit_stage(p, registry, ad, fit_data, data, cfg, seed, None, 0, task=task)
    if fit_data == "paired":
        raise HarnessError(f"{cfg.path}: adapters: '{ad.label}' fits on paired images (clean and degraded copies "
                           f"of one image), which real target '{target['label']}' has none of; use it on synthetic "
                           "targets, or give it fit_on: {name: DEGRADATION, severity: N}")
    if target["pool"] is None:
        raise HarnessError(f"{cfg.path}: targets: '{target['label']}' has no pool, and adapter '{ad.label}' fits on "
                           "target images (B): give the target `pool: POOL_DIR` (`harness data prepare images`)")
    plugin = registry.create(ad.kind, ad.name, ad.params)
    spec = {"adapter": plugin.identity(), "split": cfg.fit_split, "seed": seed}
    return p.add(Stage("fit", spec, {"data": data, "pool": target["pool"]}, runtime={"adapter": plugin.runtime()}))


def _fit_stage(p: Plan, registry, ad: Entry, fit_data: str, data: str, cfg: MatrixConfig, seed: int,
               degradation: dict[str, Any] | None, severity: int, task: tuple | None = None) -> str:
    """A trainable adapter's fit: on A alone, on a fixed degradation (``fit_on``), or on the cell's own."""
    plugin = registry.create(ad.kind, ad.name, ad.params)
    spec = {"adapter": plugin.identity(), "split": cfg.fit_split, "data_seed": cfg.data_seed, "seed": seed}
    if ad.fit_on is not None:
        spec["degradation"] = registry.create("degradation", ad.fit_on["name"], ad.fit_on["params"]).identity()
        if "severities" in ad.fit_on:
            spec["severities"] = ad.fit_on["severities"]
        else:
            spec["severity"] = ad.fit_on["severity"]
    elif fit_data != "source":
        spec.update(degradation=degradation, severity=severity)
    if task is not None:  # through a trained segmenter: its train stage is an input, so a new model is a new fit
        model, spec["segmenter"], seg_runtime = task
        return p.add(Stage("fit", spec, {"data": data, "model": model},
                           runtime={"adapter": plugin.runtime(), **seg_runtime}))
    return p.add(Stage("fit", spec, {"data": data}, runtime={"adapter": plugin.runtime()}))


def _fit_owner(p: Plan, key: str, seg: Entry) -> dict[str, Any]:
    """The segmenter labels of a fit's budget row: the segmenter it was fitted through, else none."""
    if "model" in p.stages[key].inputs:
        return {"segmenter": seg.label, "profile": seg.profile}
    return {"segmenter": None, "profile": None}


def _task(registry, cfg: MatrixConfig, ad: Entry, seg: Entry, model: str, seg_id: dict[str, Any],
          seg_runtime: dict[str, Any]) -> tuple | None:
    """What a fit through the segmenter (``Adapter.needs_segmenter``) adds: (model train key, segmenter identity,
    segmenter runtime); None for other adapters. A segmenter without ``loss_fn`` is refused here, at plan time."""
    plugin = registry.create(ad.kind, ad.name, ad.params)
    if not getattr(plugin, "needs_segmenter", False):
        return None
    if not registry.get("segmenter", seg.name).has_loss_fn():
        raise HarnessError(f"{cfg.path}: adapters: '{ad.label}' fits through the segmenter's training loss, which "
                           f"segmenter '{seg.label}' ({seg.name}) does not provide (no loss_fn); pair it with a "
                           "segmenter that has one (mmdet-mask-rcnn, tv-mask-rcnn) via only_adapters, or set "
                           "task_weight: 0 (its control)")
    return model, seg_id, seg_runtime


def _fitted_on(spec: dict[str, Any], fit_data: str) -> str:
    """What a fit stage learnt from, in words: its degradation and severity (or mixed severities), how A and B
    were drawn from the training images, or the source alone."""
    if fit_data == "source" or not spec.get("degradation"):
        return f"{spec['split']} (source only)" if fit_data == "source" else f"{spec['split']} clean ({fit_data})"
    name = spec["degradation"]["name"]
    sevs = spec["severities"] if "severities" in spec else [spec["severity"]]
    setting = f"{name} s{sevs[0]}" if len(sevs) == 1 else f"{name} s{'/'.join(map(str, sevs))} mixed"
    return f"{setting} ({fit_data})"


def _trained_on(seg: Entry) -> str:
    """What a segmenter trained on, in words: the source's train split, or its training-side baseline."""
    oracle = oracle_of(seg)
    st = self_training_of(seg)
    if st is not None:
        what = (f"train half + self-training on {st['target']} (threshold {st['threshold']:g}, teacher share "
                f"{st['teacher_share']:g}; teacher exported)" if st["pseudo_labels"] else
                f"train half, strong augmentation + EMA teacher (no pseudo-labels; control of self-training on "
                f"{st['target']})")
    elif oracle is not None:
        what = f"target {oracle[1]} (train)" if oracle[0] == "target" else f"train + target {oracle[1]} (train)"
    else:
        parts = [f"+ {a['name']} s{'/'.join(map(str, a['severities']))}"
                 for a in (seg.train_on or {}).get("augment", [])]
        if (seg.train_on or {}).get("adapter"):
            parts.append(f"through {seg.train_on['adapter']['name']}")
        what = " ".join(["train", *parts])
    if isinstance(seg.init, dict):
        what += f", from {seg.init['segmenter']}"
    return what


def _trainset(p: Plan, registry, seg: Entry, data: str, cfg: MatrixConfig, real: list[dict[str, Any]]) -> str:
    """The training split a training-side baseline learns from: clean images plus degraded copies, and/or
    every image passed through an adapter. Its fit (if trainable) uses seed 0: the adapter is a fixed
    pre-processing step, not part of what the segmenter's seed varies. An oracle's: the target's labelled
    training images (with the clean ones for oracle-ST)."""
    if self_training_of(seg) is not None:
        return _self_training_set(p, registry, seg, data, cfg, real)
    spec: dict[str, Any] = {"split": "train", "data_seed": cfg.data_seed, "augment": [], "adapter": None}
    inputs = {"data": data}
    oracle = oracle_of(seg)
    if oracle is not None:
        spec["oracle"], target_key = _oracle_spec(registry, seg, oracle, cfg, real)
        if target_key is not None:
            inputs["target"] = target_key
    for deg in seg.train_on.get("augment", []):
        spec["augment"].append({"degradation": registry.create("degradation", deg["name"], deg["params"]).identity(),
                                "severities": deg["severities"]})
    ad = seg.train_on.get("adapter")
    if ad:
        entry = Entry("adapter", ad["name"], ad["name"], ad["params"], fit_on=ad["fit_on"])
        plugin = registry.create("adapter", ad["name"], ad["params"])
        spec["adapter"] = plugin.identity()
        if getattr(plugin, "needs_segmenter", False):
            raise HarnessError(f"{cfg.path}: segmenters: '{seg.label}' train_on adapter '{ad['name']}' fits through "
                               "a trained segmenter, which a training set made before training cannot have")
        if plugin.trainable:
            inputs["fit"] = _fit_stage(p, registry, entry, plugin.fit_data, data, cfg, 0, None, 0)
            p.label(inputs["fit"], segmenter=seg.label, profile=seg.profile, adapter=ad["name"], seed=0,
                    fitted_on=_fitted_on(p.stages[inputs["fit"]].spec, plugin.fit_data))
    return p.add(Stage("trainset", spec, inputs, runtime={"adapter": plugin.runtime()} if ad else {}))


def _self_training_spec(seg: Entry) -> dict[str, Any]:
    """The train spec's ``self_training`` field (empty for every other entry, whose keys stay as they were):
    the options that change how the model learns from the self-training trainset (a control without
    pseudo-labels leaves out the pseudo-label ones)."""
    st = self_training_of(seg)
    if st is None:
        return {}
    unused = ("target", "threshold", "weight") if not st["pseudo_labels"] else ("target",)
    return {"self_training": {k: v for k, v in st.items() if k not in unused}}


def _self_training_set(p: Plan, registry, seg: Entry, data: str, cfg: MatrixConfig, real: list[dict[str, Any]]
                       ) -> str:
    """A self-training entry's trainset: labelled source images (``train.json``) and unlabelled target images
    (``unlabelled.json``). A synthetic target's are degraded copies of one half of the train split (seeded split,
    ``harness.stages.fit_sets`` "unpaired"), severity drawn per image, and the labelled source images are the
    other half, so no pseudo-labelled image has its clean twin in the source batches; a real target's are its
    pool, beside the whole train split. Shared by the entry and its ``pseudo_labels: false`` control."""
    label = self_training_of(seg)["target"]
    spec: dict[str, Any] = {"split": "train", "data_seed": cfg.data_seed}
    inputs = {"data": data}
    deg = next((d for d in cfg.degradations if d.label == label and d.name != "none"), None)
    if deg is not None:
        spec["self_training"] = {"degradation": registry.create("degradation", deg.name, deg.params).identity(),
                                 "severities": deg.severities}
    else:
        target = next(t for t in real if t["label"] == label)
        if target["pool"] is None:
            raise HarnessError(f"{cfg.path}: segmenter '{seg.label}': train_on.self_training: real target "
                               f"'{label}' has no pool: give the target `pool: POOL_DIR` (`harness data prepare "
                               "images`), its unlabelled images")
        spec["self_training"] = {"pool": True}
        inputs["pool"] = target["pool"]
    return p.add(Stage("trainset", spec, inputs))


def _oracle_spec(registry, seg: Entry, oracle: tuple[str, str], cfg: MatrixConfig, real: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], str | None]:
    """What an oracle trains on, as (trainset ``oracle`` spec, the real target's source key or None): a synthetic
    target's degradation of the source training split (severity drawn per image, labels kept), or a real
    target's labelled train split; a target without labelled training images is an error."""
    from harness.data.coco import load_split, present_splits

    kind, label = oracle
    spec: dict[str, Any] = {"source": kind == "source_and_target"}
    deg = next((d for d in cfg.degradations if d.label == label), None)
    if deg is not None:
        spec.update(degradation=registry.create("degradation", deg.name, deg.params).identity(),
                    severities=deg.severities)
        return spec, None
    target = next(t for t in real if t["label"] == label)
    folder = target["folder"]
    labelled = "train" in present_splits(folder) and bool(load_split(folder, "train").get("annotations"))
    if not labelled:
        raise HarnessError(f"{cfg.path}: segmenter '{seg.label}': train_on.{kind}: target '{label}' has no labelled "
                           f"training images ({folder} has no annotated train split: prepared with --test-fraction 1, "
                           "or a pool only); an oracle needs them")
    if not isinstance(cfg.dataset, dict):
        from harness.stages import category_map

        try:
            category_map(Path(cfg.dataset), folder, "train")
        except HarnessError as exc:
            raise HarnessError(f"{cfg.path}: segmenter '{seg.label}': train_on.{kind}: {exc}") from None
    spec["split"] = "train"
    return spec, target["key"]


def _init_source(p: Plan, init: str, config_path: Path) -> str:
    """Initial weights enter keys by content (a local file's digest) or, for a URL, by the URL itself."""
    from harness.hashing import file_digest

    if "://" in init:
        key = p.add(Stage("source", {"url": init}))
        p.context.sources[key] = init
        return key
    path = Path(init).expanduser()
    if not path.is_file():
        raise HarnessError(f"{config_path}: segmenters: init checkpoint {path} not found")
    key = p.add(Stage("source", {"fingerprint": file_digest(path)}))
    p.context.sources[key] = str(path.resolve())
    return key


def _dataset_name(folder: Path) -> str:
    meta = folder / "dataset.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
            return str(info.get("name") or info.get("source", {}).get("kind") or folder.name)
        except (json.JSONDecodeError, AttributeError):
            pass
    return folder.name


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("harness", "torch", "torchvision", "mmdet", "mmcv", "mmengine", "pycocotools", "numpy", "opencv-python",
                 "opencv-python-headless"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def default_run_dir(cfg: MatrixConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{cfg.hash[:10]}"


@holding_lock
def run(cfg: MatrixConfig, registry, out: Path | None = None, store: Store | None = None, progress: bool = True,
        on_event: Callable[[str], None] | None = None, executor=None, device: str | None = None) -> dict[str, Any]:
    """Compute every missing stage on ``executor`` (default: in this process, cells in order); a failing stage
    fails only the cells that need it. The run folder is rewritten as each cell finishes."""
    from tqdm import tqdm

    store = store or Store()
    out = Path(out) if out else default_run_dir(cfg)
    p = plan(cfg, registry, store, progress)
    p.context.device = device
    out.mkdir(parents=True, exist_ok=True)
    say = on_event or (lambda msg: tqdm.write(msg))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    created = _first_created(out / "run.json", cfg.hash) or now
    if cfg.path.is_file() and cfg.path.resolve() != (out / "config.yaml").resolve():
        shutil.copyfile(cfg.path, out / "config.yaml")

    status: dict[str, dict[str, Any]] = {}
    cell_state = {c.id: {"status": "pending", "error": None} for c in p.cells}
    _write_run(out, cfg, p, cell_state, created, None)
    needs = {c.id: p.upstream(c.final, *c.extra) for c in p.cells}
    waiting_on: dict[str, list[Cell]] = {}
    for cell in p.cells:
        for key in needs[cell.id]:
            waiting_on.setdefault(key, []).append(cell)
    left = {c.id: set(needs[c.id]) for c in p.cells}
    bar = tqdm(total=len(p.cells), desc="cells", unit="cell", disable=not progress)

    def on_result(result: dict[str, Any]) -> None:
        status[result["key"]] = result
        if result["status"] == "failed":
            _log_failure(out, result)
        finished = []
        for cell in waiting_on.get(result["key"], []):
            left[cell.id].discard(result["key"])
            if not left[cell.id]:
                finished.append(cell)
        for cell in finished:
            error = _cell_error(p, needs[cell.id], status)
            cell_state[cell.id] = {"status": "failed" if error else "done", "error": error}
            if error:
                say(f"cell {cell.id} failed: {error}")
            bar.update(1)
        if finished:
            _write_run(out, cfg, p, cell_state, created, None)

    stages = [p.stages[k].to_dict() for k in p.upstream(*(k for c in p.cells for k in (c.final, *c.extra)))]
    if progress:
        todo = [s for s in stages if s["kind"] != "source" and not store.done(s["kind"], s["key"])]
        say(f"{len(p.cells)} cells, {len(todo)} of {len(stages)} stages to compute")
    (executor or _default_executor(registry)).run(stages, p.context.to_dict(), on_result)
    bar.close()
    finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    summary = _write_run(out, cfg, p, cell_state, created, finished)
    summary["computed"] = sum(1 for s in status.values() if s["status"] == "done")
    summary["seconds"] = sum(s["seconds"] for s in status.values())
    return summary


def _cell_error(p: Plan, keys: list[str], status: dict[str, dict[str, Any]]) -> str | None:
    """The first failed stage a cell needs, in dependency order; skipped stages only echo it."""
    for key in keys:
        result = status.get(key, {"status": "failed", "error": "never ran"})
        if result["status"] == "failed":
            kind = p.stages[key].kind
            return result["error"] if kind == "evaluate" else f"{kind} stage failed: {result['error']}"
    return None


def _default_executor(registry):
    return registry.create("executor", "local", {})


@holding_lock
def compute(cfg: MatrixConfig, registry, kinds: set[str], store: Store | None = None,
            progress: bool = True, executor=None, device: str | None = None) -> dict[str, Any]:
    """Compute only the stages of ``kinds`` (and what they need), e.g. every adapter fit on a GPU machine
    that shares or ships back the cache, before the full run elsewhere. Writes no run folder."""
    unknown = kinds - set(STAGE_KINDS)
    if unknown:
        raise HarnessError(f"--only: unknown stage kind '{sorted(unknown)[0]}' (known: {', '.join(STAGE_KINDS)})")
    store = store or Store()
    p = plan(cfg, registry, store, progress)
    p.context.device = device
    targets = [k for k, stage in p.stages.items() if stage.kind in kinds]
    results: list[dict[str, Any]] = []
    if targets:
        (executor or _default_executor(registry)).run([p.stages[k].to_dict() for k in p.upstream(*targets)],
                                                      p.context.to_dict(), results.append)
    for r in results:
        if r["status"] == "failed" and progress:
            print(f"stage {r['key']} failed: {r['error']}")
    return {"stages": len(results), "computed": sum(r["status"] == "done" for r in results),
            "failed": sum(r["status"] in ("failed", "skipped") for r in results),
            "seconds": sum(r["seconds"] for r in results)}


def _first_created(run_json: Path, config_hash: str) -> str | None:
    """A resumed or repeated run keeps the date its folder was first created for this config."""
    try:
        info = json.loads(run_json.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info.get("created") if info.get("config_hash") == config_hash else None


def _log_failure(out: Path, result: dict[str, Any]) -> None:
    if result.get("traceback"):
        (out / "errors").mkdir(exist_ok=True)
        (out / "errors" / f"{result['key']}.log").write_text(result["traceback"])


def _write_run(out: Path, cfg: MatrixConfig, p: Plan, cell_state: dict[str, dict], created: str,
               finished: str | None) -> dict[str, Any]:
    store = p.context.store()
    rows: list[dict[str, Any]] = []
    cells: list[dict[str, Any]] = []
    for cell in p.cells:
        state = cell_state[cell.id]
        cells.append({"cell": cell.id, **cell.labels, **state, "stages": cell.stages})
        if state["status"] == "done":
            for key in (cell.final, *cell.extra):
                metrics = json.loads((store.path(p.stages[key].kind, key) / "metrics.json").read_text())
                rows.extend({"cell": cell.id, **cell.labels, **r} for r in metrics)
    counts = {"total": len(p.cells), "done": sum(c["status"] == "done" for c in cells),
              "failed": sum(c["status"] == "failed" for c in cells)}
    run_info = {"name": cfg.name, "config_hash": cfg.hash, "config": cfg.normalised(), "created": created,
                "finished": finished, "versions": versions(), "dataset": p.dataset, "cells": counts,
                "cache": str(store.root), "stages": list(p.stages)}  # what `harness cache gc --keep` keeps
    if p.targets:
        run_info["targets"] = p.targets
    if p.plugins:
        run_info["plugins"] = p.plugins
    if p.methods:
        run_info["methods"] = p.methods
    budgets = _budgets(p, store)
    if budgets:
        run_info["budgets"] = budgets
    _atomic_text(out / "run.json", json.dumps(run_info, indent=1, default=str) + "\n")
    _atomic_text(out / "cells.jsonl", "".join(json.dumps(c, default=str) + "\n" for c in cells))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "value": "" if r.get("value") is None else repr(float(r["value"]))})
    _atomic_text(out / "results.csv", buf.getvalue())
    return run_info


def _budgets(p: Plan, store: Store) -> list[dict[str, Any]]:
    """One entry per finished train or fit stage and row it serves: its labels and its ``budget.json`` (a stage
    cached before budgets existed gives its seconds alone), so that the leaderboard needs no cache."""
    from harness.stages import read_budget

    out = []
    for key, rows in p.trained.items():
        kind = p.stages[key].kind
        if not store.done(kind, key):
            continue
        budget = read_budget(store.path(kind, key))
        if budget is None:
            continue
        out += [{"stage": key, "kind": kind, **labels, **budget} for labels in rows]
    return out


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = atomic.mkstemp(path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
