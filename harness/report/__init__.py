"""Figures for reports: deterministic PNGs drawn from the tidy results frame and from per-image predictions."""
