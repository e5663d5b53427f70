"""``train_stats.json``, which both built-in segmenters leave in their model folder: what their budget reads."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def budget(out_dir: Path) -> dict[str, Any] | None:
    """``Plugin.budget`` from train_stats.json; ``schedule_iters`` is the profile's (before ``max_iters``), and a
    model trained before the file held it gives its iterations only."""
    path = Path(out_dir) / "train_stats.json"
    if not path.is_file():
        return None
    stats = json.loads(path.read_text())
    return {"iterations": stats.get("iters"), "schedule_iterations": stats.get("schedule_iters"),
            "batch": stats.get("batch_size"), "crop": stats.get("input_size"), "device": stats.get("device")}
