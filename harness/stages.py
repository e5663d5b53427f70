"""Stages: plain, serialisable units of work, and the function that runs one.

A stage is (kind, spec, inputs). Its key hashes the kind, the spec (plugin name, version and params,
profile, seed, split...) and the *keys* of its inputs, never paths, so the same work done from another
folder or machine lands on the same key. ``execute`` needs only a stage dict and a context dict, which
is what lets an executor run stages in another process or on a cluster node that sees the cache.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import Store
from harness.errors import HarnessError
from harness.hashing import seed_from, stable_hash

KINDS = ("source", "dataset", "trainset", "train", "fit", "degrade", "adapt", "predict", "evaluate", "fidelity",
         "featuregap")
#: stages that resume from checkpoints in their scratch folder after an interruption
RESUMABLE = ("train", "fit")
#: images handed to ``Adapter.adapt_batch`` at once: networks batch them, the rest loop
ADAPT_CHUNK = 16
#: left in every train and fit stage folder (an extra file: no key depends on it), see ``write_budget``
BUDGET_FILE = "budget.json"


@dataclass
class Stage:
    kind: str
    spec: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    key: str = ""
    #: runtime params per plugin field of ``spec`` (e.g. ``{"segmenter": {"checkpoint_interval": 2}}``): they
    #: reach the plugin when the stage runs but stay out of the key, as they change how, not what, it computes
    runtime: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown stage kind {self.kind!r}")
        if not self.key:
            self.key = f"{self.kind}-{stable_hash({'kind': self.kind, 'spec': self.spec, 'inputs': self.inputs})}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stage":
        return cls(**d)


@dataclass
class Context:
    """Where things are (not part of any key): the cache root and the folders of source datasets."""

    cache: str
    sources: dict[str, str] = field(default_factory=dict)
    progress: bool = True
    #: ``--device``: overrides the ``device`` param of every plugin that has one, without changing any key
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def store(self) -> Store:
        return Store(self.cache)

    def location(self, key: str) -> Path:
        if key in self.sources:
            return Path(self.sources[key])
        return self.store().path(key.split("-", 1)[0], key)


def execute(stage_dict: dict[str, Any], context_dict: dict[str, Any]) -> dict[str, Any]:
    """Run one stage unless its output exists; return {key, status, seconds, error}."""
    stage, ctx = Stage.from_dict(stage_dict), Context(**context_dict)
    store = ctx.store()
    if stage.kind == "source" or store.done(stage.kind, stage.key):
        return {"key": stage.key, "status": "cached", "seconds": 0.0, "error": None}
    start = time.perf_counter()
    try:
        with store.writing(stage.kind, stage.key, {"stage": stage.to_dict()},
                           keep_partial=stage.kind in RESUMABLE) as out:
            RUNNERS[stage.kind](stage, ctx, out)
            (out / "seconds.txt").write_text(f"{time.perf_counter() - start:.3f}\n")
    except HarnessError as exc:
        return {"key": stage.key, "status": "failed", "seconds": time.perf_counter() - start, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one failing cell must not stop the matrix
        return {"key": stage.key, "status": "failed", "seconds": time.perf_counter() - start,
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return {"key": stage.key, "status": "done", "seconds": time.perf_counter() - start, "error": None}


def skipped(stage_dict: dict[str, Any], cause: str) -> dict[str, Any]:
    """The result of a stage not run because its input ``cause`` failed (or was itself skipped)."""
    return {"key": stage_dict["key"], "status": "skipped", "seconds": 0.0, "cause": cause,
            "error": f"input {cause} failed"}


def blocked_by(stage_dict: dict[str, Any], results: dict[str, dict[str, Any]]) -> str | None:
    """The first input of ``stage_dict`` whose result is failed or skipped, if any."""
    for key in stage_dict["inputs"].values():
        if results.get(key, {}).get("status") in ("failed", "skipped"):
            return key
    return None


# -- one runner per stage kind ------------------------------------------------------------------
def _plugin(kind: str, identity: dict[str, Any], ctx: Context | None = None, runtime: dict[str, Any] | None = None):
    from harness.registry import default_registry

    registry = default_registry()
    cls = registry.get(kind, identity["name"])
    if str(cls.version) != str(identity["version"]):
        raise HarnessError(f"{kind} '{identity['name']}' is version {cls.version}, stage wants {identity['version']}")
    params = {**identity["params"], **(runtime or {})}
    if ctx is not None and ctx.device and "device" in cls.params:
        params["device"] = ctx.device
    return cls(**params)


def _records(ctx: Context, stage: Stage) -> list[dict[str, Any]]:
    from harness.data.coco import chosen, image_records

    return chosen(image_records(ctx.location(stage.inputs["data"]), stage.spec["split"]), stage.spec.get("limit"),
                  stage.spec.get("sample"))


def _generate(stage: Stage, ctx: Context, out: Path) -> None:
    from harness.data.synthetic import generate_synthetic

    generate_synthetic(out, progress=ctx.progress, **stage.spec["params"])


def _trainset(stage: Stage, ctx: Context, out: Path) -> None:
    """A training split for a training-side baseline (see ``harness.matrix._trainset``): ``train.json`` plus
    its images, the clean ones first, then one degraded copy per augmenting degradation (severity drawn per
    image), everything passed through the adapter if one is given. Copies keep their originals' annotations.
    An oracle's (spec ``oracle``) holds the target's training images instead, after the clean ones for
    oracle-ST: the source's degraded by a synthetic target (severity drawn per image, as augmentation does), or
    a real target's labelled train split with its categories renumbered to the source's by name."""
    from harness.data.coco import load_split, write_json_atomic
    from harness.degrade import degrade_image
    from harness.imageio import map_images

    spec = stage.spec
    if "self_training" in spec:
        return _self_training_trainset(stage, ctx, out)
    data = ctx.location(stage.inputs["data"])
    coco = load_split(data, spec["split"])
    oracle = spec.get("oracle")
    # (name, images folder, its COCO split, degradation plugin or None, severities)
    variants: list[tuple[str, Path, dict, Any, list[int]]] = []
    if oracle is None or oracle["source"]:
        variants.append(("clean", data, coco, None, [0]))
    if oracle is not None and "degradation" in oracle:
        variants.append((f"target-{oracle['degradation']['name']}", data, coco,
                         _plugin("degradation", oracle["degradation"]), oracle["severities"]))
    elif oracle is not None:
        target = ctx.location(stage.inputs["target"])
        ids = {t: s for s, t in category_map(data, target, oracle["split"]).items()}
        theirs = load_split(target, oracle["split"])
        theirs["annotations"] = [{**a, "category_id": ids[a["category_id"]]} for a in theirs["annotations"]]
        variants.append(("target", target, theirs, None, [0]))
    for i, aug in enumerate(spec["augment"]):
        variants.append((f"aug{i}-{aug['degradation']['name']}", data, coco, _plugin("degradation", aug["degradation"]),
                         aug["severities"]))
    adapter = None
    if spec["adapter"]:
        adapter = _plugin("adapter", spec["adapter"], ctx, stage.runtime.get("adapter"))
        adapter.load(ctx.location(stage.inputs["fit"]) if "fit" in stage.inputs else None)

    def transform(ims: list[np.ndarray], paths: list[Path], name: str, plugin, severities: list[int]) -> list:
        if plugin is not None:
            picks = [np.random.default_rng(seed_from("augment", p.stem, name, spec["data_seed"])) for p in paths]
            ims = [degrade_image(plugin, im, p.stem, int(pick.choice(severities)), spec["data_seed"])
                   for im, p, pick in zip(ims, paths, picks)]
        return adapter.adapt_batch(ims) if adapter else ims

    images, annotations, offset = [], [], 0
    for name, folder, split, plugin, severities in variants:
        by_image: dict[Any, list] = {}
        for ann in split["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        originals = sorted(split["images"], key=lambda im: im["id"])
        map_images([(folder / img["file_name"], out / f"images/{name}/{img['file_name']}") for img in originals],
                   lambda ims, paths, n=name, pl=plugin, sv=severities: transform(ims, paths, n, pl, sv),
                   f"trainset {name}", chunk=ADAPT_CHUNK, progress=ctx.progress)
        for img in originals:
            new_id = offset + img["id"]
            images.append({**img, "id": new_id, "file_name": f"images/{name}/{img['file_name']}"})
            annotations += [{**a, "image_id": new_id} for a in by_image.get(img["id"], [])]
        offset += max((im["id"] for im in originals), default=0) + 1
    for i, ann in enumerate(annotations, 1):
        ann["id"] = i
    write_json_atomic(out / f"{spec['split']}.json", {**coco, "images": images, "annotations": annotations})
    write_json_atomic(out / "trainset.json", {"variants": [v[0] for v in variants], "images": len(images),
                                              "adapter": spec["adapter"]["name"] if spec["adapter"] else None})


def _train(stage: Stage, ctx: Context, out: Path) -> None:
    spec = stage.spec
    plugin = _plugin("segmenter", spec["segmenter"], ctx, stage.runtime.get("segmenter"))
    init = None
    if "init" in stage.inputs:
        key = stage.inputs["init"]
        init = ctx.sources.get(key) or str(ctx.location(key) / plugin.model_file)
    start = time.perf_counter()
    if "self_training" in spec:
        if not hasattr(plugin, "self_train"):
            raise HarnessError(f"segmenter '{plugin.name}' does not implement self-training "
                               "(tv-mask-rcnn and mmdet-mask-rcnn do)")
        plugin.self_train(ctx.location(stage.inputs["data"]), out, spec["profile"], spec["seed"], init,
                          spec["self_training"])
    else:
        plugin.train(ctx.location(stage.inputs["data"]), out, spec["profile"], spec["seed"], init)
    write_budget(plugin, out, time.perf_counter() - start)


def _self_training_trainset(stage: Stage, ctx: Context, out: Path) -> None:
    """A self-training trainset (see ``harness.matrix._self_training_set``): ``train.json`` with the labelled
    source images under ``images/source/``, ``unlabelled.json`` with the target's under ``images/target/`` (no
    annotations). Synthetic target: the halves of ``fit_sets(..., "unpaired", data_seed)``, the second half
    degraded, severity drawn per image as augmentation draws it; real target: the whole split and the pool."""
    import shutil

    from harness.data.coco import POOL, image_records, load_split, write_json_atomic
    from harness.degrade import degrade_image
    from harness.imageio import map_images

    spec, st = stage.spec, stage.spec["self_training"]
    data = ctx.location(stage.inputs["data"])
    coco = load_split(data, spec["split"])
    records = image_records(data, spec["split"])
    if "pool" in st:
        labelled, pool = records, image_records(ctx.location(stage.inputs["pool"]), POOL)
        unlabelled = [(rec["path"], rec["file_name"], rec) for rec in pool]
    else:
        labelled, half = fit_sets(records, "unpaired", spec["data_seed"])
        unlabelled = [(rec["path"], rec["file_name"], rec) for rec in half]
    keep = {rec["id"] for rec in labelled}
    for rec in labelled:
        dest = out / "images" / "source" / rec["file_name"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rec["path"], dest)
    pairs = [(path, out / "images" / "target" / name) for path, name, _ in unlabelled]
    if "pool" in st:
        for src, dest in pairs:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
    else:
        plugin = _plugin("degradation", st["degradation"])
        name = f"self-training-{st['degradation']['name']}"

        def degrade(ims: list[np.ndarray], paths: list[Path]) -> list[np.ndarray]:
            picks = [np.random.default_rng(seed_from("augment", p.stem, name, spec["data_seed"])) for p in paths]
            return [degrade_image(plugin, im, p.stem, int(pick.choice(st["severities"])), spec["data_seed"])
                    for im, p, pick in zip(ims, paths, picks)]

        map_images(pairs, degrade, "trainset self-training target", chunk=ADAPT_CHUNK, progress=ctx.progress)
    images = [{**im, "file_name": f"images/source/{im['file_name']}"} for im in coco["images"] if im["id"] in keep]
    annotations = [a for a in coco["annotations"] if a["image_id"] in keep]
    write_json_atomic(out / f"{spec['split']}.json", {**coco, "images": images, "annotations": annotations})
    target_images = [{"id": i, "file_name": f"images/target/{name}", "width": rec.get("width"),
                      "height": rec.get("height")} for i, (_, name, rec) in enumerate(unlabelled, 1)]
    write_json_atomic(out / "unlabelled.json", {"images": target_images, "categories": coco["categories"]})
    write_json_atomic(out / "trainset.json", {"variants": ["source", "target"], "images": len(images),
                                              "unlabelled": len(target_images), "adapter": None})


def write_budget(plugin, out: Path, seconds: float) -> dict[str, Any]:
    """``budget.json``: the plugin's ``budget(out)`` over ``BUDGET_KEYS`` (absent ones null), with the stage's
    seconds when the plugin does not say and images seen as iterations x batch when it can be worked out."""
    from harness.data.coco import write_json_atomic
    from harness.interfaces import BUDGET_KEYS

    given = plugin.budget(out) or {}
    unknown = sorted(set(given) - set(BUDGET_KEYS))
    if unknown:
        raise HarnessError(f"{plugin.kind} '{plugin.name}': budget() gave unknown key '{unknown[0]}' "
                           f"(known: {', '.join(BUDGET_KEYS)})")
    budget = {k: given.get(k) for k in BUDGET_KEYS}
    if budget["seconds"] is None:
        budget["seconds"] = round(seconds, 1)
    if budget["images_seen"] is None and budget["iterations"] is not None and budget["batch"] is not None:
        budget["images_seen"] = int(budget["iterations"]) * int(budget["batch"])
    write_json_atomic(out / BUDGET_FILE, budget, indent=1)
    return budget


def read_budget(folder: Path) -> dict[str, Any] | None:
    """A finished train or fit stage's budget: its ``budget.json``, or for a stage cached before that file
    existed, its ``seconds.txt`` alone (None when neither is there)."""
    import json

    from harness.interfaces import BUDGET_KEYS

    path = Path(folder) / BUDGET_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}: not valid JSON ({exc.msg})") from None
        return {k: data.get(k) for k in BUDGET_KEYS}
    seconds = Path(folder) / "seconds.txt"
    if seconds.is_file():
        return {**dict.fromkeys(BUDGET_KEYS), "seconds": round(float(seconds.read_text().strip()), 1)}
    return None


def _map_images(stage: Stage, ctx: Context, out: Path, fn, desc: str, chunk: int = 1) -> None:
    """``harness.imageio.map_images`` over the evaluated images, mirroring the dataset's file names."""
    from harness.imageio import map_images

    src = ctx.location(stage.inputs["images"])
    map_images([(src / rec["file_name"], out / rec["file_name"]) for rec in _records(ctx, stage)], fn, desc,
               chunk=chunk, progress=ctx.progress)


def _degrade(stage: Stage, ctx: Context, out: Path) -> None:
    from harness.degrade import degrade_image

    spec = stage.spec
    plugin = _plugin("degradation", spec["degradation"])
    _map_images(stage, ctx, out,
                lambda ims, paths: [degrade_image(plugin, im, path.stem, spec["severity"], spec["data_seed"])
                                    for im, path in zip(ims, paths)],
                f"degrade {plugin.name} s{spec['severity']}")


def fit_sets(records: list[dict[str, Any]], fit_data: str, data_seed: int) -> tuple[list[dict], list[dict]]:
    """Which training images an adapter fits on, as (A records, records whose degraded copies form B).

    "unpaired" splits a seeded shuffle into two disjoint halves, so no B image has its clean original
    in A; "paired" degrades every A image; "source" needs no B at all.
    """
    if fit_data == "source":
        return records, []
    if fit_data == "paired":
        return records, records
    order = np.random.default_rng(seed_from("fit-split", data_seed)).permutation(len(records))
    shuffled = [records[i] for i in order]
    return shuffled[0::2], shuffled[1::2]


def fit_severity(spec: dict[str, Any], stem: str) -> int:
    """The severity of one B image of a fit: the spec's ``severity``, or with ``severities`` (one blind fit over
    several mixed) one drawn per image from a generator seeded by its stem and the data seed, as a trainset's
    augmentation draws them, so the mix is the same on every machine and in every resume."""
    if "severities" not in spec:
        return int(spec["severity"])
    pick = np.random.default_rng(seed_from("fit-severity", stem, spec["degradation"]["name"], spec["data_seed"]))
    return int(pick.choice(spec["severities"]))


def _fit(stage: Stage, ctx: Context, out: Path) -> None:
    """Fit an adapter on clean training images (A) and degraded ones (B) made by the cell's degradation, or,
    for a real target, on every training image (A) and the target's unlabelled pool (B)."""
    import shutil

    from harness.data.coco import POOL, image_records
    from harness.degrade import degrade_image
    from harness.imageio import read_image, write_image

    spec = stage.spec
    plugin = _plugin("adapter", spec["adapter"], ctx, stage.runtime.get("adapter"))
    start = time.perf_counter()
    if "pool" in stage.inputs:
        source = image_records(ctx.location(stage.inputs["data"]), spec["split"])
        target = image_records(ctx.location(stage.inputs["pool"]), POOL)
        plugin.fit([rec["path"] for rec in source], [rec["path"] for rec in target], out, spec["seed"],
                   progress=ctx.progress)
        write_budget(plugin, out, time.perf_counter() - start)
        return
    source, target = fit_sets(image_records(ctx.location(stage.inputs["data"]), spec["split"]), plugin.fit_data,
                              spec["data_seed"])
    scratch = out / "fit-target"
    target_paths = []
    if target and spec.get("degradation"):
        degradation = _plugin("degradation", spec["degradation"])
        for rec in target:
            dest = scratch / rec["file_name"]
            stem = Path(rec["file_name"]).stem
            if not dest.is_file():  # resuming: degraded images are a pure function of their inputs
                write_image(dest, degrade_image(degradation, read_image(rec["path"]), stem,
                                                fit_severity(spec, stem), spec["data_seed"]))
            target_paths.append(dest)
    else:
        target_paths = [rec["path"] for rec in target]
    if "model" in stage.inputs:  # fits through the segmenter's loss (``Adapter.needs_segmenter``)
        segmenter = _plugin("segmenter", spec["segmenter"], ctx, stage.runtime.get("segmenter"))
        plugin.fit_with_task([rec["path"] for rec in source], target_paths, [rec["annotations"] for rec in source],
                             segmenter, ctx.location(stage.inputs["model"]), out, spec["seed"], progress=ctx.progress)
    else:
        plugin.fit([rec["path"] for rec in source], target_paths, out, spec["seed"], progress=ctx.progress)
    shutil.rmtree(scratch, ignore_errors=True)
    write_budget(plugin, out, time.perf_counter() - start)


def _adapt(stage: Stage, ctx: Context, out: Path) -> None:
    plugin = _plugin("adapter", stage.spec["adapter"], ctx, stage.runtime.get("adapter"))
    fit = stage.inputs.get("fit")
    plugin.load(ctx.location(fit) if fit else None)
    _map_images(stage, ctx, out, lambda ims, paths: plugin.adapt_batch(ims), f"adapt {plugin.name}",
                chunk=ADAPT_CHUNK)


def _predict(stage: Stage, ctx: Context, out: Path) -> None:
    """Predictions of the evaluated images; on a real target (input ``source``: the dataset the model learnt
    the classes of) remapped to the target's category ids by name, dropping classes it lacks."""
    plugin = _plugin("segmenter", stage.spec["segmenter"], ctx, stage.runtime.get("segmenter"))
    extra = {}
    if stage.spec.get("features"):
        from harness.evaluation.featuregap import FEATURES_FILE

        extra["features_out"] = out / FEATURES_FILE
    plugin.predict(ctx.location(stage.inputs["model"]), _records(ctx, stage), ctx.location(stage.inputs["images"]),
                   out / "predictions.json", progress=ctx.progress, **extra)
    if "source" in stage.inputs:
        from harness.data.coco import write_json_atomic
        from harness.evaluation.coco_eval import load_predictions

        ids = category_map(ctx.location(stage.inputs["source"]), ctx.location(stage.inputs["data"]),
                           stage.spec["split"])
        preds = load_predictions(out / "predictions.json")
        write_json_atomic(out / "predictions.json", [{**r, "category_id": ids[r["category_id"]]} for r in preds
                                                     if r["category_id"] in ids])


def category_map(source_dir: Path, target_dir: Path, split: str) -> dict[int, int]:
    """Source category id -> target category id, matched by name; a target class the source lacks is an error
    (no model of the source could predict it), source classes the target lacks are left out."""
    from harness.data.coco import SPLITS, load_split, present_splits

    present = present_splits(source_dir)
    learnt = next((s for s in ("train", *SPLITS) if s in present), "train")
    source = {c["name"]: c["id"] for c in load_split(source_dir, learnt)["categories"]}
    target = load_split(target_dir, split)["categories"]
    unknown = [c["name"] for c in target if c["name"] not in source]
    if unknown:
        raise HarnessError(f"{target_dir / (split + '.json')}: class '{unknown[0]}' is not a class of the source "
                           f"dataset (source classes: {', '.join(sorted(source))}); categories match by name")
    return {source[c["name"]]: c["id"] for c in target}


def _evaluate(stage: Stage, ctx: Context, out: Path) -> None:
    from harness.data.coco import first_images, load_split, write_json_atomic
    from harness.evaluation import evaluate

    gt = first_images(load_split(ctx.location(stage.inputs["data"]), stage.spec["split"]), stage.spec.get("limit"),
                      stage.spec.get("sample"))
    rows = evaluate(gt, ctx.location(stage.inputs["predictions"]) / "predictions.json")
    write_json_atomic(out / "metrics.json", rows)


def _fidelity(stage: Stage, ctx: Context, out: Path) -> None:
    from harness.data.coco import write_json_atomic
    from harness.evaluation.fidelity import fidelity

    records = _records(ctx, stage)
    rows = fidelity([rec["path"] for rec in records],
                    [ctx.location(stage.inputs["images"]) / rec["file_name"] for rec in records])
    write_json_atomic(out / "metrics.json", rows)


def _featuregap(stage: Stage, ctx: Context, out: Path) -> None:
    """KID and FD32 of a cell's predict-stage features against the source-val reference predict stage's."""
    from harness.data.coco import write_json_atomic
    from harness.evaluation.featuregap import FEATURES_FILE, feature_gap, load_features

    _, cell = load_features(ctx.location(stage.inputs["features"]) / FEATURES_FILE)
    _, reference = load_features(ctx.location(stage.inputs["reference"]) / FEATURES_FILE)
    rows = feature_gap(cell, reference, seed_from("featuregap", stage.inputs["features"], stage.inputs["reference"]),
                       stage.spec["resamples"], stage.spec["pca_dims"])
    write_json_atomic(out / "metrics.json", rows)


RUNNERS = {"dataset": _generate, "trainset": _trainset, "train": _train, "fit": _fit, "degrade": _degrade, "adapt": _adapt,
           "predict": _predict, "evaluate": _evaluate, "fidelity": _fidelity, "featuregap": _featuregap}
