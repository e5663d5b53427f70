"""Cells per minute of one matrix under each executor (not a test: the figures depend on the machine and its load).

    python benchmarks/executors.py [--test-images 24] [--executors local,local:2,ray:2]

The matrix: the `tiny` MMDetection segmenter (50 iterations: its predictions cost what a real model's do),
4 adapters x 4 degradations x 2 severities on a generated synthetic dataset: 32 cells. The segmenter is
trained once into a base cache first; every executor then starts from a copy of that cache, so each times
the same degrade/adapt/predict/evaluate work. Results must be identical across executors (checked).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from harness import config, matrix  # noqa: E402
from harness.cache import Store  # noqa: E402
from harness.registry import default_registry  # noqa: E402


def build(work: Path, test_images: int) -> Path:
    cfg = {
        "name": "executors-bench",
        "dataset": {"generate": "synthetic", "params": {"n_train": 16, "n_val": 2, "n_test": test_images,
                                                        "size": 128}},
        "segmenters": [{"name": "mmdet-mask-rcnn", "profile": "tiny", "params": {"max_iters": 50}}],
        "adapters": ["identity", "median", "bilateral", "nlm"],
        "degradations": ["gaussian_noise", "motion_blur", "jpeg", "domain_b"],
        "severities": [2, 4],
    }
    path = work / "matrix.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def executor(registry, spec: str):
    name, _, n = spec.partition(":")
    if name == "local":
        return registry.create("executor", "local", {"workers": int(n or 1)})
    return registry.create("executor", "ray", {"num_cpus": int(n or 2)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-images", type=int, default=24)
    ap.add_argument("--executors", default="local,local:2,ray:2")
    args = ap.parse_args()
    registry = default_registry()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = config.load(build(work, args.test_images), registry)
        base = work / "base-cache"
        start = time.perf_counter()
        matrix.compute(cfg, registry, {"train"}, store=Store(base), progress=False)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; segmenter trained once in "
              f"{time.perf_counter() - start:.0f} s")
        reference = None
        for spec in args.executors.split(","):
            cache = work / f"cache-{spec.replace(':', '-')}"
            shutil.copytree(base, cache)
            start = time.perf_counter()
            summary = matrix.run(cfg, registry, out=work / f"run-{spec}", store=Store(cache), progress=False,
                                 executor=executor(registry, spec))
            minutes = (time.perf_counter() - start) / 60
            done = summary["cells"]["done"]
            results = (work / f"run-{spec}" / "results.csv").read_text()
            reference = reference or results
            print(f"{spec:>8}: {done}/{summary['cells']['total']} cells in {minutes * 60:6.1f} s = "
                  f"{done / minutes:6.1f} cells/min; results {'identical' if results == reference else 'DIFFER'}; "
                  f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
