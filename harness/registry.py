"""Finds plugins (entry-point group ``harness``), calls their registrar hooks, keeps what they register.

Each plugin module is loaded and each of its hooks called under its own error handling, so one
broken plugin is reported and skipped instead of taking the harness down (unless ``strict``).
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from harness import hookspecs
from harness.errors import HarnessError
from harness.interfaces import Adapter, Degradation, Plugin, Segmenter

KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "degradation": ("harness_register_degradations", Degradation),
    "adapter": ("harness_register_adapters", Adapter),
    "segmenter": ("harness_register_segmenters", Segmenter),
}


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
class Registry:
    strict: bool = False
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._origins: dict[str, str] = {}

    # -- loading ---------------------------------------------------------------------------------
    def load_entry_points(self, group: str = hookspecs.PROJECT) -> "Registry":
        for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
            dist = ep.dist
            origin = f"{dist.name} {dist.version}" if dist else ep.value
            label = f"{origin} ({ep.name} = {ep.value})"
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the host
                self._fail(label, exc)
                continue
            self.add(module, origin=label, name=f"{origin}:{ep.name}")
        for module_name in filter(None, os.environ.get("HARNESS_PLUGINS", "").split(",")):
            self.add_module(module_name.strip())
        return self

    def add_module(self, module_name: str) -> None:
        """Import a plugin module by name (``HARNESS_PLUGINS=pkg.mod,...``: plugins not installed as packages)."""
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001
            self._fail(f"{module_name} (HARNESS_PLUGINS)", exc)
            return
        self.add(module, origin=f"{module_name} (HARNESS_PLUGINS)")

    def add(self, plugin: Any, origin: str | None = None, name: str | None = None) -> None:
        """Register a module or object holding hookimpls and collect what it registers."""
        origin = origin or getattr(plugin, "__name__", repr(plugin))
        try:
            pname = self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001
            self._fail(origin, exc)
            return
        self._origins[pname] = origin
        for kind, (hook_name, _) in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == pname:
                    try:
                        impl.function(register=lambda cls, k=kind, h=hook_name: self._register(k, cls, origin, h))
                    except Exception as exc:  # noqa: BLE001
                        self._fail(f"{origin} [{hook_name}]", exc)

    def _register(self, kind: str, cls: type, origin: str, hook_name: str) -> None:
        base = KINDS[kind][1]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise HarnessError(f"registered {cls!r} is not a subclass of {base.__module__}.{base.__name__}")
        if not cls.name:
            raise HarnessError(f"{cls.__qualname__} has no 'name'")
        key = (kind, cls.name)
        if key in self.entries:  # reported, and the rest of the same hook still registers
            self._fail(f"{origin} [{hook_name}]",
                       HarnessError(f"{kind} '{cls.name}' is already registered by {self.entries[key].origin}"))
            return
        summary = cls.summary or (cls.__doc__ or "").strip().split("\n")[0]
        self.entries[key] = Entry(kind, cls.name, str(cls.version), origin, cls, summary)

    def _fail(self, origin: str, exc: BaseException) -> None:
        if self.strict:
            raise HarnessError(f"plugin {origin}: {type(exc).__name__}: {exc}") from exc
        self.errors.append(LoadError(origin, f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))))

    # -- lookup ----------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.entries if k == kind)

    def get(self, kind: str, name: str) -> type[Plugin]:
        if (kind, name) not in self.entries:
            known = ", ".join(self.names(kind)) or "none"
            hint = f"; plugin load errors: {len(self.errors)} (see `harness plugins`)" if self.errors else ""
            raise HarnessError(f"unknown {kind} '{name}' (available: {known}){hint}")
        return self.entries[(kind, name)].cls

    def create(self, kind: str, name: str, params: dict[str, Any] | None = None) -> Plugin:
        return self.get(kind, name)(**(params or {}))

    def listing(self) -> Iterable[Entry]:
        return sorted(self.entries.values(), key=lambda e: (e.kind, e.name))


_default: Registry | None = None


def default_registry(strict: bool = False) -> Registry:
    """The process-wide registry of installed plugins, loaded once."""
    global _default
    if _default is None or (strict and not _default.strict):
        _default = Registry(strict=strict).load_entry_points()
    return _default
