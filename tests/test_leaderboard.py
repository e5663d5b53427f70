"""Leaderboard rendering: byte-exact golden files plus hand-computed numbers on small synthetic runs.

The golden files are tests/fixtures/NAME.expected.md for the run folders tests/fixtures/NAME. After a deliberate
change to the renderer, rewrite them with

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_leaderboard.py -k golden

and read the diff (git diff tests/fixtures) before committing it.
"""
from __future__ import annotations

import csv
import difflib
import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.leaderboard import render, write
from harness.leaderboard.robustness import robustness_table

FIXTURES = Path(__file__).parent / "fixtures"
RUN_SMALL = FIXTURES / "run_small"
RUN_ROBUST = FIXTURES / "run_robust"
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


@pytest.mark.parametrize("name", ["run_small", "run_robust"])
def test_golden_matches_reference(name):
    got = render(FIXTURES / name)
    expected = FIXTURES / f"{name}.expected.md"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected.write_text(got, encoding="utf-8", newline="\n")
        pytest.skip(f"rewrote {expected.name}; review the diff")
    want = expected.read_text(encoding="utf-8")
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "expected", "rendered"))
        pytest.fail(f"rendered leaderboard differs from tests/fixtures/{expected.name} "
                    f"(UPDATE_GOLDEN=1 rewrites it, see the module docstring):\n" + diff)


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


# ---------------------------------------------------------------- robustness


def _corrupted_run(root: Path, values: dict[tuple[str, str, int, int], float], status: dict | None = None) -> Path:
    """A bbox-AP-only run from {(adapter, degradation, severity, seed): AP}; ``status`` marks cells not done."""
    status = status or {}
    cells, rows = [], []
    for (adapter, deg, sev, seed), value in values.items():
        cid = f"{adapter}-{deg}-s{sev}-seed{seed}"
        state = status.get((adapter, deg, sev, seed), "done")
        cells.append(_cell(cid, adapter=adapter, degradation=deg, severity=sev, seed=seed, status=state,
                           error="boom" if state == "failed" else None))
        if state == "done":
            rows.append({"cell": cid, "metric": "AP", "value": value})
    return _make_run(root, cells, rows)


def _robust_values(adapters=("identity",), corruptions=("noise", "blur"), seeds=(0,), skip=()) -> dict:
    """AP = 0.5 + 0.02 * seed clean, minus 0.05 * severity under noise and 0.02 * severity under blur."""
    drop = {"noise": 0.05, "blur": 0.02, "jpeg": 0.01}
    values = {}
    for a in adapters:
        for seed in seeds:
            values[(a, "none", 0, seed)] = 0.5 + 0.02 * seed
            for c in corruptions:
                for sev in range(1, 6):
                    if (a, c, sev, seed) not in skip:
                        values[(a, c, sev, seed)] = round(0.5 + 0.02 * seed - drop[c] * sev, 4)
    return values


def test_robustness_fixture_numbers_by_hand():
    text = render(RUN_ROBUST)
    table = _section(text, "### Boxes (bbox)")
    header = _rows(table)[0]
    assert header == ["Segmenter", "Adapter", "P", "mPC (2 corruptions)", "rPC (%)", "gaussian_noise", "motion_blur"]
    row = ("maskrcnn_r50 (smoke)", "identity")
    assert _table_cell(table, row, "P") == "51.0 ± 1.0"  # (0.50, 0.52)
    assert _table_cell(table, row, "gaussian_noise") == "36.0 ± 1.0"  # clean - 0.05 * 3 per seed
    assert _table_cell(table, row, "motion_blur") == "39.0 ± 1.0"  # clean - 0.04 * 3
    assert _table_cell(table, row, "mPC (2 corruptions)") == "37.5 ± 1.0"  # (0.365, 0.385)
    # rPC per seed: 0.365 / 0.50 = 73.0 %, 0.385 / 0.52 = 74.04 % -> 73.5 ± 0.5
    assert _table_cell(table, row, "rPC (%)") == "73.5 ± 0.5"
    dncnn = ("maskrcnn_r50 (smoke)", "dncnn")
    # motion_blur s5 failed (seed 0) and pending (seed 1): mean of s1..s4 = clean - 0.03 * 2.5
    assert _table_cell(table, dncnn, "motion_blur") == "42.5 ± 1.0 (4/5 sev.) [2,3]"
    assert _table_cell(table, dncnn, "mPC (2 corruptions)") == "44.0 ± 1.0 (9/10 sev.) [1]"
    assert "- [2] motion_blur s5 (seed 0): failed seed(s) excluded; errors are listed under Failed cells" in table
    assert "- [3] motion_blur s5 (seed 1): pending seed(s) excluded" in table
    assert "mPC (2 corruptions): gaussian_noise, motion_blur." in table
    assert text.index("## Robustness") < text.index("\n## Boxes (bbox)")


def test_robustness_table_api_and_any_metric():
    run = robustness_table(pd.read_csv(RUN_ROBUST / "results.csv"), "bbox")
    identity = run[run["adapter"] == "identity"].set_index(["measure", "corruption"])
    assert identity.loc[("P", ""), "mean"] == pytest.approx(0.51)
    assert identity.loc[("P", ""), "se"] == pytest.approx(0.01)
    assert identity.loc[("mPC", ""), "mean"] == pytest.approx(0.375)
    assert identity.loc[("rPC", ""), "mean"] == pytest.approx((0.365 / 0.50 + 0.385 / 0.52) / 2)
    assert identity.loc[("mPC", ""), "corruptions"] == ("gaussian_noise", "motion_blur")
    dncnn = run[run["adapter"] == "dncnn"].set_index(["measure", "corruption"])
    assert tuple(dncnn.loc[("mPC_c", "motion_blur"), ["severities", "of_severities", "seeds"]]) == (4, 5, 2)
    ap50 = robustness_table(pd.read_csv(RUN_ROBUST / "results.csv"), "segm", metric="AP50")
    p50 = ap50[(ap50["adapter"] == "identity") & (ap50["measure"] == "P")]["mean"].item()
    assert p50 == pytest.approx(0.51 - 0.03 + 0.2)


def test_corruption_mean_does_not_depend_on_the_other_corruptions(tmp_path):
    both = render(_corrupted_run(tmp_path / "both", _robust_values(corruptions=("noise", "blur"))))
    alone = render(_corrupted_run(tmp_path / "alone", _robust_values(corruptions=("noise",))))
    row = ("mrcnn (smoke)", "identity")
    table_both, table_alone = _section(both, "### Boxes (bbox)"), _section(alone, "### Boxes (bbox)")
    assert _table_cell(table_both, row, "noise") == _table_cell(table_alone, row, "noise") == "35.0"
    assert _table_cell(table_alone, row, "mPC (1 corruption)") == "35.0"
    assert _table_cell(table_both, row, "mPC (2 corruptions)") == "39.5"  # (35.0 + blur's 44.0) / 2
    results = pd.read_csv(tmp_path / "both" / "results.csv")
    sub = results[results["degradation"] != "blur"]
    full, part = robustness_table(results, "bbox"), robustness_table(sub, "bbox")
    pick = lambda t: t[(t["measure"] == "mPC_c") & (t["corruption"] == "noise")]["mean"].item()  # noqa: E731
    assert pick(full) == pick(part) == pytest.approx(0.35)


def test_one_missing_severity_is_marked_not_averaged_as_complete(tmp_path):
    values = _robust_values(corruptions=("noise", "blur", "jpeg"), skip={("identity", "noise", 5, 0)})
    text = render(_corrupted_run(tmp_path / "gap", values))
    table = _section(text, "### Boxes (bbox)")
    row = ("mrcnn (smoke)", "identity")
    # s1..s4: 0.45, 0.40, 0.35, 0.30 -> 37.5, flagged; blur and jpeg complete: 44.0 and 47.0
    assert _table_cell(table, row, "noise") == "37.5 (4/5 sev.) [2]"
    assert "- [2] noise s5: not in the run" in table
    assert (_table_cell(table, row, "blur"), _table_cell(table, row, "jpeg")) == ("44.0", "47.0")
    assert _table_cell(table, row, "mPC (3 corruptions)") == "42.8 (14/15 sev.) [1]"  # 128.5 / 3
    assert _table_cell(table, row, "rPC (%)") == "85.7 (14/15 sev.) [1]"
    assert "- [1] mPC includes noise averaged over fewer than 5 severities (see its column)" in table


def test_without_a_full_severity_sweep_the_section_is_a_note(tmp_path):
    """One severity of each of two corruptions is no mPC: the section is left out and a note says why."""
    values = {k: v for k, v in _robust_values(corruptions=("noise", "blur")).items() if k[2] in (0, 3)}
    text = render(_corrupted_run(tmp_path / "two", values))
    assert "## Robustness" not in text and "(1/5 sev.)" not in text
    notes = _section(text, "## Input notes")
    assert ("- No Robustness section (P, mPC, rPC): no corruption in this run has all of severities 1–5 "
            "(it has blur s3, noise s3).") in notes
    pending = _robust_values(corruptions=("noise",))
    status = {k: "pending" for k in pending if k[1] == "noise" and k[2] > 1}
    planned = render(_corrupted_run(tmp_path / "planned", pending, status))
    assert "## Robustness" in planned and "No Robustness section" not in planned


def test_row_without_a_corruption_is_marked(tmp_path):
    values = {**_robust_values(adapters=("identity",)), **_robust_values(adapters=("clahe",), corruptions=("noise",))}
    table = _section(render(_corrupted_run(tmp_path / "sets", values)), "### Boxes (bbox)")
    row = ("mrcnn (smoke)", "clahe")
    assert _table_cell(table, row, "blur").startswith("— [")
    mpc = _table_cell(table, row, "mPC (2 corruptions)")
    assert mpc.startswith("35.0 (5/10 sev.) [")
    assert "mPC without blur, which has no value here (see its column)" in table


def test_failed_clean_cell_gives_dash_for_p_and_rpc(tmp_path):
    values = _robust_values(corruptions=("noise",), seeds=(0, 1))
    status = {("identity", "none", 0, 0): "failed", ("identity", "none", 0, 1): "failed"}
    text = render(_corrupted_run(tmp_path / "noclean", values, status))
    table = _section(text, "### Boxes (bbox)")
    row = ("mrcnn (smoke)", "identity")
    assert _table_cell(table, row, "P") == "— [1]"
    assert _table_cell(table, row, "rPC (%)") == "— [2]"
    assert _table_cell(table, row, "mPC (1 corruption)") == "36.0 ± 1.0"
    assert "- [1] clean cell: failed seed(s) excluded; errors are listed under Failed cells" in table
    assert "- [2] no P: clean cell: failed seed(s) excluded" in table


def test_no_clean_cells_or_no_corruption_means_no_robustness_section(tmp_path):
    values = {k: v for k, v in _robust_values(corruptions=("noise",)).items() if k[1] != "none"}
    text = render(_corrupted_run(tmp_path / "nonone", values))
    assert "## Robustness" not in text and "### AP — bbox" in text
    clean_only = {k: v for k, v in _robust_values(corruptions=("noise",)).items() if k[1] == "none"}
    assert "## Robustness" not in render(_corrupted_run(tmp_path / "cleanonly", clean_only))


def test_severity_outside_1_to_5_is_left_out_and_said(tmp_path):
    values = {**_robust_values(corruptions=("noise",)), ("identity", "noise", 7, 0): 0.01}
    text = render(_corrupted_run(tmp_path / "sev7", values))
    assert "Not in mPC (severity outside 1–5): noise s7." in text
    assert _table_cell(_section(text, "### Boxes (bbox)"), ("mrcnn (smoke)", "identity"), "noise") == "35.0"


def test_pending_run_renders_robustness_as_pending(tmp_path):
    values = _robust_values(corruptions=("noise",))
    status = {k: "pending" for k in values if k[1] != "none"}
    table = _section(render(_corrupted_run(tmp_path / "pending", values, status)), "### Boxes (bbox)")
    assert _table_cell(table, ("mrcnn (smoke)", "identity"), "mPC (1 corruption)") == "pending"
    assert _table_cell(table, ("mrcnn (smoke)", "identity"), "P") == "50.0"


# ---------------------------------------------------------------- significance and plots


def test_significance_intervals_in_summary():
    text = render(RUN_ROBUST)
    table = _section(text, "### gaussian_noise s1")
    assert _table_cell(table, ("maskrcnn_r50 (smoke)", "dncnn"), "Δ bbox AP") == "+2.5 [+1.1, +3.9]*"
    assert _table_cell(table, ("maskrcnn_r50 (smoke)", "dncnn"), "bbox AP") == "48.5 ± 1.0"
    assert ("[lo, hi]: 95 % paired bootstrap interval over test images (1000 resamples); * = excludes 0."
            in table)
    clean = _section(text, "### clean")
    assert _table_cell(clean, ("maskrcnn_r50 (smoke)", "dncnn"), "Δ bbox AP") == "-1.0 [-2.2, +0.2]"
    notes = _section(text, "## Input notes")
    assert "significance.csv: 1 row(s) ignored" in notes and "nlm gaussian_noise s3" in notes
    delta_table = _section(text, "### ΔAP vs identity — bbox, ×100, paired by seed, mean ± s.e. over 2 seeds")
    assert _table_cell(delta_table, ("maskrcnn_r50 (smoke)", "dncnn"), "gaussian_noise s1") == "+2.5 ± 0.0"


def test_without_significance_file_the_summary_keeps_mean_and_se(tmp_path):
    run = tmp_path / "robust"
    shutil.copytree(RUN_ROBUST, run)
    (run / "significance.csv").unlink()
    text = render(run)
    table = _section(text, "### gaussian_noise s1")
    assert _table_cell(table, ("maskrcnn_r50 (smoke)", "dncnn"), "Δ bbox AP") == "+2.5 ± 0.0"
    assert "bootstrap" not in text


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "resamples"} for r in rows],
     r"significance\.csv: missing column\(s\) resamples"),
    (lambda rows: [rows[0], {**rows[1], "delta": "abc"}], r"significance\.csv: row 3: delta 'abc' is not a number"),
    (lambda rows: [{**rows[0], "hi": "nan"}], r"significance\.csv: row 2: hi .* not a finite number"),
    (lambda rows: [{**rows[0], "significant": "maybe"}], r"significance\.csv: row 2: significant 'maybe'"),
])
def test_malformed_significance_names_file_row_and_column(tmp_path, edit, message):
    run = tmp_path / "robust"
    shutil.copytree(RUN_ROBUST, run)
    with open(run / "significance.csv", newline="") as f:
        rows = edit(list(csv.DictReader(f)))
    with open(run / "significance.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(HarnessError, match=message):
        render(run)


def test_plot_links_are_relative_to_where_the_markdown_lives(tmp_path):
    text = render(RUN_ROBUST)
    plots = text[text.index("## Plots"):]
    assert "![bbox AP vs severity](plots/ap_vs_severity_bbox.png)" in plots
    assert text.rstrip().endswith("(plots/rpc_by_adapter_segm.png)")
    out = write(RUN_ROBUST, tmp_path / "site" / "boards" / "robust.md")
    link = out.read_text(encoding="utf-8").split("![bbox AP vs severity](", 1)[1].split(")", 1)[0]
    assert not os.path.isabs(link)
    target = os.path.normpath(os.path.join(out.parent, link))
    assert target == os.path.normpath(os.path.abspath(RUN_ROBUST / "plots" / "ap_vs_severity_bbox.png"))
    assert "2 listed image(s) not found" in _section(text, "## Input notes")


def test_malformed_plot_manifest_names_the_entry(tmp_path):
    run = tmp_path / "robust"
    shutil.copytree(RUN_ROBUST, run)
    (run / "plots" / "manifest.json").write_text(json.dumps([{"file": "plots/a.png"}, {"title": "no file"}]))
    with pytest.raises(HarnessError, match=r"manifest\.json: entry 1"):
        render(run)
    (run / "plots" / "manifest.json").write_text("{not json")
    with pytest.raises(HarnessError, match=r"manifest\.json: not valid JSON"):
        render(run)
