"""Test double of the Ray multi-node test (tests/test_ray_cluster.py), loaded with ``HARNESS_PLUGINS``.

``hold`` is the identity adapter, except inside that test: there it parks its stage on the node about to be
killed, so the kill always lands in the middle of a stage. Which node a worker is on and where the flag
files live come from the environment of each node's ``ray start``, never from params, so the stage keys
(and the results) are those of a plain run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from harness.hookspecs import hookimpl
from harness.interfaces import Adapter

FLAGS_ENV, NODE_ENV = "CLUSTER_TEST_FLAGS", "CLUSTER_TEST_NODE"
#: how long a held stage waits before giving up (the test kills its node within seconds)
PATIENCE_S = 120.0


def _hold() -> None:
    """On the node named ``doomed``: announce this worker (pid, parent = its raylet) and wait to be killed.
    On any other node: wait until the test says the doomed node is gone, so that one CPU stays busy and
    the doomed node is sure to pick up a ``hold`` stage."""
    flags = os.environ.get(FLAGS_ENV)
    if not flags:
        return
    deadline = time.monotonic() + PATIENCE_S
    if os.environ.get(NODE_ENV) == "doomed":
        record = json.dumps({"pid": os.getpid(), "ppid": os.getppid()})
        tmp = Path(flags) / f".held-{os.getpid()}"
        tmp.write_text(record)
        os.replace(tmp, Path(flags) / f"held-{os.getpid()}.json")
        while time.monotonic() < deadline:
            time.sleep(0.1)
        raise RuntimeError("hold: this node was never killed")
    while not (Path(flags) / "released").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


class Hold(Adapter):
    """Identity; in the multi-node test, a stage that is running when its node dies."""

    name = "hold"
    version = "1"
    params: dict = {}

    def adapt_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        _hold()
        return list(images)

    def adapt(self, image: np.ndarray) -> np.ndarray:
        return image


@hookimpl
def harness_register_adapters(register):
    register(Hold)
