"""Where a matrix's time goes: seconds by stage kind for each run folder given, side by side.

    python benchmarks/stage_times.py RUN_DIR [RUN_DIR ...] [--cache DIR]
    python benchmarks/stage_times.py --caches CACHE [CACHE ...]

Reads the stage keys from each run.json (``stages``) and each stage's ``seconds.txt`` from the cache the run
names (or ``--cache``). A stage another run computed counts where its seconds were spent; a stage found in the
cache without ``seconds.txt`` (a source dataset) counts as 0. ``--caches`` sums every stage of each cache
instead: for caches that each hold one run, e.g. one made by an older revision whose run.json lists no stages.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.stages import KINDS


def stage_seconds(run_dir: Path, cache: Path | None) -> dict[str, tuple[int, float]]:
    info = json.loads((run_dir / "run.json").read_text())
    if "stages" not in info:
        raise SystemExit(f"{run_dir / 'run.json'}: no 'stages' list (made before run folders recorded them)")
    root = Path(cache or info["cache"])
    out: dict[str, tuple[int, float]] = {}
    for key in info["stages"]:
        kind = key.split("-", 1)[0]
        seconds = root / kind / key / "seconds.txt"
        n, total = out.get(kind, (0, 0.0))
        out[kind] = (n + 1, total + (float(seconds.read_text()) if seconds.is_file() else 0.0))
    return out


def cache_seconds(root: Path) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    for kind in KINDS:
        for stage in sorted((root / kind).glob(f"{kind}-*")) if (root / kind).is_dir() else []:
            seconds = stage / "seconds.txt"
            n, total = out.get(kind, (0, 0.0))
            out[kind] = (n + 1, total + (float(seconds.read_text()) if seconds.is_file() else 0.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--caches", nargs="+", type=Path, help="sum whole caches instead of runs' stages")
    args = parser.parse_args()
    if args.caches:
        tables = {str(root): cache_seconds(root) for root in args.caches}
    elif args.runs:
        tables = {str(run): stage_seconds(run, args.cache) for run in args.runs}
    else:
        parser.error("give run folders or --caches")
    kinds = [k for k in KINDS if any(k in t for t in tables.values())]
    print("| stage kind | " + " | ".join(f"{Path(r).name}: stages, s" for r in tables) + " |")
    print("|---|" + "---:|" * len(tables))
    for kind in kinds:
        cells = [f"{t[kind][0]}, {t[kind][1]:.1f}" if kind in t else "—" for t in tables.values()]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    totals = [f"{sum(n for n, _ in t.values())}, {sum(s for _, s in t.values()):.1f}" for t in tables.values()]
    print("| all | " + " | ".join(totals) + " |")


if __name__ == "__main__":
    main()
