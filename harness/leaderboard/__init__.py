"""Markdown leaderboards from matrix run directories."""
from harness.leaderboard.tables import load_run, render, write

__all__ = ["load_run", "render", "write"]
