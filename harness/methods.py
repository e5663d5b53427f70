"""What each leaderboard row knew of each target: a domain-adaptation table must mark privileged information.

Per row (segmenter entry and adapter) and target (a synthetic degradation's label or a real target's), run.json
``methods`` records the row's kind and whether it used the target's labels, its true degradation (only a
synthetic target has one to know; on a real one any degradation is a guess) or its unlabelled images. It is
decided here, at run time, from the config entries and the plugins' attributes, so that the leaderboard only
renders it.
"""
from __future__ import annotations

from typing import Any

from harness.config import Entry, MatrixConfig, oracle_of, self_training_of

KINDS = ("source-only", "pre-processing", "training-side", "control", "oracle")
USES = ("uses_target_labels", "uses_true_degradation", "uses_target_images")
FIELDS = ("segmenter", "profile", "adapter", "degradation", "kind", *USES, "optimises_segmenter_features")
#: degradations whose parameters are estimated from a camera's unlabelled images (`harness degrade estimate`):
#: augmenting with one is a guess at the target's degradation, not knowledge of it
ESTIMATED = ("twin",)


def methods(cfg: MatrixConfig, registry) -> list[dict[str, Any]]:
    """One record per target and row of the matrix (the rows its cells have), targets and rows in config order."""
    truth = {d.label: _degradation(registry, d.name, d.params) for d in cfg.degradations if d.name != "none"}
    targets = [*truth, *(t.label for t in cfg.targets or [])]
    controls = {s.train_on.get("control") for s in cfg.segmenters if oracle_of(s)} - {None}
    plugins = {a.label: registry.create(a.kind, a.name, a.params) for a in cfg.adapters}
    out = []
    for target in targets:
        true = truth.get(target)
        for seg in cfg.segmenters:
            seg_uses = _segmenter_uses(registry, seg, target, true)
            for ad in cfg.adapters:
                if seg.only_adapters is not None and ad.label not in seg.only_adapters:
                    continue
                plugin = plugins[ad.label]
                ad_uses = (False, *_adapter_uses(registry, plugin, ad.fit_on, true, own=True))
                out.append({"segmenter": seg.label, "profile": seg.profile, "adapter": ad.label, "degradation": target,
                            "kind": kind(seg, ad, controls),
                            **{k: a or b for k, a, b in zip(USES, seg_uses, ad_uses)},
                            "optimises_segmenter_features": bool(plugin.optimises_segmenter_features)})
    return out


def kind(seg: Entry, ad: Entry, controls: set[str]) -> str:
    """An oracle trains on a target's labels; a control is the same fine-tune without the target (an oracle's
    ``control``, a plain ``init`` fine-tune, self-training without pseudo-labels); any other ``train_on`` or
    ``init`` fine-tune is training-side; the plain segmenter is source-only with ``identity``, else pre-processing."""
    st = self_training_of(seg)
    if oracle_of(seg) is not None:
        return "oracle"
    if (seg.label in controls or (isinstance(seg.init, dict) and not seg.train_on)
            or (st is not None and not st["pseudo_labels"])):
        return "control"
    if seg.train_on or isinstance(seg.init, dict):
        return "training-side"
    return "source-only" if ad.name == "identity" else "pre-processing"


def _segmenter_uses(registry, seg: Entry, target: str, true: dict | None) -> tuple[bool, bool, bool]:
    """(labels, true degradation, images) of the target that the segmenter's training saw."""
    oracle = oracle_of(seg)
    if oracle is not None:
        mine = oracle[1] == target
        return mine, mine and true is not None, False
    st = self_training_of(seg)
    if st is not None:  # without pseudo-labels the target batch is never used
        return False, False, bool(st["pseudo_labels"]) and st["target"] == target
    train_on = seg.train_on or {}
    augmented = true is not None and any(d["name"] not in ESTIMATED and _degradation(registry, d["name"], d["params"])
                                         == true for d in train_on.get("augment", []))
    ad = train_on.get("adapter")
    fitted = (False, False)
    if ad:
        fitted = _adapter_uses(registry, registry.create("adapter", ad["name"], ad["params"]), ad["fit_on"], true,
                               own=False)
    return False, augmented or fitted[0], fitted[1]


def _adapter_uses(registry, plugin, fit_on: dict | None, true: dict | None, own: bool) -> tuple[bool, bool]:
    """(true degradation, target images) an adapter's fit saw. Without ``fit_on`` a test-time adapter (``own``) is
    fitted on the cell's own degradation or a real target's pool; a training-set one on clean images. A paired
    fit on the target's degradation knows it exactly; an unpaired one sees target images only."""
    if not plugin.trainable or plugin.fit_data == "source":
        return False, False
    if fit_on is None:
        on_target = own
    else:
        on_target = true is not None and _degradation(registry, fit_on["name"], fit_on["params"]) == true
    if not on_target:
        return False, False
    if plugin.fit_data == "paired":
        return true is not None, False
    return False, True


def _degradation(registry, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A degradation as its identity (defaults filled in), so that equal parameters compare equal however given."""
    return registry.create("degradation", name, params).identity()
