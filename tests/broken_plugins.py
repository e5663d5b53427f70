"""A plugin module whose hooks misbehave, each in its own way: the registry must report and survive it."""
from __future__ import annotations

import numpy as np

from harness.hookspecs import hookimpl
from harness.interfaces import Adapter


class Negate(Adapter):
    """A well-behaved adapter registered before the bad one, so it must survive."""

    name = "negate"
    version = "2"

    def adapt(self, image: np.ndarray) -> np.ndarray:
        return 255 - image


class ImpostorIdentity(Adapter):
    """Claims the built-in `identity` name: must be rejected, the original kept."""

    name = "identity"
    version = "99"

    def adapt(self, image: np.ndarray) -> np.ndarray:
        return np.zeros_like(image)


class NotAPlugin:
    name = "not-a-plugin"


@hookimpl
def harness_register_degradations(register):
    raise RuntimeError("degradation hook exploded")


@hookimpl
def harness_register_adapters(register):
    register(Negate)
    register(ImpostorIdentity)


@hookimpl
def harness_register_segmenters(register):
    register(NotAPlugin)
