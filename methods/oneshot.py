"""One-shot pruning without a method: the floor row of every leaderboard.

Dense training for the whole budget with the preset's schedule, then the harness's final
projection (global magnitude pruning to the target, docs/leaderboards.md) and no retraining.
The base class already does all of that, so this method adds nothing: a pruning method that
does not beat this row has gained nothing over pruning the trained dense model once.
"""

from __future__ import annotations

from benchsuite import PruningMethod


class OneShot(PruningMethod):
    """Trains dense; the loop's projection to the target is the whole pruning."""

    name = "oneshot"
    source = "chosen here: the floor every pruning method must beat"
    # the projection is the whole pruning, and it projects within any pattern
    patterns = ("unstructured", "n:m", "channel")
