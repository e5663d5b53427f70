"""``train_stats.json``, which both built-in segmenters leave in their model folder: what their budget reads."""
from __future__ import annotations

import json
import re
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


#: a training log line of tv-mask-rcnn's loops: ``iter DONE/MAX lr LR NAME VALUE ... s/it SECONDS``
_LOG_LINE = re.compile(r"\biter (\d+)/\d+ lr (\S+) (.*?) s/it (\S+)\s*$")


def text_log_losses(train_log: Path):
    """Loss curve of a ``train.log`` written by tv-mask-rcnn's loops (plain and self-training): one row per
    logged interval (means over it), columns iteration, each loss, lr; a resumed training's repeated
    iterations keep their last line. None without a log or a logged interval."""
    import pandas as pd

    path = Path(train_log)
    if not path.is_file():
        return None
    rows = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.search(line)
        if not m:
            continue
        words = m.group(3).split()
        row = {"iteration": int(m.group(1))}
        row.update((k, float(v)) for k, v in zip(words[::2], words[1::2]))
        row["lr"] = float(m.group(2))
        rows[row["iteration"]] = row
    return pd.DataFrame([rows[k] for k in sorted(rows)]) if rows else None


def mmengine_losses(work: Path):
    """Loss curve of an mmengine training from its ``vis_data/scalars.json`` files (one per start or resume,
    in ``work/<timestamp>/``): iteration, every ``loss*`` scalar, lr; a resume's repeated iterations keep the
    last run's values. None when nothing was logged."""
    import pandas as pd

    rows = {}
    for path in sorted(Path(work).glob("*/vis_data/scalars.json")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # the half-written last line of a killed run
            if "iter" not in rec or not any(k.startswith("loss") for k in rec):
                continue
            row = {"iteration": int(rec["iter"])}
            row.update((k, float(v)) for k, v in rec.items() if k.startswith("loss"))
            if "lr" in rec:
                row["lr"] = float(rec["lr"])
            rows[row["iteration"]] = row
    return pd.DataFrame([rows[k] for k in sorted(rows)]) if rows else None
