"""``local``: stages in this process, or in a pool of worker processes on this machine."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable

from harness.errors import HarnessError
from harness.interfaces import Executor
from harness.stages import blocked_by, execute, skipped


def _limit_threads(threads: int) -> None:
    """Each of N workers gets cores/N torch/OpenMP threads, set before a stage imports torch."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


class Local(Executor):
    """Stages in order in this process (``workers: 1``, the default) or in a process pool of ``workers``
    processes (0 = one per core), each stage started as soon as the stages it reads are done."""

    name = "local"
    version = "1"
    summary = "this machine: stages in this process (workers 1) or a process pool (workers N, 0 = per core)"
    params = {"workers": 1}
    runtime_params = ("workers",)

    def __init__(self, **params: Any):
        super().__init__(**params)
        workers = self.config["workers"]
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise HarnessError(f"executor 'local': workers must be an integer >= 0, got {workers!r}")

    def run(self, stages: list[dict[str, Any]], context: dict[str, Any],
            on_result: Callable[[dict[str, Any]], None]) -> None:
        workers = self.config["workers"] or os.cpu_count() or 1
        results: dict[str, dict[str, Any]] = {}

        def finish(result: dict[str, Any]) -> None:
            results[result["key"]] = result
            on_result(result)

        if workers == 1:
            for stage in stages:
                cause = blocked_by(stage, results)
                finish(skipped(stage, cause) if cause else execute(stage, context))
            return
        keys = {s["key"] for s in stages}
        waiting, running = list(stages), {}
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_limit_threads, initargs=(threads,)) as pool:
            while waiting or running:
                blocked = []
                for stage in waiting:
                    if not all(k in results for k in stage["inputs"].values() if k in keys):
                        blocked.append(stage)
                    elif cause := blocked_by(stage, results):
                        finish(skipped(stage, cause))
                    else:
                        running[pool.submit(execute, stage, context)] = stage
                if len(blocked) < len(waiting):  # something was resolved: look again before waiting
                    waiting = blocked
                    if not running:
                        continue
                waiting = blocked
                if not running:
                    raise HarnessError(f"stage {waiting[0]['key']} waits for an input that is not in the plan")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    finish(future.result())
