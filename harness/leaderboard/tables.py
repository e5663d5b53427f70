"""The leaderboard's former single module, kept so that `harness.leaderboard.tables.render / write / load_run`
still work: the code now lives in run.py (reading), aggregate.py, format.py, sections/ and page.py."""
from harness.leaderboard.page import render, write
from harness.leaderboard.run import Run, load_run

__all__ = ["Run", "load_run", "render", "write"]
