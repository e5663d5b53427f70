"""``ray``: each stage a Ray task, on a local Ray instance or a cluster (``pip install 'harness[ray]'``).

Stages wait for the tasks of the stages they read (Ray object references passed as arguments), ask for a GPU
when they train or run a network on one (``--device cuda`` or ``auto`` on a cluster with GPUs) and a CPU
otherwise, and are retried by Ray when their worker or its node dies (``max_retries``). Every node must see
the stage cache and the datasets at the same paths (a shared file system) and have harness, its
dependencies and the plugins installed: ``runtime_env`` cannot ship torch or a compiled mmcv. Workers on a
cluster do not inherit the driver's environment, so the driver's plugin selection (``HARNESS_PLUGINS``,
``-p``, allow and block lists) travels with each task. A stage publishes its output by one atomic rename and
is skipped when its output exists, so a retried task, or a killed driver restarted with the same command,
resumes from the cache and never leaves a duplicate.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from harness.errors import HarnessError
from harness.interfaces import Executor
from harness.stages import execute, skipped

#: stage kinds that run a network when the device is a GPU
GPU_KINDS = ("train", "fit", "adapt", "predict", "trainset")


def _run_after(stage: dict[str, Any], context: dict[str, Any], *inputs: dict[str, Any]) -> dict[str, Any]:
    """Runs on a worker once Ray has the results of ``inputs`` (the stages ``stage`` reads)."""
    for result in inputs:
        if result["status"] in ("failed", "skipped"):
            return skipped(stage, result["key"])
    return execute(stage, context)


def plugin_env() -> dict[str, str]:
    """The driver's plugin selection as the ``HARNESS_*`` variables a worker's registry reads (unset ones left
    out, so that a worker keeps what its node sets)."""
    from harness.registry import ALLOW_ENV, BLOCK_ENV, MODULES_ENV, TRACE_ENV, default_registry

    sel = default_registry().selection
    if sel is None:
        return {}
    env = {MODULES_ENV: ",".join(m for m, _ in sel.modules), ALLOW_ENV: ",".join(s.text for s in sel.allow),
           BLOCK_ENV: ",".join(s.text for s in sel.block), TRACE_ENV: "1" if sel.trace else ""}
    return {k: v for k, v in env.items() if v}


class Ray(Executor):
    """Stages as Ray tasks with resource requests, stage dependencies as object references."""

    name = "ray"
    version = "1"
    summary = "a Ray cluster (harness[ray]): stages as tasks, GPU requests for network stages, retries"
    params = {"address": None, "max_retries": 3, "cpus_per_stage": 1, "gpus": "auto", "num_cpus": None}
    runtime_params = ("address", "max_retries", "cpus_per_stage", "gpus", "num_cpus")

    def _gpu(self, ray, context: dict[str, Any]) -> bool:
        wanted = self.config["gpus"]
        device = context.get("device") or "auto"
        if wanted is False or device == "cpu":
            return False
        if wanted is True or device.startswith("cuda"):
            return True
        return ray.cluster_resources().get("GPU", 0) > 0

    def run(self, stages: list[dict[str, Any]], context: dict[str, Any],
            on_result: Callable[[dict[str, Any]], None]) -> None:
        try:
            import ray
        except ImportError:
            raise HarnessError("executor 'ray' needs Ray: pip install 'harness[ray]'") from None
        if self.config["address"] and self.config["num_cpus"] is not None:
            raise HarnessError("executor 'ray': num_cpus sizes a local Ray instance; a cluster at --address "
                               "has the CPUs its nodes were started with (ray start --num-cpus)")
        # workers run in their node's folder, not the driver's
        context = {**context, "cache": os.path.abspath(context["cache"])}
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.config["address"], num_cpus=self.config["num_cpus"], include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        try:
            task = ray.remote(_run_after)
            env = plugin_env()
            runtime_env = {"runtime_env": {"env_vars": env}} if env else {}
            gpu = self._gpu(ray, context)
            refs: dict[str, Any] = {}
            for stage in stages:
                inputs = [refs[k] for k in stage["inputs"].values() if k in refs]
                options = {"num_cpus": self.config["cpus_per_stage"], "max_retries": self.config["max_retries"],
                           "num_gpus": 1 if gpu and stage["kind"] in GPU_KINDS else 0, **runtime_env}
                refs[stage["key"]] = task.options(**options).remote(stage, context, *inputs)
            key_of = {ref: key for key, ref in refs.items()}
            pending = list(refs.values())
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task that died more often than max_retries
                        result = {"key": key_of[ref], "status": "failed", "seconds": 0.0,
                                  "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                    on_result(result)
        finally:
            if started:
                ray.shutdown()
