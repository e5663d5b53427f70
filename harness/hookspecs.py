"""The hooks a harness plugin may implement.

Every hook is a *registrar* (as in tox): the host calls it once with a ``register`` callable and the
plugin calls ``register(SomeClass)`` for each thing it provides. The classes derive from the bases in
:mod:`harness.interfaces`. Built-in plugins (``plugins/``) use these hooks exactly as a third-party
package does: they are found through the ``harness`` entry-point group, e.g. in ``pyproject.toml``::

    [project.entry-points.harness]
    my_adapters = "my_package.adapters"      # a module with @hookimpl functions

A plugin module that fails to import, or a hook that raises, is reported by ``harness plugins`` and
skipped; the rest of the harness keeps working (``--strict`` makes such failures fatal).
"""
from __future__ import annotations

import pluggy

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def harness_register_degradations(register):
    """Register image degradations (domain A → domain B), subclasses of
    :class:`harness.interfaces.Degradation`. Call ``register(cls)`` once per class."""


@hookspec
def harness_register_adapters(register):
    """Register image-domain adapters (domain B → toward domain A), subclasses of
    :class:`harness.interfaces.Adapter`. Call ``register(cls)`` once per class."""


@hookspec
def harness_register_segmenters(register):
    """Register instance segmenters (train on COCO data, predict COCO results), subclasses of
    :class:`harness.interfaces.Segmenter`. Call ``register(cls)`` once per class."""


@hookspec
def harness_register_executors(register):
    """Register matrix executors (where stages run: this process, a process pool, a Ray cluster), subclasses
    of :class:`harness.interfaces.Executor`. Call ``register(cls)`` once per class."""
