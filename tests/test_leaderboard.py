"""Leaderboard rendering: a byte-exact golden file plus hand-computed numbers on small synthetic runs."""
from __future__ import annotations

import csv
import difflib
import json
import shutil
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.leaderboard import render, write

FIXTURES = Path(__file__).parent / "fixtures"
RUN_SMALL = FIXTURES / "run_small"
EXPECTED = FIXTURES / "run_small.expected.md"
COLUMNS = "cell,segmenter,profile,adapter,degradation,severity,seed,iou_type,metric,category,value,note".split(",")


def _section(text: str, heading: str) -> str:
    """The text from a heading line to the next heading of any level."""
    start = text.index(heading + "\n")
    end = text.find("\n#", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def _rows(section: str) -> list[list[str]]:
    """Header then body rows of the first table in a section (the rule line skipped)."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[:1] + lines[2:]]


def _table_cell(section: str, row: tuple[str, str], column: str) -> str:
    header, *body = _rows(section)
    for cells in body:
        if (cells[0], cells[1]) == row:
            return cells[header.index(column)]
    raise AssertionError(f"row {row} not in table:\n{section}")


def _make_run(root: Path, cells: list[dict], rows: list[dict]) -> Path:
    """A run directory from cell dicts and result rows (missing keys of a row come from its cell)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.json").write_text(json.dumps({"name": root.name, "config_hash": "h", "finished": None}))
    with open(root / "cells.jsonl", "w") as f:
        for c in cells:
            f.write(json.dumps({"status": "done", "error": None, **c}) + "\n")
    by_id = {c["cell"]: c for c in cells}
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            base = {k: by_id[r["cell"]][k] for k in COLUMNS[1:7]}
            w.writerow({"iou_type": "bbox", "category": "all", "note": "", **base, **r})
    return root


def _cell(cid: str, adapter: str = "identity", degradation: str = "none", severity: int = 0, seed: int = 0,
          **extra) -> dict:
    return {"cell": cid, "segmenter": "mrcnn", "profile": "smoke", "adapter": adapter,
            "degradation": degradation, "severity": severity, "seed": seed, **extra}


def test_golden_run_small_matches_reference():
    got = render(RUN_SMALL)
    want = EXPECTED.read_text(encoding="utf-8")
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "expected", "rendered"))
        pytest.fail("rendered leaderboard differs from tests/fixtures/run_small.expected.md:\n" + diff)


def test_delta_is_paired_per_seed_against_identity():
    text = render(RUN_SMALL)
    bbox = _section(text, "### ΔAP vs identity — bbox, ×100, paired by seed, mean ± s.e. over 2 seeds")
    # clean: clahe - identity = (0.43 - 0.40, 0.46 - 0.42) = (+3, +4) -> mean +3.5, s.e. 0.5
    assert _table_cell(bbox, ("maskrcnn_r50 (smoke)", "clahe"), "clean") == "+3.5 ± 0.5"
    # noise s3: seed 1 of clahe failed, so only seed 0 pairs: 0.35 - 0.30
    assert _table_cell(bbox, ("maskrcnn_r50 (smoke)", "clahe"), "gaussian_noise s3") == "+5.0 (n=1) [1]"
    segm = _section(text, "### ΔAP vs identity — segm, ×100, paired by seed, mean ± s.e. over 2 seeds")
    # (0.35 - 0.38, 0.37 - 0.38) = (-3, -1) -> -2.0, s.e. 1.0
    assert _table_cell(segm, ("maskrcnn_r50 (smoke)", "clahe"), "clean") == "-2.0 ± 1.0"
    assert [r[1] for r in _rows(bbox)[1:]] == ["clahe"]


def test_mean_and_standard_error_use_ddof_1(tmp_path):
    cells = [_cell(f"c{s}", seed=s) for s in range(3)]
    rows = [{"cell": f"c{s}", "metric": "AP", "value": v} for s, v in enumerate([0.30, 0.33, 0.39])]
    text = render(_make_run(tmp_path / "three", cells, rows))
    table = _section(text, "### AP — bbox, ×100, mean ± s.e. over 3 seeds")
    # mean 34.0; sd (ddof=1) = sqrt((16 + 1 + 25) / 2) = 4.583; s.e. = 4.583 / sqrt(3) = 2.646
    assert _table_cell(table, ("mrcnn (smoke)", "identity"), "clean") == "34.0 ± 2.6"


def test_failed_cell_is_shown_and_its_error_listed(tmp_path):
    cells = [_cell("ok0"), _cell("ok1", seed=1),
             _cell("bad0", adapter="clahe", status="failed", error="RuntimeError: boom\n  at step 3"),
             _cell("bad1", adapter="clahe", seed=1, status="failed", error=None)]
    rows = [{"cell": "ok0", "metric": "AP", "value": 0.5}, {"cell": "ok1", "metric": "AP", "value": 0.5}]
    text = render(_make_run(tmp_path / "failed", cells, rows))
    table = _section(text, "### AP — bbox, ×100, mean ± s.e. over 2 seeds")
    assert _table_cell(table, ("mrcnn (smoke)", "clahe"), "clean") == "failed"
    assert _table_cell(table, ("mrcnn (smoke)", "identity"), "clean") == "50.0 ± 0.0"
    failed = _section(text, "## Failed cells")
    assert "| `bad0` |" in failed and "RuntimeError: boom at step 3" in failed
    assert "| `bad1` |" in failed and "(no error message)" in failed


def test_fixture_failed_seed_noted_and_none_value_footnoted():
    text = render(RUN_SMALL)
    table = _section(text, "### AP — bbox, ×100, mean ± s.e. over 2 seeds")
    assert _table_cell(table, ("maskrcnn_r50 (smoke)", "clahe"), "gaussian_noise s3") == "35.0 (n=1) [1]"
    assert "- [1] failed seed(s) excluded; errors are listed under Failed cells" in table
    assert "maskrcnn_r50-clahe-gaussian_noise-s3-seed1" in _section(text, "## Failed cells")
    scale = _section(text, "#### clean")
    assert _table_cell(scale, ("maskrcnn_r50 (smoke)", "identity"), "small") == "— [1]"
    assert scale.count("no ground-truth objects in the small area range") == 1


def test_order_identity_first_then_alphabetical_and_clean_first(tmp_path):
    settings = [("none", 0), ("noise", 3), ("blur", 2), ("blur", 1)]
    cells = [_cell(f"{a}-{d}{s}", adapter=a, degradation=d, severity=s)
             for a in ["zeta", "identity", "alpha"] for d, s in settings]
    rows = [{"cell": c["cell"], "metric": "AP", "value": 0.1} for c in cells]
    table = _section(render(_make_run(tmp_path / "order", cells, rows)), "### AP — bbox, ×100, single seed")
    header, *body = _rows(table)
    assert header[2:] == ["clean", "blur s1", "blur s2", "noise s3"]
    assert [r[1] for r in body] == ["identity", "alpha", "zeta"]


def test_pending_and_missing_results_do_not_crash(tmp_path):
    run = tmp_path / "partial"
    shutil.copytree(RUN_SMALL, run)
    (run / "results.csv").unlink()
    lines = (run / "cells.jsonl").read_text().splitlines()
    pending = [json.dumps({**json.loads(line), "status": "pending", "error": None}) for line in lines]
    (run / "cells.jsonl").write_text("\n".join(pending) + '\n{"cell": "trunc')
    text = render(run)
    table = _section(text, "### AP — bbox, ×100, mean ± s.e. over 2 seeds")
    assert _table_cell(table, ("maskrcnn_r50 (smoke)", "clahe"), "clean") == "pending"
    assert "- **Cells:** 0 done, 0 failed, 8 pending, 8 total" in text
    assert "unreadable last line ignored" in text


def test_missing_identity_is_said_in_one_line(tmp_path):
    cells = [_cell("a", adapter="clahe"), _cell("b", adapter="gamma")]
    rows = [{"cell": "a", "metric": "AP", "value": 0.2}, {"cell": "b", "metric": "AP", "value": 0.3}]
    text = render(_make_run(tmp_path / "noid", cells, rows))
    assert "No `identity` adapter run for mrcnn (smoke): no deltas for it." in text


def test_none_note_and_negative_coco_value_become_dash_with_note(tmp_path):
    cells = [_cell("a")]
    rows = [{"cell": "a", "metric": "AP", "value": "", "note": "empty | split"},
            {"cell": "a", "metric": "AP50", "value": "-1"}]
    text = render(_make_run(tmp_path / "none", cells, rows))
    ap = _section(text, "### AP — bbox, ×100, single seed")
    assert _table_cell(ap, ("mrcnn (smoke)", "identity"), "clean") == "— [1]"
    assert "- [1] empty \\| split" in ap
    assert "COCO reported -1" in _section(text, "### AP50 — bbox, ×100, single seed")
    ap75 = _section(text, "### AP75 — bbox, ×100, single seed")
    assert "no AP75 row in results.csv for this cell" in ap75


def test_write_is_atomic_and_creates_parents(tmp_path):
    out = write(RUN_SMALL, tmp_path / "deep" / "board" / "small.md", title="Small run")
    assert out.read_text(encoding="utf-8") == render(RUN_SMALL, title="Small run")
    assert out.read_text(encoding="utf-8").startswith("# Small run\n")
    assert [p.name for p in out.parent.iterdir()] == ["small.md"]


def test_not_a_run_dir_names_the_file(tmp_path):
    with pytest.raises(HarnessError, match="run.json"):
        render(tmp_path)


def test_several_runs_share_one_set_of_tables(tmp_path):
    a = _make_run(tmp_path / "mmdet", [_cell("a0")], [{"cell": "a0", "metric": "AP", "value": 0.30}])
    b = _make_run(tmp_path / "tv", [_cell("b0", segmenter="tv")], [{"cell": "b0", "metric": "AP", "value": 0.25}])
    text = render([a, b])
    assert "### Run mmdet" in text and "### Run tv" in text
    table = _section(text, "### AP — bbox, ×100, single seed")
    assert _table_cell(table, ("mrcnn (smoke)", "identity"), "clean") == "30.0"
    assert _table_cell(table, ("tv (smoke)", "identity"), "clean") == "25.0"
    c = _make_run(tmp_path / "again", [_cell("a0")], [{"cell": "a0", "metric": "AP", "value": 0.32}])
    table = _section(render([a, c]), "### AP — bbox, ×100, single seed")
    assert _table_cell(table, ("mrcnn (smoke)", "identity"), "clean") == "32.0"  # the later run's cell, once
