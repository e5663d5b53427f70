"""``train_stats.json``, which both built-in segmenters leave in their model folder: what their budget reads."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def budget(out_dir: Path, log=None) -> dict[str, Any] | None:
    """``Plugin.budget`` from train_stats.json; ``schedule_iters`` is the profile's (before ``max_iters``), and a
    model trained before the file held it gives its iterations only. With the training's loss ``log`` (whose
    ``seconds`` column sums the logged iteration times), its training seconds over every resume, which the
    stage's own clock (the last process only) would understate."""
    path = Path(out_dir) / "train_stats.json"
    if not path.is_file():
        return None
    stats = json.loads(path.read_text())
    out = {"iterations": stats.get("iters"), "schedule_iterations": stats.get("schedule_iters"),
           "batch": stats.get("batch_size"), "crop": stats.get("input_size"), "device": stats.get("device")}
    if log is not None and "seconds" in log.columns and len(log):
        out["seconds"] = round(float(log["seconds"].iloc[-1]), 1)
    return out


def _with_seconds(rows: dict[int, dict], per_iter: dict[int, float]):
    """The rows by iteration as a DataFrame, with ``seconds``: the training time up to each logged iteration,
    each interval's mean seconds per iteration times its iterations (each iteration counted once)."""
    import pandas as pd

    df = pd.DataFrame([rows[k] for k in sorted(rows)])
    if len(per_iter) == len(rows):
        steps = df["iteration"].diff().fillna(df["iteration"].iloc[0])
        df["seconds"] = (steps * df["iteration"].map(per_iter)).cumsum()
    return df


#: a training log line of tv-mask-rcnn's loops: ``iter DONE/MAX lr LR NAME VALUE ... s/it SECONDS``
_LOG_LINE = re.compile(r"\biter (\d+)/\d+ lr (\S+) (.*?) s/it (\S+)\s*$")


def text_log_losses(train_log: Path):
    """Loss curve of a ``train.log`` written by tv-mask-rcnn's loops (plain and self-training): one row per
    logged interval (means over it), columns iteration, each loss, lr, seconds; a resumed training's repeated
    iterations keep their last line. None without a log or a logged interval."""
    path = Path(train_log)
    if not path.is_file():
        return None
    rows, per_iter = {}, {}
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.search(line)
        if not m:
            continue
        words = m.group(3).split()
        row = {"iteration": int(m.group(1))}
        row.update((k, float(v)) for k, v in zip(words[::2], words[1::2]))
        row["lr"] = float(m.group(2))
        rows[row["iteration"]] = row
        per_iter[row["iteration"]] = float(m.group(4))
    return _with_seconds(rows, per_iter) if rows else None


def mmengine_losses(work: Path):
    """Loss curve of an mmengine training from its ``vis_data/scalars.json`` files (one per start or resume,
    in ``work/<timestamp>/``): iteration, every ``loss*`` scalar, lr, seconds (from mmengine's ``time``); a
    resume's repeated iterations keep the last run's values. None when nothing was logged."""
    rows, per_iter = {}, {}
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
            if "time" in rec:
                per_iter[row["iteration"]] = float(rec["time"])
    return _with_seconds(rows, per_iter) if rows else None
