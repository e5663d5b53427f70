"""`harness cache du | ls | gc`: what the stage cache holds, what each run folder needs of it, pruning the rest.

What a run folder needs is a closure: the keys its ``run.json`` lists (``stages``: every stage its plan
has) and its cells record, plus every input of those, followed through the ``stage.json`` each cached
stage keeps. Run folders written before ``run.json`` listed its stages also need the evaluate and fidelity
stages made from their predictions and images (cells did not record those keys); they are found by their
inputs. ``gc`` holds the cache's exclusive lock (``Store.lock``), which ``harness run`` holds shared while it
writes, so it never deletes stages of a matrix in progress.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.cache import DONE, Store, default_root
from harness.errors import HarnessError
from harness.stages import KINDS

#: a ``<key>.partial`` folder untouched this long (newest file inside) belongs to no live run
PARTIAL_AGE = 24 * 3600.0
CACHED_KINDS = tuple(k for k in KINDS if k != "source")
#: a stage folder being deleted is renamed to this first, so a killed gc never leaves a half-deleted stage
DELETING = ".deleting"


def kind_of(key: str) -> str:
    return key.split("-", 1)[0]


def human(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _walk(path: Path) -> Iterable[os.stat_result]:
    """lstat of ``path`` and everything under it; entries that vanish meanwhile are skipped."""
    try:
        yield path.lstat()
    except FileNotFoundError:
        return
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                yield os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path``, each hard-linked file once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for st in _walk(path):
        if stat.S_ISDIR(st.st_mode):
            continue
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        total += st.st_size
    return total


def newest_mtime(path: Path) -> float:
    return max((st.st_mtime for st in _walk(path)), default=0.0)


@dataclass
class Cache:
    """One scan of a cache root: finished stages by key, ``.partial`` folders, leftovers of a killed gc."""

    store: Store
    stages: dict[str, Path] = field(default_factory=dict)
    partial: list[Path] = field(default_factory=list)
    deleting: list[Path] = field(default_factory=list)
    _sizes: dict[Path, int] = field(default_factory=dict)
    _inputs: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def scan(cls, store: Store) -> "Cache":
        cache = cls(store)
        for kind in CACHED_KINDS:
            folder = store.root / kind
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if not entry.is_dir():
                    continue
                if entry.name.endswith(".partial"):
                    cache.partial.append(entry)
                elif entry.name.endswith(DELETING):
                    cache.deleting.append(entry)
                elif (entry / DONE).is_file():
                    cache.stages[entry.name] = entry
        return cache

    def size(self, path: Path) -> int:
        if path not in self._sizes:
            self._sizes[path] = tree_size(path)
        return self._sizes[path]

    def inputs(self, key: str) -> list[str]:
        """The input keys its ``stage.json`` records (a stage not in the cache: none known)."""
        if key not in self._inputs:
            path = self.stages.get(key)
            if path is None:
                return []
            record = path / DONE
            try:
                inputs = json.loads(record.read_text())["stage"]["inputs"]
                if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
                    raise TypeError
            except (OSError, ValueError, KeyError, TypeError):
                raise HarnessError(f"{record}: unreadable stage record, so what this stage needs is unknown "
                                   f"(delete {path}: it is recomputed when needed)") from None
            self._inputs[key] = list(inputs.values())
        return self._inputs[key]


# -- run folders -----------------------------------------------------------------------------------
@dataclass
class RunFolder:
    dir: Path
    cache: str | None  # the cache root its run.json names
    keys: set[str]  # the stage keys it records
    legacy: bool  # run.json predates its ``stages`` list


def read_run(run_dir: str | Path) -> RunFolder:
    """The stage keys a run folder records; a folder that is not a run folder, or a corrupt file in it,
    is a HarnessError naming the file (a gc must not guess what a kept run needs)."""
    folder = Path(run_dir)
    meta_path, cells_path = folder / "run.json", folder / "cells.jsonl"
    if not meta_path.is_file():
        raise HarnessError(f"{meta_path}: not found; is {folder} a run folder (runs/<name>-<hash>/)?")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{meta_path}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config_hash"), str):
        raise HarnessError(f"{meta_path}: not a run record (no config_hash)")
    keys: set[str] = set()
    listed = meta.get("stages")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
            raise HarnessError(f"{meta_path}: 'stages' must be a list of stage keys")
        keys.update(listed)
    dataset = meta.get("dataset")
    fingerprint = dataset.get("fingerprint") if isinstance(dataset, dict) else None
    if isinstance(fingerprint, str) and kind_of(fingerprint) == "dataset":
        keys.add(fingerprint)  # a generated dataset is a stage
    if not cells_path.is_file():
        raise HarnessError(f"{cells_path}: not found; is {folder} a run folder (runs/<name>-<hash>/)?")
    for n, line in enumerate(cells_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            cell = json.loads(line)
        except ValueError as exc:
            raise HarnessError(f"{cells_path}:{n}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
        stages = cell.get("stages") if isinstance(cell, dict) else None
        if isinstance(stages, dict):
            keys.update(k for k in stages.values() if isinstance(k, str))
        elif listed is None:
            raise HarnessError(f"{cells_path}:{n}: a cell without its 'stages' keys, from an older harness "
                               "(rerun its config to record them: finished stages are reused)")
    cache = meta.get("cache")
    return RunFolder(folder, cache if isinstance(cache, str) else None, keys, legacy=listed is None)


def needs(run: RunFolder, cache: Cache) -> set[str]:
    """Every stage key the run needs: its recorded keys and, through stage.json, all their inputs."""
    found: set[str] = set()
    todo = list(run.keys)
    while todo:
        key = todo.pop()
        if key in found:
            continue
        found.add(key)
        todo.extend(cache.inputs(key))
    if run.legacy:
        for key in list(cache.stages):
            if kind_of(key) in ("evaluate", "fidelity") and key not in found:
                inputs = cache.inputs(key)
                if inputs and set(inputs) <= found:
                    found.add(key)
    return found


def resolve_store(run_dirs: list[RunFolder], cache: str | Path | None) -> Store:
    """``--cache``, else the cache the run folders' run.json name (when they agree), else the default one."""
    if cache:
        return Store(cache)
    named = {str(Path(r.cache).expanduser().resolve()): r for r in run_dirs if r.cache}
    if len(named) > 1:
        a, b = list(named.values())[:2]
        raise HarnessError(f"{a.dir / 'run.json'} and {b.dir / 'run.json'} name different caches "
                           f"({a.cache}, {b.cache}): pass --cache")
    return Store(next(iter(named))) if named else Store(default_root())


# -- the three commands ----------------------------------------------------------------------------
def _by_kind(cache: Cache, keys: Iterable[str]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for key in keys:
        row = rows.setdefault(kind_of(key), {"kind": kind_of(key), "stages": 0, "bytes": 0})
        row["stages"] += 1
        row["bytes"] += cache.size(cache.stages[key])
    return [rows[k] for k in CACHED_KINDS if k in rows]


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"stages": sum(r["stages"] for r in rows), "bytes": sum(r["bytes"] for r in rows)}


def du(run_dirs: list[str | Path] = (), cache: str | Path | None = None) -> dict[str, Any]:
    runs = [read_run(d) for d in run_dirs]
    store = resolve_store(runs, cache)
    c = Cache.scan(store)
    kinds = _by_kind(c, c.stages)
    unfinished = [*c.partial, *c.deleting]
    partial = {"folders": len(unfinished), "bytes": sum(c.size(p) for p in unfinished)}
    total = {"stages": len(c.stages), "bytes": sum(r["bytes"] for r in kinds) + partial["bytes"]}
    out: dict[str, Any] = {"cache": str(store.root), "kinds": kinds, "partial": partial, "total": total}
    if runs:
        needed = {str(r.dir): needs(r, c) for r in runs}
        users: dict[str, int] = {}
        for keys in needed.values():
            for key in keys:
                users[key] = users.get(key, 0) + 1
        rows = []
        for run in runs:
            keys = needed[str(run.dir)]
            present = [k for k in keys if k in c.stages]
            shared = [k for k in present if users[k] > 1]
            rows.append({"run": str(run.dir), "stages": len([k for k in keys if kind_of(k) != "source"]),
                         "present": len(present), "bytes": sum(c.size(c.stages[k]) for k in present),
                         "shared": len(shared), "shared_bytes": sum(c.size(c.stages[k]) for k in shared),
                         "kinds": _by_kind(c, present)})
            rows[-1]["missing"] = rows[-1]["stages"] - rows[-1]["present"]
            rows[-1]["own_bytes"] = rows[-1]["bytes"] - rows[-1]["shared_bytes"]
        out["runs"] = rows
        other = [k for k in c.stages if k not in users]
        out["unneeded"] = {"stages": len(other), "bytes": sum(c.size(c.stages[k]) for k in other)}
    return out


def ls(run_dir: str | Path, cache: str | Path | None = None) -> dict[str, Any]:
    run = read_run(run_dir)
    store = resolve_store([run], cache)
    c = Cache.scan(store)
    order = {k: i for i, k in enumerate(KINDS)}
    rows = []
    for key in sorted(needs(run, c), key=lambda k: (order.get(kind_of(k), len(order)), k)):
        if kind_of(key) == "source":
            status, size = "external", None  # a prepared dataset or initial weights, outside the cache
        elif key in c.stages:
            status, size = "present", c.size(c.stages[key])
        else:
            status, size = "missing", None
        rows.append({"kind": kind_of(key), "key": key, "status": status, "bytes": size})
    counts = {s: sum(r["status"] == s for r in rows) for s in ("present", "missing", "external")}
    return {"run": str(run.dir), "cache": str(store.root), "stages": rows, "counts": counts,
            "bytes": sum(r["bytes"] or 0 for r in rows), "legacy": run.legacy}


def gc(keep: list[str | Path], cache: str | Path | None = None, dry_run: bool = False, wait: bool = False,
       partial_age: float = PARTIAL_AGE, on_wait=None) -> dict[str, Any]:
    """Delete every stage no kept run needs and every ``.partial`` folder older than ``partial_age``
    seconds, holding the cache's exclusive lock (a dry run takes none and deletes nothing)."""
    runs = [read_run(d) for d in keep]
    store = resolve_store(runs, cache)
    if not store.root.is_dir():
        return _gc(store, runs, Cache(store), dry_run, partial_age)
    if dry_run:
        return _gc(store, runs, Cache.scan(store), dry_run, partial_age)
    with store.lock(exclusive=True, wait=wait, on_wait=on_wait):
        return _gc(store, runs, Cache.scan(store), dry_run, partial_age)


def _gc(store: Store, runs: list[RunFolder], c: Cache, dry_run: bool, partial_age: float) -> dict[str, Any]:
    runs = [read_run(r.dir) for r in runs]  # again, under the lock: a run may have ended meanwhile
    kept: set[str] = set()
    for run in runs:  # every closure before anything is deleted: a bad record stops the gc untouched
        kept |= needs(run, c)
    doomed = [k for k in c.stages if k not in kept]
    cutoff = time.time() - partial_age
    stale = [p for p in c.partial if newest_mtime(p) < cutoff] + c.deleting
    freed = _by_kind(c, doomed)
    partial = {"folders": len(stale), "bytes": sum(c.size(p) for p in stale)}
    if not dry_run:
        for path in stale:  # first: a leftover tomb's name may be needed again below
            _remove(path, path)
        for key in doomed:
            _remove(c.stages[key], c.stages[key].with_name(key + DELETING))
    kept_present = [k for k in kept if k in c.stages]
    return {"cache": str(store.root), "dry_run": dry_run, "freed": freed, "partial": partial,
            "total": {"stages": len(doomed), "bytes": sum(r["bytes"] for r in freed) + partial["bytes"]},
            "kept": {"runs": len(runs), "stages": len(kept_present),
                     "bytes": sum(c.size(c.stages[k]) for k in kept_present),
                     "missing": len([k for k in kept if k not in c.stages and kind_of(k) != "source"])}}


def _remove(path: Path, tomb: Path) -> None:
    try:
        if tomb != path:
            os.replace(path, tomb)
        shutil.rmtree(tomb)
    except OSError as exc:
        raise HarnessError(f"{path}: cannot delete ({exc.strerror}); gc stopped there") from None


# -- text ------------------------------------------------------------------------------------------
def _table(rows: list[list[Any]], headers: list[str], text_columns: int = 1) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, disable_numparse=True,
                    colalign=("left",) * text_columns + ("right",) * (len(headers) - text_columns))


def _kind_rows(kinds: list[dict[str, Any]]) -> list[list[Any]]:
    return [[r["kind"], r["stages"], human(r["bytes"]), r["bytes"]] for r in kinds]


def format_du(d: dict[str, Any]) -> str:
    rows = _kind_rows(d["kinds"])
    if d["partial"]["folders"]:
        rows.append(["(unfinished)", d["partial"]["folders"], human(d["partial"]["bytes"]), d["partial"]["bytes"]])
    rows.append(["total", d["total"]["stages"], human(d["total"]["bytes"]), d["total"]["bytes"]])
    text = [f"cache {d['cache']}", _table(rows, ["kind", "stages", "size", "bytes"])]
    if "runs" in d:
        text.append("")
        text.append(_table([[r["run"], r["stages"], r["present"], r["missing"], human(r["bytes"]), r["bytes"],
                             r["shared"], human(r["own_bytes"])] for r in d["runs"]],
                           ["run", "stages", "present", "missing", "size", "bytes", "shared", "only this run"]))
        text.append("shared: stages another listed run also needs; only this run: what gc frees when the "
                    "others are kept and this one is not")
        u = d["unneeded"]
        text.append(f"needed by none of these runs: {u['stages']} stages, {human(u['bytes'])} ({u['bytes']} bytes)")
    return "\n".join(text)


def format_ls(d: dict[str, Any]) -> str:
    rows = [[r["kind"], r["key"], r["status"], "" if r["bytes"] is None else human(r["bytes"]),
             "" if r["bytes"] is None else r["bytes"]] for r in d["stages"]]
    n = d["counts"]
    text = [f"run {d['run']}, cache {d['cache']}", _table(rows, ["kind", "key", "status", "size", "bytes"], 3),
            f"{len(rows)} stages: {n['present']} present ({human(d['bytes'])}), {n['missing']} missing, "
            f"{n['external']} external (outside the cache)"]
    if d["legacy"]:
        text.append("note: run.json predates its list of stages; stages that neither cells.jsonl nor a cached "
                    "stage records are not shown")
    return "\n".join(text)


def format_gc(d: dict[str, Any]) -> str:
    verb = "would free" if d["dry_run"] else "freed"
    rows = _kind_rows(d["freed"])
    p = d["partial"]
    if p["folders"]:
        rows.append(["(unfinished, > 1 day)", p["folders"], human(p["bytes"]), p["bytes"]])
    rows.append(["total", d["total"]["stages"], human(d["total"]["bytes"]), d["total"]["bytes"]])
    k = d["kept"]
    head = f"cache {d['cache']}: {verb} {human(d['total']['bytes'])}"
    return "\n".join([
        head + (" (dry run: nothing deleted)" if d["dry_run"] else ""),
        _table(rows, ["kind", "stages", "size", "bytes"]),
        f"kept {k['stages']} stages ({human(k['bytes'])}) that {k['runs']} run folder(s) need"
        + (f"; {k['missing']} they need are not in the cache" if k["missing"] else "")])
