"""The calibration search: it lands a knob on the target on the calibration seeds, judged on
sparsity only, and never uses a benchmark seed."""

import math

import pytest

from benchsuite.tuning.calibrate import CALIBRATION_SEEDS, Probe, calibrate, toml_block


def fake_sparsity(job: tuple) -> float:
    """A smooth, seed-dependent response: logit(s) = 2·log10(value/1e-3) + 2.2 + seed offset."""
    _, _, _, value, _, seed, _ = job
    assert seed in CALIBRATION_SEEDS  # never a benchmark seed (0..N-1) or a tuning seed
    z = 2.0 * math.log10(value / 1e-3) + 2.2 + 0.05 * (seed - 101)
    return 1.0 / (1.0 + math.exp(-z))


def test_the_search_lands_the_mean_on_the_target() -> None:
    probes = calibrate(
        "fashion-mnist", "str", "weight_decay", 0.9, 1e-4, 1e-3, train=fake_sparsity, workers=1
    )
    best = probes[-1]
    assert best.accepted(0.9)
    assert 0.89 <= best.mean and 0.9 <= best.projected_mean(0.9) <= 0.905
    assert all(p.accepted(0.9) is False for p in probes[:-1])
    block = toml_block("str", 0.9, "weight_decay", probes)
    assert '[calibration.str."0.9"]' in block and f"weight_decay = {best.value:.6g}" in block


def test_acceptance_counts_the_projection_and_the_methods_own_mean() -> None:
    assert Probe(0.5, (0.899, 0.901, 0.902)).accepted(0.9)  # own mean 0.9007
    assert not Probe(0.5, (0.90, 0.90, 0.92)).accepted(0.9)  # after the projection 0.9067
    assert not Probe(0.5, (0.88, 0.88, 0.90)).accepted(0.9)  # own mean 0.8867: mostly top-up
    assert Probe(0.5, (0.89, 0.89, 0.905)).accepted(0.9)  # own mean 0.895, projected 0.9017
    assert Probe(0.5, (0.89, 0.90, 0.91)).projected_mean(0.9) == pytest.approx(0.9033, abs=1e-4)
