"""Isolated img/s: each method variant timed alone, recorded once, used by the leaderboard."""

import pytest

from benchsuite.boards.publish import leaderboard_for
from benchsuite.store.tracking import Tracker
from benchsuite.training.loop import RunConfig
from benchsuite.training.runner import execute
from benchsuite.training.throughput import interleaved_img_per_s, record_isolated

pytestmark = pytest.mark.integration  # trains: not in the unit tier


def test_isolated_throughput_is_recorded_once_and_read_by_the_leaderboard(
    tiny_preset, tiny_data, tmp_path
):
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
        assert tp.source == "isolated" and len(tp.rounds) == 5
        assert tp.value == pytest.approx(sum(tp.rounds) / 5, rel=1e-3)


def test_interleaved_rounds_time_every_config_once_per_round(tiny_preset, tiny_data):
    configs = [RunConfig(tiny_preset, "dense", 0.0, 0), RunConfig(tiny_preset, "gmp", 0.9, 0)]
    figures = interleaved_img_per_s(configs, tiny_data, rounds=3, steps=2)
    assert [len(f) for f in figures] == [3, 3]
    assert all(0 < v < float("inf") for f in figures for v in f)
