"""The published files, byte for byte, for fixed run records (a change to them is deliberate).

Rendering a board from the same runs must give the same markdown and JSON as the files under
``tests/golden/``: published boards are compared by diff, and regenerated from resumed runs.
Regenerate with ``BENCHSUITE_GOLDEN=write pytest tests/test_published_golden.py`` after a
deliberate change, and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from benchsuite.boards.aggregation import aggregate
from benchsuite.boards.render import to_json, to_markdown
from benchsuite.studies import table1 as study
from tests import test_leaderboard as lb
from tests import test_study as st

GOLDEN = Path(__file__).parent / "golden"


def renumbered(runs: list) -> list:
    """The same runs with ids and times from their position (the helpers count globally)."""
    out = []
    for i, r in enumerate(runs):
        start = 1_700_000_000_000 + i * 1000
        out.append(
            dataclasses.replace(
                r, run_id=f"{r.run_id[0]}{i:04d}", start_time=start, end_time=start + 500
            )
        )
    return out


def in_trial_runs() -> list:
    """No isolated throughput (†), a superseded retry, a failed and a running attempt, and a
    second version: an unfair table, published with force."""
    runs = [lb.rec("dense", 0, s, 98.0 + s, speedup=1.0, sparsity=0.0) for s in range(2)]
    runs += [lb.rec("a", 0.9, s, 95.0 + s, ips=30.0 + s) for s in range(2)]
    runs += [lb.rec("b", 0.9, 0, 91.0, run_key="b0"), lb.rec("b", 0.9, 0, 92.0, run_key="b0")]
    runs += [
        lb.rec("b", 0.9, 1, None, status="RUNNING"),
        lb.rec("c", 0.9, 0, 90.0, version="0.2.0"),
    ]
    return runs


def boards() -> dict[str, tuple[str, str]]:
    out = {}
    for name, runs in (
        ("table", lb.table_runs()),
        ("flagged", lb.flagged_runs()),
        ("in-trial", in_trial_runs()),
    ):
        board = aggregate(renumbered(runs), experiment=f"golden-{name}")
        out[f"leaderboard-{name}"] = (to_markdown(board), to_json(board))
    board = study.aggregate_study(renumbered(st.records()), "golden-table1")
    out["study"] = (study.to_markdown(board), study.to_json(board))
    return out


@pytest.mark.parametrize(
    "name", ["leaderboard-table", "leaderboard-flagged", "leaderboard-in-trial", "study"]
)
def test_published_files_are_unchanged(name: str) -> None:
    md, js = boards()[name]
    if os.environ.get("BENCHSUITE_GOLDEN") == "write":
        (GOLDEN / f"{name}.md").write_text(md, encoding="utf-8")
        (GOLDEN / f"{name}.json").write_text(js, encoding="utf-8")
    assert md == (GOLDEN / f"{name}.md").read_text(encoding="utf-8")
    assert js == (GOLDEN / f"{name}.json").read_text(encoding="utf-8")
