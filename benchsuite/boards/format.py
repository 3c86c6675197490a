"""How numbers and names read on a board: percentages, two decimals, img/s, file names."""

from __future__ import annotations

import re


def percent(target: float) -> str:
    return f"{target * 100:.4g}%"


def two_dp(x: float) -> str:
    return f"{x:.2f}"


def img_per_s_text(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def published_stem(experiment: str) -> str:
    """The published files' name: the experiment's, reduced to characters safe in any path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"


def configs_name(experiment: str) -> str:
    """The tuned configurations' file, published beside the board (no board schema: the
    leaderboards index skips it)."""
    return f"{published_stem(experiment)}.configs.json"
