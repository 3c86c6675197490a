"""The dense reference: no pruning, the preset's schedule for the whole budget."""

from __future__ import annotations

from benchsuite import PruningMethod


class Dense(PruningMethod):
    """One run per seed; the reference row of every leaderboard."""

    name = "dense"
    source = "no pruning (reference row)"
    one_per_seed = True
