"""Built-in executors, registered through the ``harness`` entry point exactly like a third-party plugin."""
from harness.hookspecs import hookimpl
from plugins.executors.local import Local
from plugins.executors.ray import Ray

__all__ = ["Local", "Ray"]


@hookimpl
def harness_register_executors(register):
    register(Local)
    register(Ray)
