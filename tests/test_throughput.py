"""Isolated img/s: each method variant timed alone, recorded once, used by the leaderboard."""

import pytest

from benchsuite.boards.format import img_per_s_text
from benchsuite.boards.publish import leaderboard_for, to_markdown
from benchsuite.store.tracking import Tracker
from benchsuite.training import turns
from benchsuite.training.loop import RunConfig
from benchsuite.training.runner import execute
from benchsuite.training.throughput import (
    MAX_ROUNDS,
    MIN_ROUNDS,
    interleaved_img_per_s,
    record_isolated,
)

pytestmark = pytest.mark.integration  # trains: not in the unit tier


def test_isolated_throughput_is_recorded_once_and_read_by_the_leaderboard(
    tiny_preset, tiny_data, tmp_path, monkeypatch
):
    monkeypatch.setattr(turns, "lock_path", lambda: tmp_path / "turns.lock")
    monkeypatch.setattr(turns, "BUSY_CORES_MAX", float("inf"))  # a shared test machine
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "exp")
    configs = [
        RunConfig(tiny_preset, "dense", 0.0, 0),
        RunConfig(tiny_preset, "imp", 0.9, 0, hparams=(("retrain_fraction", "0.25"),)),
        RunConfig(tiny_preset, "imp", 0.9, 1, hparams=(("retrain_fraction", "0.25"),)),
    ]
    for c in configs:
        assert execute(c, tracker, dataset=tiny_data)[0] == "FINISHED"
    assert record_isolated(configs, tiny_data, tracker) == 2  # dense and the one imp variant
    assert record_isolated(configs, tiny_data, tracker) == 0  # already measured here
    board = leaderboard_for(uri, "exp")
    rows = {row.method: row for row in board.rows}
    for method in ("dense", "imp"):
        tp = rows[method].img_per_s
        assert tp.source == "isolated" and MIN_ROUNDS <= len(tp.rounds) <= MAX_ROUNDS
        assert tp.value == pytest.approx(sum(tp.rounds) / len(tp.rounds), rel=1e-3)
        assert tp.threads == "1"  # the trials' own thread count


def test_a_phase_that_cannot_have_the_machine_is_contended_and_shown_so(
    tiny_preset, tiny_data, tmp_path, monkeypatch
):
    """Another command's run trains meanwhile: the records say contended, the board shows
    them with † and never ranks them; the next command measures them again, alone."""
    lock = tmp_path / "turns.lock"
    monkeypatch.setattr(turns, "lock_path", lambda: lock)
    monkeypatch.setattr(turns, "BUSY_CORES_MAX", float("inf"))
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "exp")
    configs = [RunConfig(tiny_preset, "dense", 0.0, 0), RunConfig(tiny_preset, "gmp", 0.9, 0)]
    for c in configs:
        assert execute(c, tracker, dataset=tiny_data)[0] == "FINISHED"
    with turns.training(lock):  # another command's run, training
        assert record_isolated(configs, tiny_data, tracker, rounds=1, wait_s=0.3) == 2
    board = leaderboard_for(uri, "exp")
    gmp = board.row("gmp").img_per_s
    assert gmp.source == "contended" and gmp.mark.rank is None
    assert not [c for c in board.comparisons if c.metric == "img_per_s"]
    assert "**†** (timed after the grid): contended" in to_markdown(board)
    table = to_markdown(board).split("## Legend")[0]
    assert f"| gmp | {img_per_s_text(gmp.value)}† |" in table
    assert record_isolated(configs, tiny_data, tracker, rounds=1, wait_s=0.3) == 2  # again
    assert leaderboard_for(uri, "exp").row("gmp").img_per_s.source == "isolated"


def test_interleaved_rounds_time_every_config_once_per_round(tiny_preset, tiny_data):
    configs = [RunConfig(tiny_preset, "dense", 0.0, 0), RunConfig(tiny_preset, "gmp", 0.9, 0)]
    figures = interleaved_img_per_s(configs, tiny_data, rounds=3, steps=2)
    assert [len(f) for f in figures] == [3, 3]
    assert all(0 < v < float("inf") for f in figures for v in f)
    adaptive = interleaved_img_per_s(configs, tiny_data, steps=2)  # the stopping rule
    assert MIN_ROUNDS <= len(adaptive[0]) == len(adaptive[1]) <= MAX_ROUNDS
