"""Runs to a board: aggregation, statistics and marks, rendering, figures, publishing."""
