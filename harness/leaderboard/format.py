"""How numbers, labels and tables are written: every section goes through these, so that the page reads the
same everywhere and two renders of one run are byte-identical."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from harness.leaderboard.schema import IDENTITY, ROW, SETTING

#: how each metric is shown: multiplier, decimals
SHOWN = {"PSNR": (1.0, 2), "SSIM": (1.0, 3), "KID": (1000.0, 1), "FD32": (1.0, 1)}
IOU_TITLES = {"bbox": "Boxes (bbox)", "segm": "Masks (segm)"}
SCALE_LABELS = {"AP_small": "small", "AP_medium": "medium", "AP_large": "large"}


@dataclass(frozen=True)
class Agg:
    """One table cell: its text and the notes it is marked with."""
    text: str
    notes: tuple[str, ...] = ()


def fmt(x: float, signed: bool, digits: int = 1) -> str:
    text = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    zero = f"{0:.{digits}f}"
    return zero if text.lstrip("+-") == zero else text


def row_order(rows: Iterable[tuple]) -> list[tuple]:
    return sorted(set(rows), key=lambda r: (r[0], r[1], r[2] != IDENTITY, r[2]))


def setting_order(settings: Iterable[tuple]) -> list[tuple]:
    return sorted(set(settings), key=lambda s: (s[0] != "none", s[0], s[1]))


def rows_of(df: pd.DataFrame) -> list[tuple]:
    """The distinct (segmenter, profile, adapter) of a frame, in table order."""
    return row_order(df[ROW].itertuples(index=False, name=None))


def settings_of(df: pd.DataFrame) -> list[tuple]:
    """The distinct (degradation, severity) of a frame, in column order."""
    return setting_order(df[SETTING].itertuples(index=False, name=None))


def is_real_target(degradation: str, severity: float) -> bool:
    """A real target is recorded as its label at severity 0 (degradations have severities from 1)."""
    return degradation != "none" and severity == 0


def setting_label(degradation: str, severity: float) -> str:
    if degradation == "none" and severity == 0:
        return "clean"
    if is_real_target(degradation, severity):
        return f"{degradation} (real target)"
    return f"{degradation} s{num(severity)}"


def num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def segmenter_label(segmenter: str, profile: str) -> str:
    return f"{segmenter} ({profile})" if profile else segmenter


def esc(text: Any) -> str:
    """One line of table-safe text: whitespace collapsed, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def seed_phrase(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return "single seed"
    return f"mean ± s.e. over {len(seeds)} seeds"


def md_table(header: list[str], rows: list[list[str]], n_left: int) -> list[str]:
    """Padded so the markdown source reads as a table too; the first ``n_left`` columns left-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < n_left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return [line(header), rule] + [line(r) for r in rows]


def grid(table: pd.DataFrame, col_labels: list[str]) -> list[str]:
    """A pivoted frame of Agg (index = ROW) as a table, with its notes numbered under it."""
    notes: dict[str, int] = {}
    body = []
    for (segmenter, profile, adapter), aggs in table.iterrows():
        cells = [esc(segmenter_label(segmenter, profile)), esc(adapter)]
        for agg in aggs:
            if not isinstance(agg, Agg):
                cells.append("")
                continue
            marks = [notes.setdefault(n, len(notes) + 1) for n in agg.notes]
            cells.append(agg.text + (f" [{','.join(map(str, marks))}]" if marks else ""))
        body.append(cells)
    out = md_table(["Segmenter", "Adapter", *map(esc, col_labels)], body, n_left=2) + [""]
    if notes:
        out += [f"- [{i}] {esc(n)}" for n, i in notes.items()] + [""]
    return out


def pivot(aggs: pd.Series, columns: list[str] | str, rows: list[tuple], cols: list) -> pd.DataFrame:
    """Aggs keyed by row + ``columns`` as a frame with exactly ``rows`` and ``cols``: absent ones become NaN,
    shown empty."""
    table = aggs.unstack(columns)
    return table.reindex(index=pd.MultiIndex.from_tuples(rows, names=ROW), columns=cols)
