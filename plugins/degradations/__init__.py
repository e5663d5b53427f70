"""Built-in degradations, registered through the ``harness`` entry point exactly like a third-party plugin."""
from harness.hookspecs import hookimpl
from plugins.degradations.blur import MotionBlur
from plugins.degradations.chain import DomainB
from plugins.degradations.corruptions import CORRUPTIONS
from plugins.degradations.jpeg import Jpeg
from plugins.degradations.noise import GaussianNoise
from plugins.degradations.twin import Twin

__all__ = ["GaussianNoise", "MotionBlur", "Jpeg", "DomainB", "Twin"]


@hookimpl
def harness_register_degradations(register):
    register(GaussianNoise)
    register(MotionBlur)
    register(Jpeg)
    register(DomainB)
    register(Twin)
    for cls in CORRUPTIONS:
        register(cls)
