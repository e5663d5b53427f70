"""Built-in adapters, registered through the `harness` entry-point group like any third-party plugin."""
from harness.hookspecs import hookimpl
from plugins.adapters.identity import Identity


@hookimpl
def harness_register_adapters(register):
    register(Identity)
