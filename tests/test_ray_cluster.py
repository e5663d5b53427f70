"""Ray across nodes: a head and a second node started with ``ray start`` on this machine (two raylets, one CPU
each), ``harness run --executor ray --address`` driving them, and the second node killed while it runs a stage.

The run must finish on the head alone, every cell once, with a results.csv byte-identical to the local
executor's. ``hold`` (tests/cluster_plugins.py) parks a stage on the doomed node, so the kill always lands
inside a stage. Each node has its own temp dir and ports, and only the processes of those temp dirs are ever
killed (``ray stop`` would stop every Ray on the machine).
"""
from __future__ import annotations

import csv
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, SYNTHETIC, matrix_config, write_config

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")  # Ray ships it

RAY = Path(sys.executable).with_name("ray")
CELLS = 6
#: Ray >= 2.5x turns token authentication on when ~/.ray/auth_token exists (any local ray.init writes one),
#: and a joining node does not read that file: the test cluster and its driver use a token of their own
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_env(flags: Path, role: str) -> dict[str, str]:
    """What a node's workers see: harness and the test plugins importable (as if installed on the node), no
    plugin selection (the driver's travels with each task), and which node this is for ``hold``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "RAY_", "CLUSTER_TEST_"))}
    env.update(PYTHONPATH=str(ROOT), CLUSTER_TEST_FLAGS=str(flags), CLUSTER_TEST_NODE=role, OMP_NUM_THREADS="1",
               RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", **AUTH)
    return env


def driver_env() -> dict[str, str]:
    """One plugin module named by the environment, the other by ``-p`` (``harness_run``): both must reach
    the workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "RAY_", "CLUSTER_TEST_"))}
    env.update(PYTHONPATH=str(ROOT), HARNESS_PLUGINS="tests.fake_plugins", OMP_NUM_THREADS="1",
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", **AUTH)
    return env


def ray_start(temp: Path, env: dict[str, str], head: str | None = None) -> str:
    """``ray start`` one node with its own temp dir and ports; returns the head's address."""
    node_manager, object_manager, agent, agent_grpc, env_agent, metrics, port = free_ports(7)
    args = [str(RAY), "start", f"--temp-dir={temp}", "--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
            f"--object-store-memory={100 * 2**20}", f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}", "--min-worker-port=0", "--max-worker-port=0",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}", "--disable-usage-stats"]
    if head is None:
        args += ["--head", f"--port={port}", "--include-dashboard=false"]
    else:
        args += [f"--address={head}"]
    proc = subprocess.run(args, env=env, cwd=temp, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ray start failed:\n{proc.stdout}\n{proc.stderr}"
    return head or f"127.0.0.1:{port}"


def node_processes(temp: Path) -> list:
    """Every process of the node whose temp dir is ``temp``: those naming it on their command line (raylet,
    GCS, agents, monitors) and their descendants (the workers)."""
    found: dict[int, object] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(temp) in arg for arg in proc.info["cmdline"] or ()):
            found[proc.pid] = proc
            try:
                found.update((c.pid, c) for c in proc.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
    found.pop(os.getpid(), None)
    return list(found.values())


def kill_node(temp: Path) -> list[int]:
    procs = node_processes(temp)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=20)
    return [p.pid for p in procs]


@pytest.fixture
def cluster():
    """Head + a second ("doomed") node on this machine; both torn down whatever happens."""
    # short paths: Ray's unix sockets live under the temp dir and must fit in 107 bytes
    base = Path(tempfile.mkdtemp(prefix="hrc-", dir="/tmp"))
    head_temp, doomed_temp, flags = base / "head", base / "doomed", base / "flags"
    for d in (head_temp, doomed_temp, flags):
        d.mkdir()
    try:
        address = ray_start(head_temp, node_env(flags, "head"))
        ray_start(doomed_temp, node_env(flags, "doomed"), head=address)
        yield {"address": address, "doomed": doomed_temp, "flags": flags}
    finally:
        kill_node(doomed_temp)
        kill_node(head_temp)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def harness_run(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "-p", "tests.cluster_plugins", "run", str(cfg), "--quiet", *args]


@pytest.mark.timeout(240)
def test_a_matrix_survives_losing_a_node(tmp_path, cluster):
    raw = matrix_config({"generate": "synthetic", "params": SYNTHETIC}, adapters=["identity", "hold"],
                        degradations=["none", {"name": "gaussian_noise", "severities": [2, 4]}])
    cfg = write_config(tmp_path / "m.yaml", raw)
    env = driver_env()
    local = subprocess.run(harness_run(cfg, "--out", "local", "--cache", "cache-local"), cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stdout + local.stderr

    # a relative --cache: the nodes' workers run elsewhere, so the executor must send an absolute path
    driver = subprocess.Popen(
        harness_run(cfg, "--out", "ray", "--cache", "shared-cache", "--executor", "ray", "--address",
                    cluster["address"]),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        flags = cluster["flags"]
        deadline = time.monotonic() + 120
        while not (held := sorted(flags.glob("held-*.json"))) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if not held or driver.poll() is not None:
            driver.kill()
            pytest.fail("no stage ever ran on the second node, or the run ended before the node was killed "
                        f"(the test proves nothing); driver output:\n{driver.communicate()[0]}")
        worker = json.loads(held[0].read_text())
        assert psutil.Process(worker["ppid"]).name() == "raylet"
        killed = kill_node(cluster["doomed"])
        assert worker["pid"] in killed and worker["ppid"] in killed
        (flags / "released").touch()
        out, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, out
    assert f"{CELLS}/{CELLS} cells done, 0 failed" in out, out
    assert len(list(cluster["flags"].glob("held-*.json"))) == 1 and not psutil.pid_exists(worker["pid"])

    assert (tmp_path / "ray" / "results.csv").read_bytes() == (tmp_path / "local" / "results.csv").read_bytes()
    with open(tmp_path / "ray" / "results.csv", newline="") as f:
        rows = [tuple(r) for r in csv.reader(f)]
    assert len(rows) == len(set(rows)) and {r[3] for r in rows[1:]} == {"identity", "hold"}
    cells = [json.loads(line) for line in (tmp_path / "ray" / "cells.jsonl").read_text().splitlines()]
    labels = [(c["adapter"], c["degradation"], c["severity"], c["seed"]) for c in cells]
    assert len(labels) == len(set(labels)) == CELLS and {c["status"] for c in cells} == {"done"}
    assert not list((tmp_path / "shared-cache").glob("*/*.partial")), "a killed stage left its scratch folder"


def test_the_drivers_plugin_selection_is_what_workers_load(monkeypatch):
    """Environment and command line (``-p``, ``-p no:``, ``--allow-plugins``) flattened into the variables a
    worker's registry reads, which select the same plugins there."""
    import harness.registry
    from harness.registry import Registry, Selection
    from plugins.executors.ray import plugin_env

    monkeypatch.setenv("HARNESS_PLUGINS", "tests.fake_plugins")
    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "smooth")
    monkeypatch.delenv("HARNESS_ALLOW_PLUGINS", raising=False)
    monkeypatch.delenv("HARNESS_TRACE", raising=False)
    driver = Selection.from_env(modules=["tests.cluster_plugins"], block=["explode"], allow=["threshold", "hold"])
    monkeypatch.setattr(harness.registry, "_default", Registry(selection=driver))
    env = plugin_env()
    assert env == {"HARNESS_PLUGINS": "tests.fake_plugins,tests.cluster_plugins",
                   "HARNESS_ALLOW_PLUGINS": "threshold,hold", "HARNESS_BLOCK_PLUGINS": "smooth,explode"}
    worker = Selection.from_env(env)
    for part in ("allow", "block", "modules"):
        texts = lambda sel: [x[0] if isinstance(x, tuple) else x.text for x in getattr(sel, part)]  # noqa: E731
        assert texts(worker) == texts(driver)


def test_num_cpus_with_an_address_is_a_clear_error(registry):
    from harness.errors import HarnessError

    executor = registry.create("executor", "ray", {"address": "127.0.0.1:6379", "num_cpus": 2})
    with pytest.raises(HarnessError, match="num_cpus sizes a local Ray instance"):
        executor.run([], {"cache": "cache", "sources": {}}, lambda result: None)
