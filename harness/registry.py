"""Finds plugins (entry-point group ``harness``), calls their registrar hooks, keeps what they register.

Each plugin module is loaded and each of its hooks called under its own error handling, so one
broken plugin is reported and skipped instead of taking the harness down (unless ``strict``).

Which plugins load is chosen like pytest's ``-p no:NAME`` and datasette's ``DATASETTE_LOAD_PLUGINS``
(see :class:`Selection`); built-ins (the ``harness`` distribution's entry points) follow the same rules.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import pluggy

from harness import hookspecs
from harness.errors import HarnessError
from harness.interfaces import Adapter, Degradation, Executor, Plugin, Segmenter

KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "degradation": ("harness_register_degradations", Degradation),
    "adapter": ("harness_register_adapters", Adapter),
    "segmenter": ("harness_register_segmenters", Segmenter),
    "executor": ("harness_register_executors", Executor),
}
ALLOW_ENV, BLOCK_ENV, MODULES_ENV, TRACE_ENV = (
    "HARNESS_ALLOW_PLUGINS", "HARNESS_BLOCK_PLUGINS", "HARNESS_PLUGINS", "HARNESS_TRACE")


@dataclass
class Entry:
    kind: str
    name: str
    version: str
    origin: str  # "distribution version (entry point)" or the module that registered it
    cls: type[Plugin]
    summary: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "version": self.version, "origin": self.origin,
                "summary": self.summary}


@dataclass
class LoadError:
    origin: str
    error: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"origin": self.origin, "error": self.error}


@dataclass
class Skipped:
    """A plugin (or a whole package, ``kind`` and ``name`` empty) left out by the allow or block list."""

    origin: str
    reason: str
    kind: str = ""
    name: str = ""
    version: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "version": self.version, "origin": self.origin,
                "status": self.reason}


def _norm(text: str) -> str:
    """Names compare as pip compares distributions: case-insensitive, runs of ``-_.`` equal."""
    return re.sub(r"[-_.]+", "-", text.strip()).lower()


@dataclass(frozen=True)
class Selector:
    """One name from an allow or block list, and where it was given (for messages).

    ``KIND:NAME`` (kind one of :data:`KINDS`) matches one registered plugin; any other text matches a
    registered plugin of any kind with that name, an entry-point name, an entry point's module, a
    distribution name, ``DIST:ENTRY_POINT``, or a ``HARNESS_PLUGINS`` module.
    """

    text: str
    where: str

    def _split(self) -> tuple[str | None, str]:
        kind, sep, name = self.text.partition(":")
        if sep and kind.strip().lower() in KINDS:
            return kind.strip().lower(), _norm(name)
        return None, _norm(self.text)

    def matches_source(self, ids: Iterable[str]) -> bool:
        kind, name = self._split()
        return kind is None and name in {_norm(i) for i in ids}

    def matches_plugin(self, kind: str, name: str) -> bool:
        want_kind, want = self._split()
        return want == _norm(name) and want_kind in (None, kind)

    def __str__(self) -> str:
        if self.where.startswith("HARNESS_"):
            return f"{self.where}={self.text}"
        return f"{self.where}{self.text}" if self.where.endswith(":") else f"{self.where} {self.text}"


def _names(value: str | Iterable[str] | None) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    return [n.strip() for item in items for n in item.split(",") if n.strip()]


@dataclass(frozen=True)
class Selection:
    """Which plugins load: ``allow`` (when non-empty, only what matches), ``block`` (never what matches),
    extra plugin ``modules`` to import (``(module, where)``), and whether hook calls are traced."""

    allow: tuple[Selector, ...] = ()
    block: tuple[Selector, ...] = ()
    modules: tuple[tuple[str, str], ...] = ()
    trace: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, allow: Sequence[str] | None = None,
                 block: Sequence[str] = (), modules: Sequence[str] = (), trace: bool = False) -> "Selection":
        """Environment variables plus command-line options: ``allow`` given on the command line replaces
        ``HARNESS_ALLOW_PLUGINS``; blocks and modules add up."""
        env = os.environ if env is None else env
        allow_sel = ([Selector(n, "--allow-plugins") for n in _names(allow)] if allow
                     else [Selector(n, ALLOW_ENV) for n in _names(env.get(ALLOW_ENV))])
        block_sel = ([Selector(n, BLOCK_ENV) for n in _names(env.get(BLOCK_ENV))]
                     + [Selector(n, "-p no:") for n in _names(block)])
        mods = [(m, MODULES_ENV) for m in _names(env.get(MODULES_ENV))] + [(m, "-p") for m in _names(modules)]
        traced = trace or env.get(TRACE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
        return cls(tuple(allow_sel), tuple(block_sel), tuple(mods), traced)


@dataclass
class _Source:
    """Something that may hold hookimpls: an entry point or a module named in ``HARNESS_PLUGINS``."""

    label: str
    ids: tuple[str, ...]
    load: Callable[[], Any]
    pm_name: str | None = None


def _sources(group: str, modules: Iterable[tuple[str, str]]) -> list[_Source]:
    """Entry points, the host's own first (so a third party cannot take a built-in's name), then modules."""
    def order(ep: md.EntryPoint) -> tuple:
        dist = ep.dist.name if ep.dist else ""
        return (_norm(dist) != hookspecs.PROJECT, _norm(dist), ep.name)

    out: list[_Source] = []
    for ep in sorted(md.entry_points(group=group), key=order):
        dist = ep.dist
        origin = f"{dist.name} {dist.version}" if dist else ep.value
        ids = (ep.name, ep.module) + ((dist.name, f"{dist.name}:{ep.name}") if dist else ())
        out.append(_Source(f"{origin} ({ep.name} = {ep.value})", ids, ep.load, f"{origin}:{ep.name}"))
    for module_name, where in modules:
        out.append(_Source(f"{module_name} ({where})", (module_name,),
                           lambda m=module_name: importlib.import_module(m)))
    return out


@dataclass
class Registry:
    strict: bool = False
    selection: Selection | None = None  # None: read from the environment when loading entry points
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._origins: dict[str, str] = {}
        self._matched: set[Selector] = set()
        self._skipped_entries: dict[tuple[str, str], Skipped] = {}
        self._trace = self.pm.trace.root.get(hookspecs.PROJECT)
        self._tracing = False
        if self.selection and self.selection.trace:
            self.trace_to(lambda text: sys.stderr.write(text))

    def trace_to(self, writer: Callable[[str], object]) -> None:
        """Write every hook call, its arguments and what it registered through ``writer`` (pluggy tracing)."""
        self.pm.trace.root.setwriter(writer)
        if not self._tracing:
            self.pm.enable_tracing()
            self._tracing = True

    # -- loading ---------------------------------------------------------------------------------
    def load_entry_points(self, group: str = hookspecs.PROJECT) -> "Registry":
        if self.selection is None:
            self.selection = Selection.from_env()
            if self.selection.trace:
                self.trace_to(lambda text: sys.stderr.write(text))
        sel = self.selection
        sources = _sources(group, sel.modules)
        # allow names that match no package can only be plugin names: then every package must be imported
        plugin_names_allowed = any(not any(s.matches_source(src.ids) for src in sources) for s in sel.allow)
        for src in sources:
            self._load(src, import_anyway=plugin_names_allowed)
        for s in (*sel.allow, *sel.block):
            if s not in self._matched:
                message = f"{s}: no installed plugin, distribution, entry point or module has this name"
                if self.strict:
                    raise HarnessError(message)
                self.warnings.append(message)
        return self

    def _load(self, src: _Source, import_anyway: bool) -> None:
        sel = self.selection or Selection()
        blocked = self._first(sel.block, lambda s: s.matches_source(src.ids))
        allowed = not sel.allow or self._first(sel.allow, lambda s: s.matches_source(src.ids)) is not None
        if blocked or not (allowed or import_anyway):
            reason = f"blocked by {blocked}" if blocked else self._not_allowed()
            self.skipped.append(Skipped(src.label, reason))
            self._trace("skip", src.label, {"reason": reason})
            return
        self._trace("load", src.label)
        try:
            module = src.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the host
            self._fail(src.label, exc)
            return
        self._add(module, src.label, src.pm_name, source_allowed=allowed)

    def add_module(self, module_name: str) -> None:
        """Import a plugin module by name (``HARNESS_PLUGINS=pkg.mod,...``: plugins not installed as packages)."""
        self._load(_Source(f"{module_name} ({MODULES_ENV})", (module_name,),
                           lambda: importlib.import_module(module_name)), import_anyway=False)

    def add(self, plugin: Any, origin: str | None = None, name: str | None = None) -> None:
        """Register a module or object holding hookimpls and collect what it registers.

        The selection applies as to an entry point whose only name is the module's name."""
        sel = self.selection or Selection()
        origin = origin or getattr(plugin, "__name__", repr(plugin))
        ids = tuple(filter(None, [getattr(plugin, "__name__", None), name]))
        blocked = self._first(sel.block, lambda s: s.matches_source(ids))
        allowed = not sel.allow or self._first(sel.allow, lambda s: s.matches_source(ids)) is not None
        if blocked:
            self.skipped.append(Skipped(origin, f"blocked by {blocked}"))
            self._trace("skip", origin, {"reason": f"blocked by {blocked}"})
            return
        self._add(plugin, origin, name, source_allowed=allowed)

    def _add(self, plugin: Any, origin: str, name: str | None, source_allowed: bool) -> None:
        try:
            pname = self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001
            self._fail(origin, exc)
            return
        self._origins[pname] = origin
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        for kind, (hook_name, _) in KINDS.items():
            if not any(impl.plugin_name == pname for impl in getattr(self.pm.hook, hook_name).get_hookimpls()):
                continue
            register = _Register(lambda cls, k=kind, h=hook_name: self._register(k, cls, origin, h, source_allowed),
                                 origin)
            try:  # through pluggy (so tracing sees it), one plugin at a time (so one failure stays its own)
                self.pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
            except Exception as exc:  # noqa: BLE001
                self._fail(f"{origin} [{hook_name}]", exc)

    def _register(self, kind: str, cls: type, origin: str, hook_name: str, source_allowed: bool = True) -> None:
        base = KINDS[kind][1]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise HarnessError(f"registered {cls!r} is not a subclass of {base.__module__}.{base.__name__}")
        if not cls.name:
            raise HarnessError(f"{cls.__qualname__} has no 'name'")
        key = (kind, cls.name)
        reason = self._plugin_excluded(kind, cls.name, source_allowed)
        if reason:
            skip = Skipped(origin, reason, kind, cls.name, str(cls.version))
            self.skipped.append(skip)
            self._skipped_entries.setdefault(key, skip)
            self._trace("skip", kind, cls.name, {"reason": reason})
            return
        if key in self.entries:  # reported, and the rest of the same hook still registers
            self._fail(f"{origin} [{hook_name}]",
                       HarnessError(f"{kind} '{cls.name}' is already registered by {self.entries[key].origin}"))
            return
        summary = cls.summary or (cls.__doc__ or "").strip().split("\n")[0]
        self.entries[key] = Entry(kind, cls.name, str(cls.version), origin, cls, summary)
        self._trace("registered", kind, cls.name, f"version {cls.version}")

    def _plugin_excluded(self, kind: str, name: str, source_allowed: bool) -> str | None:
        sel = self.selection or Selection()
        blocked = self._first(sel.block, lambda s: s.matches_plugin(kind, name))
        allowed = self._first(sel.allow, lambda s: s.matches_plugin(kind, name)) is not None or source_allowed
        if blocked:
            return f"blocked by {blocked}"
        return None if allowed else self._not_allowed()

    def _not_allowed(self) -> str:
        sel = self.selection or Selection()
        where = sorted({s.where for s in sel.allow})
        return f"not in the allow list ({', '.join(where)})"

    def _first(self, selectors: Iterable[Selector], pred: Callable[[Selector], bool]) -> Selector | None:
        """The first matching selector (every match is remembered, for the unknown-name warning)."""
        hits = [s for s in selectors if pred(s)]
        self._matched.update(hits)
        return hits[0] if hits else None

    def _fail(self, origin: str, exc: BaseException) -> None:
        if self.strict:
            raise HarnessError(f"plugin {origin}: {type(exc).__name__}: {exc}") from exc
        self.errors.append(LoadError(origin, f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))))
        self._trace("error", origin, {"error": f"{type(exc).__name__}: {exc}"})

    # -- lookup ----------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.entries if k == kind)

    def get(self, kind: str, name: str) -> type[Plugin]:
        if (kind, name) not in self.entries:
            if (kind, name) in self._skipped_entries:
                skip = self._skipped_entries[(kind, name)]
                raise HarnessError(f"{kind} '{name}' from {skip.origin} is not loaded: {skip.reason}")
            known = ", ".join(self.names(kind)) or "none"
            hint = f"; plugin load errors: {len(self.errors)} (see `harness plugins`)" if self.errors else ""
            raise HarnessError(f"unknown {kind} '{name}' (available: {known}){hint}")
        return self.entries[(kind, name)].cls

    def create(self, kind: str, name: str, params: dict[str, Any] | None = None) -> Plugin:
        return self.get(kind, name)(**(params or {}))

    def listing(self) -> Iterable[Entry]:
        return sorted(self.entries.values(), key=lambda e: (e.kind, e.name))


class _Register:
    """The ``register`` callable handed to a hook; named after its plugin so traces say whose call it is."""

    def __init__(self, func: Callable[[type], None], origin: str):
        self._func, self._origin = func, origin

    def __call__(self, cls: type) -> None:
        self._func(cls)

    def __str__(self) -> str:
        return f"<register for {self._origin}>"


_default: Registry | None = None


def default_registry(strict: bool = False, selection: Selection | None = None) -> Registry:
    """The process-wide registry of installed plugins, loaded once (again when ``strict`` or an explicit
    ``selection`` asks for something the loaded one is not)."""
    global _default
    if (_default is None or (strict and not _default.strict)
            or (selection is not None and selection != _default.selection)):
        _default = Registry(strict=strict, selection=selection).load_entry_points()
    return _default
