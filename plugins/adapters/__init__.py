"""Built-in adapters, registered through the `harness` entry-point group like any third-party plugin."""
from harness.hookspecs import hookimpl
from plugins.adapters.identity import Identity
from plugins.adapters.classical import CLASSICAL
from plugins.adapters.cyclegan import CycleGAN
from plugins.adapters.dncnn import DnCNN
from plugins.adapters.fda import FDA
from plugins.adapters.illumination import ILLUMINATION
from plugins.adapters.taskaware import TaskAware


@hookimpl
def harness_register_adapters(register):
    register(Identity)
    for cls in [*CLASSICAL, *ILLUMINATION, FDA]:
        register(cls)
    register(CycleGAN)
    register(DnCNN)
    register(TaskAware)
