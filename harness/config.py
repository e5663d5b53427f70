"""The matrix YAML: schema, defaults and validation (every error names the file and the key)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.hashing import stable_hash

#: every top-level key, with its default (None = required) and meaning; docs are generated from this
KEYS: dict[str, tuple[Any, str]] = {
    "name": ("run", "run name: leaderboard title and run-folder prefix"),
    "dataset": (None, "prepared dataset folder (`harness data prepare`), or {generate: synthetic, params: {...}}"),
    "split": ("test", "split evaluated (its images are degraded and adapted)"),
    "segmenters": (None, "list of segmenter entries: name, profile, params, init, label, train_on, adapters"),
    "adapters": (["identity"], "list of adapter entries: name, params, label"),
    "degradations": (["none"], "list of degradation entries: name, params, severities, label; `none` = clean domain A"),
    "severities": ([3], "severities for degradations that do not list their own"),
    "seeds": ([0], "training seeds; one cell per seed"),
    "data_seed": (0, "seed of the degradation noise (a function of image, plugin, severity and this seed)"),
    "limit": (None, "evaluate only the first N images of the split (quick looks; part of every key)"),
    "sample": (None, "evaluate a fixed random sample of N images of the split (chosen by file-name hash; part of every key)"),
    "fit_split": ("train", "split whose images trainable adapters fit on: clean ones as A, degraded ones as B"),
    "targets": (None, "list of target domains: degradation entries (synthetic) and {name, data, split, pool} (real)"),
    "feature_gap": (True, "measure each cell's feature gap (KID, FD32) to the source val images in the segmenter's "
                          "own features, captured while predicting (adds the features to every predict key)"),
}
#: keys whose default None means "not set", not "required"
OPTIONAL = ("limit", "sample", "targets")
#: keys added after the first release (see MatrixConfig.hash)
LATER_KEYS = ("fit_split", "sample", "targets", "feature_gap")
ENTRY_KEYS = {
    "segmenters": {"name", "label", "params", "profile", "init", "train_on", "adapters", "model_seed"},
    "adapters": {"name", "label", "params", "fit_on"},
    "degradations": {"name", "label", "params", "severities"},
    "targets": {"name", "label", "params", "severities", "data", "split", "pool"},
}
#: the keys of a real target (an entry of ``targets`` with ``data``)
REAL_TARGET_KEYS = {"name", "data", "split", "pool"}
KIND_OF = {"segmenters": "segmenter", "adapters": "adapter", "degradations": "degradation"}


@dataclass
class Entry:
    kind: str
    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    init: str | dict[str, str] | None = None
    train_on: dict[str, Any] | None = None
    only_adapters: list[str] | None = None
    severities: list[int] | None = None
    fit_on: dict[str, Any] | None = None
    model_seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class RealTarget:
    """A prepared dataset of another domain: cells evaluate its labelled ``split``; unpaired adapters fit on its
    unlabelled ``pool`` as B."""
    label: str
    data: str
    split: str = "test"
    pool: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class MatrixConfig:
    path: Path
    raw: dict[str, Any]
    name: str
    dataset: Any
    split: str
    segmenters: list[Entry]
    adapters: list[Entry]
    degradations: list[Entry]
    seeds: list[int]
    data_seed: int
    limit: int | None
    fit_split: str = "train"
    sample: int | None = None
    #: real targets (synthetic ones are in ``degradations``); None when the config has no ``targets`` key
    targets: list[RealTarget] | None = None
    #: how errors name each degradation (``targets[i]`` for the synthetic entries of ``targets``)
    degradation_names: list[str] | None = None
    feature_gap: bool = True

    @property
    def hash(self) -> str:
        """Names the run folder. Keys added to the schema later count only when set away from their default,
        so an existing config keeps its run folder."""
        later = {k for k in LATER_KEYS if getattr(self, k) == KEYS[k][0]}
        return stable_hash({k: v for k, v in self.normalised().items() if k != "name" and k not in later})

    def normalised(self) -> dict[str, Any]:
        return {
            "name": self.name, "dataset": self.dataset, "split": self.split,
            "segmenters": [e.as_dict() for e in self.segmenters],
            "adapters": [e.as_dict() for e in self.adapters],
            "degradations": [e.as_dict() for e in self.degradations],
            "seeds": self.seeds, "data_seed": self.data_seed, "limit": self.limit, "fit_split": self.fit_split,
            "sample": self.sample, "feature_gap": self.feature_gap,
            **({} if self.targets is None else {"targets": [t.as_dict() for t in self.targets]}),
        }


def load(path: str | Path, registry=None) -> MatrixConfig:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise HarnessError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse(raw, path, registry)


def parse(raw: Any, path: Path, registry=None) -> MatrixConfig:
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: expected a mapping of keys at the top level")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise HarnessError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    for key, (default, _) in KEYS.items():
        if default is None and key not in OPTIONAL and raw.get(key) is None:
            raise HarnessError(f"{path}: missing required key '{key}'")
    get = lambda k: raw.get(k, KEYS[k][0])  # noqa: E731
    severities = _int_list(get("severities"), path, "severities")
    synthetic, real, names = _targets(raw, path, severities)
    if synthetic is not None:
        degradations = synthetic
    else:
        degradations = _entries(get("degradations"), "degradations", path, severities)
    cfg = MatrixConfig(
        path=path, raw=raw, name=str(get("name")), dataset=_dataset(get("dataset"), path),
        split=str(get("split")),
        segmenters=_entries(get("segmenters"), "segmenters", path, None),
        adapters=_entries(get("adapters"), "adapters", path, None),
        degradations=degradations,
        seeds=_int_list(get("seeds"), path, "seeds"),
        data_seed=_int(get("data_seed"), path, "data_seed"),
        limit=None if get("limit") is None else _int(get("limit"), path, "limit"),
        fit_split=str(get("fit_split")),
        sample=None if get("sample") is None else _positive(get("sample"), path, "sample"),
        targets=real, degradation_names=names, feature_gap=_bool(get("feature_gap"), path, "feature_gap"),
    )
    _check_oracles(cfg)
    _check_self_training(cfg)
    if registry is not None:
        check_plugins(cfg, registry)
    return cfg


def _check_oracles(cfg: MatrixConfig) -> None:
    """An oracle names a target of this matrix and, if any, a control fine-tune from the same model."""
    targets = [d.label for d in cfg.degradations if d.name != "none"] + [t.label for t in cfg.targets or []]
    by_label = {s.label: s for s in cfg.segmenters}
    for i, seg in enumerate(cfg.segmenters):
        oracle = oracle_of(seg)
        if oracle is None:
            continue
        where = f"{cfg.path}: segmenters[{i}].train_on"
        if oracle[1] not in targets:
            raise HarnessError(f"{where}.{oracle[0]}: '{oracle[1]}' is not a target of this matrix (known: "
                               f"{', '.join(targets) or 'none'}; 'none', the clean source, is no target)")
        control = seg.train_on.get("control")
        if control is None:
            continue
        other = by_label.get(control)
        if other is None or other is seg or other.train_on or not isinstance(other.init, dict):
            raise HarnessError(f"{where}.control: '{control}' is not the label of a plain fine-tune in this matrix "
                               "(an entry with init: {segmenter: LABEL} and no train_on)")
        if isinstance(seg.init, dict) and other.init != seg.init:
            raise HarnessError(f"{where}.control: '{control}' starts from '{other.init['segmenter']}', this oracle "
                               f"from '{seg.init['segmenter']}'; a control is the same recipe without the target")


def _dataset(value: Any, path: Path) -> Any:
    if isinstance(value, str):
        return str(Path(value).expanduser())
    if isinstance(value, dict) and set(value) <= {"generate", "params"} and "generate" in value:
        if value["generate"] != "synthetic":
            raise HarnessError(f"{path}: dataset.generate: unknown generator '{value['generate']}' (known: synthetic)")
        if not isinstance(value.get("params", {}), dict):
            raise HarnessError(f"{path}: dataset.params: expected a mapping")
        return {"generate": "synthetic", "params": value.get("params", {})}
    raise HarnessError(f"{path}: dataset: expected a folder path or {{generate: synthetic, params: {{...}}}}")


def _entries(value: Any, key: str, path: Path, severities: list[int] | None,
             shown: list[str] | None = None) -> list[Entry]:
    """``shown``: each item's name in errors, where it is not ``key[i]`` (synthetic entries of ``targets``)."""
    if not isinstance(value, list) or not value:
        raise HarnessError(f"{path}: {key}: expected a non-empty list")
    out: list[Entry] = []
    for i, item in enumerate(value):
        name = shown[i] if shown else f"{key}[{i}]"
        where = f"{path}: {name}"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise HarnessError(f"{where}: expected a name or a mapping with 'name'")
        bad = sorted(set(item) - ENTRY_KEYS[key])
        if bad:
            raise HarnessError(f"{where}: unknown key '{bad[0]}' (known: {', '.join(sorted(ENTRY_KEYS[key]))})")
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise HarnessError(f"{where}.params: expected a mapping")
        entry = Entry(kind=KIND_OF[key], name=str(item["name"]), label=str(item.get("label", item["name"])),
                      params=params)
        if key == "segmenters":
            entry.profile = str(item.get("profile", "cpu"))
            entry.init = _init(item.get("init"), f"{where}.init")
            if item.get("train_on") is not None:
                entry.train_on = _train_on(item["train_on"], f"{where}.train_on", path)
            if item.get("adapters") is not None:
                entry.only_adapters = _labels(item["adapters"], f"{where}.adapters")
            if item.get("model_seed") is not None:
                seed = item["model_seed"]
                if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                    raise HarnessError(f"{where}.model_seed: expected a seed (integer >= 0), got {seed!r}")
                entry.model_seed = seed
        if key == "adapters" and item.get("fit_on") is not None:
            entry.fit_on = _fit_on(item["fit_on"], f"{where}.fit_on")
        if key == "degradations":
            entry.severities = ([0] if entry.name == "none"
                                else _int_list(item.get("severities", severities), path, f"{name}.severities"))
        out.append(entry)
    labels = [e.label for e in out]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise HarnessError(f"{path}: {key}: label '{dupes[0]}' used twice; give each variant its own 'label'")
    return out


def _targets(raw: dict[str, Any], path: Path, severities: list[int]
             ) -> tuple[list[Entry] | None, list[RealTarget] | None, list[str] | None]:
    """``targets``: (synthetic targets, i.e. the degradation entries, with those of ``degradations`` first;
    real targets; how errors name each synthetic one). Nones without the key, so a config without it reads
    exactly as before."""
    if raw.get("targets") is None:
        return None, None, None
    value = raw["targets"]
    if not isinstance(value, list) or not value:
        raise HarnessError(f"{path}: targets: expected a non-empty list")
    synthetic_items, shown, real = [], [], []
    for i, item in enumerate(value):
        where = f"{path}: targets[{i}]"
        if isinstance(item, dict) and "data" in item:
            real.append(_real_target(item, where))
        else:
            synthetic_items.append(item)
            shown.append(f"targets[{i}]")
    given = raw.get("degradations")
    if given is not None and (not isinstance(given, list) or not given):
        raise HarnessError(f"{path}: degradations: expected a non-empty list")
    items = [*(given or []), *synthetic_items]
    shown = [f"degradations[{i}]" for i in range(len(given or []))] + shown
    degradations = _entries(items, "degradations", path, severities, shown) if items else []
    labels = [d.label for d in degradations] + [t.label for t in real]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise HarnessError(f"{path}: targets: label '{dupes[0]}' used twice (targets and degradations share labels)")
    return degradations, real, shown


def _real_target(item: dict[str, Any], where: str) -> RealTarget:
    bad = sorted(set(item) - REAL_TARGET_KEYS)
    if bad:
        raise HarnessError(f"{where}: unknown key '{bad[0]}' for a real target (known: "
                           f"{', '.join(sorted(REAL_TARGET_KEYS))})")
    for key in ("name", "data"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise HarnessError(f"{where}.{key}: expected a non-empty string")
    if item["name"] == "none":
        raise HarnessError(f"{where}.name: 'none' is the clean source setting, not a real target's label")
    split = item.get("split", "test")
    if not isinstance(split, str) or not split:
        raise HarnessError(f"{where}.split: expected a split name (default test)")
    pool = item.get("pool")
    if pool is not None and (not isinstance(pool, str) or not pool):
        raise HarnessError(f"{where}.pool: expected a prepared pool folder (`harness data prepare images`)")
    return RealTarget(label=item["name"], data=str(Path(item["data"]).expanduser()), split=split,
                      pool=None if pool is None else str(Path(pool).expanduser()))


def _init(value: Any, where: str) -> str | dict[str, str] | None:
    """A checkpoint path or URL, or {segmenter: LABEL}: start from the model another entry trains (same seed),
    e.g. to fine-tune a clean model on augmented data."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"segmenter"} and isinstance(value["segmenter"], str):
        return {"segmenter": value["segmenter"]}
    raise HarnessError(f"{where}: expected a checkpoint path or URL, or {{segmenter: LABEL}}")


def _labels(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{where}: expected a list of adapter labels")
    return list(value)


#: the ``train_on`` keys that make a segmenter entry an oracle: trained on the target's labelled training
#: images alone (oracle-T) or on them and the source's (oracle-ST)
ORACLES = ("target", "source_and_target")
TRAIN_ON_KEYS = {"augment", "adapter", *ORACLES, "control", "self_training"}


def oracle_of(entry: Entry | dict[str, Any]) -> tuple[str, str] | None:
    """(``target`` or ``source_and_target``, the target's label) of an oracle entry, else None."""
    train_on = (entry.get("train_on") if isinstance(entry, dict) else entry.train_on) or {}
    return next(((k, train_on[k]) for k in ORACLES if k in train_on), None)


def _train_on(value: Any, where: str, path: Path) -> dict[str, Any]:
    """Training-side baselines: train on A plus degraded copies (``augment``) and/or on adapted images
    (``adapter``, applied to every training image; pair it with the same adapter at test time); oracles train
    on a target's labelled training images (``target``) or on those and A (``source_and_target``), and may name
    the ``control`` fine-tune that is source-only for training-side rows in the gap-closed table."""
    if not isinstance(value, dict) or not value:
        raise HarnessError(f"{where}: expected a mapping with 'augment' and/or 'adapter', or an oracle's "
                           "'target' or 'source_and_target'")
    bad = sorted(set(value) - TRAIN_ON_KEYS)
    if bad:
        raise HarnessError(f"{where}: unknown key '{bad[0]}' (known: {', '.join(sorted(TRAIN_ON_KEYS))})")
    if "self_training" in value:
        return {"self_training": _self_training(value, where)}
    out: dict[str, Any] = {}
    oracle = [k for k in ORACLES if k in value]
    if len(oracle) > 1:
        raise HarnessError(f"{where}: give either 'target' (oracle-T) or 'source_and_target' (oracle-ST), not both")
    if oracle:
        mixed = sorted(set(value) & {"augment", "adapter"})
        if mixed:
            raise HarnessError(f"{where}: an oracle's recipe is its segmenter's (profile, params, init); "
                               f"'{mixed[0]}' does not combine with '{oracle[0]}'")
        name = value[oracle[0]]
        if not isinstance(name, str) or not name:
            raise HarnessError(f"{where}.{oracle[0]}: expected a target's label")
        out[oracle[0]] = name
        if value.get("control") is not None:
            if oracle[0] != "target":
                raise HarnessError(f"{where}.control: only an oracle-T ('target') names the control fine-tune")
            if not isinstance(value["control"], str) or not value["control"]:
                raise HarnessError(f"{where}.control: expected the label of a segmenter entry")
            out["control"] = value["control"]
    elif "control" in value:
        raise HarnessError(f"{where}.control: only an oracle ('target' or 'source_and_target') names a control")
    if value.get("augment") is not None:
        degs = _entries(value["augment"], "degradations", Path(f"{where}.augment"), [1, 2, 3, 4, 5])
        if any(d.name == "none" for d in degs):
            raise HarnessError(f"{where}.augment: 'none' is not a degradation to augment with")
        out["augment"] = [{"name": d.name, "params": d.params, "severities": d.severities} for d in degs]
    if value.get("adapter") is not None:
        ad = _entries([value["adapter"]], "adapters", Path(f"{where}.adapter"), None)[0]
        out["adapter"] = {"name": ad.name, "params": ad.params, "fit_on": ad.fit_on}
    return out


#: ``train_on: {self_training: {...}}`` options and defaults (plugins/segmenters/self_training.py: OPTIONS)
SELF_TRAINING = {"target": None, "threshold": 0.7, "teacher_share": 0.99, "pseudo_labels": True, "weight": 1.0}


def self_training_of(entry: Entry | dict[str, Any]) -> dict[str, Any] | None:
    """The ``self_training`` options of a self-training entry (defaults filled in), else None."""
    train_on = (entry.get("train_on") if isinstance(entry, dict) else entry.train_on) or {}
    return train_on.get("self_training")


def _self_training(value: dict[str, Any], where: str) -> dict[str, Any]:
    """Mean-teacher self-training on a target's unlabelled images, fine-tuning a source model (see
    docs/configuration.md): ``target`` (a target's label), ``threshold`` (teacher score for a pseudo-label,
    in (0, 1)), ``teacher_share`` (EMA decay per iteration, in [0, 1)), ``pseudo_labels`` (false: ALDI's
    control), ``weight`` (of the pseudo-label loss)."""
    others = sorted(set(value) - {"self_training"})
    if others:
        raise HarnessError(f"{where}: '{others[0]}' does not combine with 'self_training' (its recipe is its own)")
    where = f"{where}.self_training"
    st = value["self_training"]
    if not isinstance(st, dict) or "target" not in st:
        raise HarnessError(f"{where}: expected a mapping with 'target' (a target's label)")
    bad = sorted(set(st) - set(SELF_TRAINING))
    if bad:
        raise HarnessError(f"{where}: unknown key '{bad[0]}' (known: {', '.join(sorted(SELF_TRAINING))})")
    out = {**SELF_TRAINING, **st}
    if not isinstance(out["target"], str) or not out["target"]:
        raise HarnessError(f"{where}.target: expected a target's label")
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if not number(out["threshold"]) or not 0 < out["threshold"] < 1:
        raise HarnessError(f"{where}.threshold: expected a score in (0, 1), got {out['threshold']!r}")
    if not number(out["teacher_share"]) or not 0 <= out["teacher_share"] < 1:
        raise HarnessError(f"{where}.teacher_share: expected the teacher's EMA share per iteration in [0, 1) "
                           f"(e.g. 0.99), got {out['teacher_share']!r}")
    if not isinstance(out["pseudo_labels"], bool):
        raise HarnessError(f"{where}.pseudo_labels: expected true or false, got {out['pseudo_labels']!r}")
    if not number(out["weight"]) or out["weight"] <= 0:
        raise HarnessError(f"{where}.weight: expected a positive number, got {out['weight']!r}")
    return {**out, "threshold": float(out["threshold"]), "teacher_share": float(out["teacher_share"]),
            "weight": float(out["weight"])}


def _check_self_training(cfg: MatrixConfig) -> None:
    """A self-training entry fine-tunes another entry's model and names a target of this matrix."""
    targets = [d.label for d in cfg.degradations if d.name != "none"] + [t.label for t in cfg.targets or []]
    for i, seg in enumerate(cfg.segmenters):
        st = self_training_of(seg)
        if st is None:
            continue
        where = f"{cfg.path}: segmenters[{i}]"
        if not isinstance(seg.init, dict):
            raise HarnessError(f"{where}.init: self-training fine-tunes a source model: give the entry "
                               "init: {segmenter: LABEL}")
        if st["target"] not in targets:
            raise HarnessError(f"{where}.train_on.self_training.target: '{st['target']}' is not a target of this "
                               f"matrix (known: {', '.join(targets) or 'none'}; 'none', the clean source, "
                               "is no target)")


def _fit_on(value: Any, where: str) -> dict[str, Any]:
    """One fixed degradation a trainable adapter fits on for every cell (a blind adapter), instead of each
    cell's own degradation and severity: at one ``severity``, or at several ``severities`` mixed in one fit."""
    if not isinstance(value, dict) or "name" not in value:
        raise HarnessError(f"{where}: expected a mapping with 'name' (a degradation) and 'severity'")
    bad = sorted(set(value) - {"name", "params", "severity", "severities"})
    if bad:
        raise HarnessError(f"{where}: unknown key '{bad[0]}' (known: name, params, severities, severity)")
    if not isinstance(value.get("params", {}), dict):
        raise HarnessError(f"{where}.params: expected a mapping")
    out = {"name": str(value["name"]), "params": value.get("params") or {}}
    if "severities" in value:
        # several severities mixed in one fit, each B image's drawn per image (harness.stages.fit_severity)
        if "severity" in value:
            raise HarnessError(f"{where}: give 'severity' or 'severities', not both")
        sevs = value["severities"]
        if (not isinstance(sevs, list) or not sevs
                or any(isinstance(s, bool) or not isinstance(s, int) for s in sevs) or len(set(sevs)) != len(sevs)):
            raise HarnessError(f"{where}.severities: expected a non-empty list of distinct integers, got {sevs!r}")
        return {**out, "severities": sorted(sevs)}
    severity = value.get("severity", 3)
    if isinstance(severity, bool) or not isinstance(severity, int):
        raise HarnessError(f"{where}.severity: expected an integer, got {severity!r}")
    return {**out, "severity": severity}


def check_plugins(cfg: MatrixConfig, registry) -> None:
    """Fail before any work if a plugin name, parameter, profile or severity is wrong."""
    for key in ("segmenters", "adapters", "degradations"):
        for i, entry in enumerate(getattr(cfg, key)):
            if entry.kind == "degradation" and entry.name == "none":
                continue
            where = f"{cfg.path}: {key}[{i}]"
            if key == "degradations" and cfg.degradation_names:
                where = f"{cfg.path}: {cfg.degradation_names[i]}"
            try:
                plugin = registry.create(entry.kind, entry.name, entry.params)
                if entry.kind == "segmenter":
                    plugin.check_profile(entry.profile)
                    _check_segmenter(cfg, entry, registry)
                if entry.kind == "degradation":
                    bad = [s for s in entry.severities if s not in plugin.severities]
                    if bad:
                        raise HarnessError(f"severity {bad[0]} not in {list(plugin.severities)}")
                if entry.fit_on is not None:
                    if not plugin.trainable:
                        raise HarnessError(f"fit_on: adapter '{entry.name}' is not trainable")
                    deg = registry.create("degradation", entry.fit_on["name"], entry.fit_on["params"])
                    for sev in entry.fit_on.get("severities", [entry.fit_on.get("severity")]):
                        if sev not in deg.severities:
                            raise HarnessError(f"fit_on.severity {sev} not in {list(deg.severities)}")
            except HarnessError as exc:
                raise HarnessError(f"{where}: {exc}") from None


def _check_segmenter(cfg: MatrixConfig, entry: Entry, registry) -> None:
    labels = [a.label for a in cfg.adapters]
    for label in entry.only_adapters or []:
        if label not in labels:
            raise HarnessError(f"adapters: '{label}' is not an adapter label of this matrix (known: {', '.join(labels)})")
    if isinstance(entry.init, dict):
        others = [s.label for s in cfg.segmenters if s.label != entry.label and not isinstance(s.init, dict)]
        if entry.init["segmenter"] not in others:
            raise HarnessError(f"init.segmenter: '{entry.init['segmenter']}' is not the label of another segmenter "
                               f"trained from scratch or a checkpoint in this matrix (known: {', '.join(others) or 'none'})")
    train_on = entry.train_on or {}
    if "self_training" in train_on and not hasattr(registry.get("segmenter", entry.name), "self_train"):
        raise HarnessError(f"train_on.self_training: segmenter '{entry.name}' does not implement self-training "
                           "(tv-mask-rcnn and mmdet-mask-rcnn do)")
    for deg in train_on.get("augment", []):
        plugin = registry.create("degradation", deg["name"], deg["params"])
        bad = [s for s in deg["severities"] if s not in plugin.severities]
        if bad:
            raise HarnessError(f"train_on.augment: {deg['name']} severity {bad[0]} not in {list(plugin.severities)}")
    if "adapter" in train_on:
        ad = train_on["adapter"]
        plugin = registry.create("adapter", ad["name"], ad["params"])
        if plugin.trainable and plugin.fit_data != "source" and ad["fit_on"] is None:
            raise HarnessError(f"train_on.adapter: '{ad['name']}' fits on degraded images: give it fit_on "
                               "{name: DEGRADATION, severity: N}")
        if ad["fit_on"] is not None:
            registry.create("degradation", ad["fit_on"]["name"], ad["fit_on"]["params"])


def _int(value: Any, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HarnessError(f"{path}: {key}: expected an integer, got {value!r}")
    return value


def _bool(value: Any, path: Path, key: str) -> bool:
    if not isinstance(value, bool):
        raise HarnessError(f"{path}: {key}: expected true or false, got {value!r}")
    return value


def _positive(value: Any, path: Path, key: str) -> int:
    if _int(value, path, key) < 1:
        raise HarnessError(f"{path}: {key}: expected a positive integer, got {value!r}")
    return value


def _int_list(value: Any, path: Path, key: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise HarnessError(f"{path}: {key}: expected a list of integers")
    return [_int(v, path, key) for v in value]
