"""Markdown leaderboards from matrix run directories.

Every cell of the matrix appears in every table it belongs to: a missing number is shown as "—", "failed" or
"pending" with a footnote, never dropped, so a partial run reads as partial rather than as a smaller benchmark.
Files that `harness report` adds to a run folder are optional inputs: significance.csv puts bootstrap intervals
on the summary's Δ columns, baselines.csv adds the baselines section and plots/manifest.json a Plots section.

run.py reads a run folder, aggregate.py turns its rows into table cells, format.py writes them, and each
section of the page is one module in sections/; page.py renders the page as their concatenation.
"""
from harness.leaderboard.page import render, write
from harness.leaderboard.run import load_run

__all__ = ["load_run", "render", "write"]
