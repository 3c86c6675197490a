"""Isolated img/s: each method variant timed alone, recorded once, used by the leaderboard."""

from benchsuite.leaderboard import leaderboard_for
from benchsuite.runner import execute
from benchsuite.throughput import isolated_img_per_s, record_isolated
from benchsuite.tracking import Tracker
from benchsuite.train import RunConfig


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
        assert rows[method].img_per_s.source == "isolated"
        assert rows[method].img_per_s.value > 0


def test_isolated_img_per_s_counts_images_of_real_batches(tiny_preset, tiny_data):
    ips = isolated_img_per_s(RunConfig(tiny_preset, "dense", 0.0, 0), tiny_data, steps=2, repeats=1)
    assert 0 < ips < float("inf")
