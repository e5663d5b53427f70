"""Title, provenance of every run (who ran what on which data, how far it got) and the reading that holds for
every table."""
from __future__ import annotations

import re
from pathlib import Path

from harness.leaderboard.format import esc
from harness.leaderboard.run import Page, Run

VERSION_ORDER = ("harness", "python", "torch", "mmdet", "mmcv", "pycocotools")
READING = ("Values are COCO AP ×100. With several seeds a cell reads mean ± standard error (ddof=1); "
           "(n=k) marks a cell averaged over fewer seeds, with the reason in a numbered note under the table.")


def lines(page: Page) -> list[str]:
    name = " + ".join(str(r.meta.get("name") or d.name) for r, d in zip(page.runs, page.dirs))
    out = [f"# {esc(page.title or 'Leaderboard: ' + name)}", ""]
    for r in page.runs:
        out += ([f"### Run {esc(r.meta.get('name', 'unknown'))}", ""] if len(page.runs) > 1 else []) + provenance(r)
    return out + [READING, ""]


def provenance(run: Run) -> list[str]:
    meta = run.meta
    dataset = meta.get("dataset") or {}
    versions = meta.get("versions") or {}
    names = [k for k in VERSION_ORDER if k in versions] + sorted(k for k in versions if k not in VERSION_ORDER)
    status = run.cells["status"].value_counts()
    counts = meta.get("cells") or {}
    total = max(len(run.cells), int(counts.get("total") or 0))
    done, failed = int(status.get("done", 0)), int(status.get("failed", 0))
    profiles = sorted(p for p in run.cells["profile"].unique() if p)
    fingerprint = esc(dataset.get("fingerprint", "unknown"))
    return [
        f"- **Run:** {esc(meta.get('name', 'unknown'))}",
        f"- **Config hash:** `{esc(meta.get('config_hash', 'unknown'))}`",
        f"- **Dataset:** {esc(dataset.get('name', 'unknown'))} (fingerprint `{fingerprint}`)",
        *targets(meta),
        *oracles(meta),
        f"- **Profile(s):** {esc(', '.join(profiles) or 'unknown')}",
        f"- **Versions:** {esc(', '.join(f'{k} {versions[k]}' for k in names) or 'unknown')}",
        f"- **Created:** {esc(meta.get('created') or 'unknown')}",
        f"- **Finished:** {esc(meta.get('finished') or 'not finished (partial run)')}",
        f"- **Cells:** {done} done, {failed} failed, {total - done - failed} pending, {total} total",
        f"- **Seeds:** {', '.join(map(str, run.seeds)) or 'none'}",
        f"- **Selections:** {esc(selections(meta))}",
        "",
    ]


PLUGIN_LISTS = (("segmenters", "segmenter"), ("adapters", "adapter"), ("degradations", "degradation"))


def selections(meta: dict) -> str:
    """Which split each plugin's tuned defaults came from (``Plugin.selected_on``), plugins grouped by it, so
    that a default chosen on test shows. The version is the one run.json's ``plugins`` records, when it does."""
    from harness.errors import HarnessError
    from harness.registry import default_registry

    config, recorded = meta.get("config") or {}, meta.get("plugins") or {}
    groups: dict[str, set[str]] = {}
    for key, kind in PLUGIN_LISTS:
        for entry in config.get(key) or []:
            name = entry if isinstance(entry, str) else entry.get("name")
            if kind == "degradation" and name == "none":  # clean domain A: no plugin
                continue
            try:
                cls = default_registry().get(kind, name)
            except HarnessError:
                groups.setdefault("unknown (not installed here)", set()).add(str(name))
                continue
            text = selection(cls, (recorded.get(kind) or {}).get(name))
            if text:
                groups.setdefault(text, set()).add(name)
    for entry in config.get("segmenters") or []:
        path = ((entry.get("params") or {}).get("config") if isinstance(entry, dict) else None)
        text = model_config_selection(path) if path else None
        if text:
            groups.setdefault(text, set()).add(Path(path).name)
    return "; ".join(f"{', '.join(sorted(names))}: {text}" for text, names in groups.items()) or \
        "none (no plugin of this run has defaults tuned on data)"


#: the line of a model config file that says which split its choices came from (a comment: not in the model)
SELECTED_ON = re.compile(r"^#\s*selected_on:\s*(.+?)\s*$", re.MULTILINE)


def model_config_selection(path: str) -> str | None:
    """A model config's ``# selected_on: ...`` line (a schedule, say, chosen on val), read from the file the run
    named, relative to the repository when not absolute; None when it has none or is not here."""
    file = Path(path).expanduser()
    if not file.is_absolute():
        file = Path(__file__).resolve().parents[3] / file
    if not file.is_file():
        return None
    m = SELECTED_ON.search(file.read_text(errors="replace"))
    return m.group(1) if m else None


def selection(cls, version: str | None) -> str | None:
    """What the run's ``version`` of ``cls`` was tuned on (versions not in ``selected_before`` share
    ``selected_on``); every known version's when run.json records none and they differ."""
    if version is None and cls.selected_before:
        known = [f"v{cls.version} {cls.selected_on or 'nothing tuned'}",
                 *(f"v{v} {text}" for v, text in cls.selected_before.items())]
        return "version not recorded: " + ", ".join(known)
    return cls.selected_before.get(str(version), cls.selected_on)


def targets(meta: dict) -> list[str]:
    """One line per real target: which dataset (by fingerprint) its labelled images and its pool are."""
    out = []
    for label, info in (meta.get("targets") or {}).items():
        pool = info.get("pool")
        pool_text = "no pool"
        if pool:
            pool_text = (f"pool of {pool.get('images', '?')} unlabelled images "
                         f"(fingerprint `{esc(pool.get('fingerprint'))}`)")
        of = f" of {info['images']}" if info.get("images") not in (None, info.get("evaluated")) else ""
        out.append(f"- **Target {esc(label)}:** {esc(info.get('name', 'unknown'))} (fingerprint "
                   f"`{esc(info.get('fingerprint', 'unknown'))}`), {info.get('evaluated', '?')}{of} labelled "
                   f"{esc(info.get('split', 'test'))} images evaluated; {pool_text}")
    return out


def oracles(meta: dict) -> list[str]:
    """One line per oracle entry: which target it learnt, and the recipe (profile, init, params) it shares."""
    from harness.config import oracle_of

    out = []
    for seg in (meta.get("config") or {}).get("segmenters", []):
        oracle = oracle_of(seg) if isinstance(seg, dict) else None
        if oracle is None:
            continue
        kind = ("oracle-T: the target's labelled training images" if oracle[0] == "target"
                else "oracle-ST: the source's and the target's labelled training images")
        init = seg.get("init")
        init_text = (f"fine-tuned from segmenter {esc(init['segmenter'])}" if isinstance(init, dict)
                     else f"init {esc(init)}" if init else "trained from scratch")
        params = ", ".join(f"{k}={v}" for k, v in sorted((seg.get("params") or {}).items())) or "default params"
        control = (seg.get("train_on") or {}).get("control")
        out.append(f"- **Oracle {esc(seg['label'])}:** {kind} of target {esc(oracle[1])}; profile "
                   f"{esc(seg.get('profile', '?'))}, {init_text}, {esc(params)}"
                   + (f"; control {esc(control)}" if control else ""))
    return out
