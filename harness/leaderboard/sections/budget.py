"""Training budget: what every trainable method of the run cost (each segmenter training or fine-tune and each
adapter fit), so that a row's AP is read beside the iterations, images and time it was given. From run.json
``budgets`` (written by the run from each stage's budget.json); rows trained for fewer iterations than their
profile's schedule are marked, as they are not the method at its intended budget."""
from __future__ import annotations

from typing import Any

from harness.leaderboard.format import esc, md_table, num, segmenter_label
from harness.leaderboard.run import Page

SHORT = ("trained for fewer iterations than its profile's schedule (a max_iters-style override or a partial run): "
         "not the method at its intended budget")
DASH = "—"


def _number(value: Any) -> str:
    return DASH if value is None else f"{int(value):,}".replace(",", " ")


def _time(seconds: Any) -> str:
    if seconds is None:
        return DASH
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def _iterations(b: dict[str, Any], notes: dict[str, int]) -> str:
    done, schedule = b.get("iterations"), b.get("schedule_iterations")
    if done is None:
        return DASH
    if schedule is not None and int(done) < int(schedule):
        return f"{_number(done)} of {_number(schedule)} [{notes.setdefault(SHORT, len(notes) + 1)}]"
    return _number(done)


def _order(b: dict[str, Any]) -> tuple:
    return (b.get("kind") != "train", str(b.get("segmenter") or ""), str(b.get("adapter") or ""),
            str(b.get("fitted_on") or ""), int(b.get("seed") or 0))


def lines(page: Page) -> list[str]:
    budgets = page.run.meta.get("budgets") or []
    if not budgets:
        return []
    notes: dict[str, int] = {}
    body = []
    for b in sorted(budgets, key=_order):
        segmenter = segmenter_label(b["segmenter"], b.get("profile") or "") if b.get("segmenter") else DASH
        crop = DASH if b.get("crop") is None else num(b["crop"])
        body.append([esc("train" if b.get("kind") == "train" else "fit"), esc(segmenter), esc(b.get("adapter") or DASH),
                     esc(b.get("fitted_on") or DASH), esc(b.get("device") or DASH), DASH if b.get("seed") is None else str(b["seed"]),
                     _iterations(b, notes), _number(b.get("batch")), _number(b.get("images_seen")), crop,
                     _time(b.get("seconds"))])
    out = ["## Training budget",
           "",
           "Every segmenter training and adapter fit of the run: iterations done (of the profile's schedule where "
           "fewer), samples per iteration, images seen (iterations × batch), training crop or input side in px, "
           "training time and device. A stage cached before budgets were recorded shows its wall time only.", ""]
    out += md_table(["Stage", "Segmenter", "Adapter", "Trained on", "Device", "Seed", "Iterations", "Batch",
                     "Images seen", "Crop px", "Time"], body, 5) + [""]
    if notes:
        out += [f"- [{i}] {esc(n)}" for n, i in notes.items()] + [""]
    return out
