"""The leaderboard page: its sections in order, each rendered on its own and concatenated, so that a new
section is one new module in sections/ and one line here."""
from __future__ import annotations

import os
from pathlib import Path

from harness import atomic
from harness.leaderboard.run import Page, iou_types, load_page
from harness.leaderboard.sections import (baselines, budget, classes, delta, failed, featuregap, gap, header, methods,
                                          metrics, notes, plots, robustness, scale, summary)

BEFORE = (header, summary, robustness, baselines, gap, methods, featuregap, budget)
#: repeated for each IoU type, between BEFORE and AFTER
PER_IOU = (metrics, delta, scale, classes)
AFTER = (failed, notes, plots)


def _name(module) -> str:
    return module.__name__.rsplit(".", 1)[1]


def _text(lines: list[str]) -> str:
    """A section's lines as text that concatenates with the next section's into the page (empty: no section)."""
    return "\n".join(lines) + "\n" if lines else ""


def parts(page: Page) -> list[tuple[str, str]]:
    """(name, markdown) of every section in page order; a per-IoU section is named SECTION-IOU."""
    out = [(_name(m), _text(m.lines(page))) for m in BEFORE]
    for kind in iou_types(page.run):
        out += [(f"{_name(m)}-{kind}", _text(m.lines(page, kind))) for m in PER_IOU]
    return out + [(_name(m), _text(m.lines(page))) for m in AFTER]


def render(run_dir: str | Path | list, title: str | None = None, link_base: str | Path | None = None) -> str:
    """The whole leaderboard as one markdown string (ends with a newline). Several run folders (e.g. one per
    segmenter, computed on different machines) are shown side by side in the same tables.

    ``link_base`` is the folder the markdown will be written to, so that plot links resolve from there;
    without it they are relative to the (first) run folder."""
    page = load_page(run_dir, title, link_base)
    return "".join(text for _, text in parts(page)).rstrip("\n") + "\n"


def write(run_dir: str | Path | list, out_path: str | Path, title: str | None = None) -> Path:
    """Render and write atomically, so a reader never sees half a leaderboard."""
    out_path = Path(out_path)
    text = render(run_dir, title, link_base=out_path.parent)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic.mkstemp(out_path.parent, suffix=out_path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path
