"""Exact per-step learning rates of the original and retraining schedules (docs/methods.md)."""

import math

import numpy as np
import pytest

from benchsuite.pruning.schedules import (
    LRRecord,
    ScheduleSpec,
    allr_initial_lr,
    linear_to_zero,
    original_schedule,
    retraining_schedule,
)


def test_multistep_milestones_are_fractions_of_the_schedule():
    lr = original_schedule(ScheduleSpec("multistep", lr=0.1, milestones=(0.5, 0.75)), 4, 10)
    assert len(lr) == 40
    assert lr[0] == pytest.approx(0.1) and lr[19] == pytest.approx(0.1)
    assert lr[20] == pytest.approx(0.01) and lr[29] == pytest.approx(0.01)
    assert lr[30] == pytest.approx(0.001) and lr[39] == pytest.approx(0.001)


def test_linear_records_the_lr_used_before_the_scheduler_steps():
    lr = original_schedule(ScheduleSpec("linear", lr=0.1), 1, 10)
    np.testing.assert_allclose(lr, 0.1 * (1 - np.arange(10) / 10))
    np.testing.assert_allclose(linear_to_zero(0.1, 10), lr)


def test_cosine_and_warmup():
    lr = original_schedule(ScheduleSpec("cosine", lr=1.0, warmup_epochs=1), 3, 4)
    # warm-up: linear ramp from 1e-20 to 1 over 4 iterations
    assert lr[0] == pytest.approx(1e-20)
    assert lr[2] == pytest.approx(0.5, rel=1e-6)
    # then cosine to 0 over the remaining 8 iterations
    for k in range(8):
        assert lr[4 + k] == pytest.approx((1 + math.cos(math.pi * k / 8)) / 2)


def test_step_chained_with_warmup_counts_warmup_iterations():
    lr = original_schedule(
        ScheduleSpec("multistep", lr=1.0, warmup_epochs=1, milestones=(0.5,)), 2, 4
    )
    # milestone at 0.5 · 8 = iteration 4 counts the warm-up iterations
    assert lr[3] == pytest.approx(0.75, rel=1e-6)
    assert lr[4] == pytest.approx(0.1) and lr[7] == pytest.approx(0.1)


@pytest.fixture
def record():
    # 20 iterations: 0.1 for 10, 0.01 for 5, 0.001 for 5 (a step schedule)
    return LRRecord(np.array([0.1] * 10 + [0.01] * 5 + [0.001] * 5))


def test_ft_is_constant_eta_min(record):
    np.testing.assert_allclose(retraining_schedule("ft", 7, record), [0.001] * 7)


def test_lrw_replays_the_last_n_iterations(record):
    np.testing.assert_allclose(retraining_schedule("lrw", 8, record), [0.01] * 3 + [0.001] * 5)


def test_llr_half_cosine_warmup_then_linear_to_zero(record):
    lr = retraining_schedule("llr", 20, record)
    w = 2  # ⌊0.1 · 20⌋
    assert lr[0] == 0.0
    assert lr[1] == pytest.approx(0.1 * (1 - math.cos(math.pi / 2)) / 2)  # = 0.05
    assert lr[w] == pytest.approx(0.1)  # η₀ = η_max
    assert lr[w + 9] == pytest.approx(0.1 * (1 - 9 / 18))
    assert lr[-1] == pytest.approx(0.1 / 18)  # ≈ η₀ / (N − W)
    assert len(lr) == 20


def test_clr_cosine_down_to_eta_min(record):
    lr = retraining_schedule("clr", 10, record)  # W = 1, 9 cosine steps
    assert lr[0] == 0.0
    assert lr[1] == pytest.approx(0.1)
    k = 4
    assert lr[1 + k] == pytest.approx(0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * k / 9)) / 2)
    assert lr[-1] > 0.001  # approaches η_min, not 0


def test_slr_compresses_the_whole_record(record):
    lr = retraining_schedule("slr", 11, record)  # W = 1, main 10 → every 2nd recorded step
    assert lr[0] == 0.0
    np.testing.assert_allclose(lr[1:], [0.1] * 5 + [0.01] * 3 + [0.001] * 2)


def test_slr_sets_warmup_entries_to_eta_max():
    rec = LRRecord(np.array([0.02, 0.05, 0.1, 0.1, 0.01, 0.01]), warmup_steps=2)
    assert rec.eta_min == pytest.approx(0.01)  # ignores the warm-up
    lr = retraining_schedule("slr", 7, rec)  # W = 0: 7 steps over 6 records
    assert lr[0] == pytest.approx(0.1) and lr[1] == pytest.approx(0.1)


def test_allr_initial_lr_and_bounds():
    # d/√p = 0.3/√0.5 = 0.4243 → η₀ = 0.04243 when above the lower bound 0.1·(10/100)
    assert allr_initial_lr(0.1, 0.3, 0.5, 10, 100) == pytest.approx(0.1 * 0.3 / math.sqrt(0.5))
    # tiny norm drop: clipped to the budget-aware lower bound η_max · T_rt/T
    assert allr_initial_lr(0.1, 0.001, 0.5, 10, 100) == pytest.approx(0.01)
    # lower bound capped at η_max when the phase is longer than the original training
    assert allr_initial_lr(0.1, 0.001, 0.5, 200, 100) == pytest.approx(0.1)
    # d/√p > 1: clipped at η_max
    assert allr_initial_lr(0.1, 0.9, 0.5, 10, 100) == pytest.approx(0.1)


def test_allr_schedule_uses_its_eta0(record):
    lr = retraining_schedule("allr", 10, record, eta0=0.03)
    assert lr[1] == pytest.approx(0.03) and lr[-1] == pytest.approx(0.03 / 9)


def test_linear_warmup_shape(record):
    lr = retraining_schedule("allr", 20, record, warmup_shape="linear")
    assert lr[1] == pytest.approx(0.1 / 2)


def test_unknown_schedule_and_too_short_phase(record):
    with pytest.raises(ValueError, match="choose from"):
        retraining_schedule("xyz", 10, record)
    with pytest.raises(ValueError, match="LRW needs"):
        retraining_schedule("lrw", 21, record)
