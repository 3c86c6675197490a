"""IMP and BIMP: per-phase fractions, cumulative sparsity, plans inside the budget, ALLR."""

import math

import numpy as np
import pytest
import torch

from benchsuite.core.budget import Budget, BudgetError
from benchsuite.pruning.schedules import ScheduleSpec, allr_initial_lr
from benchsuite.training.loop import RunConfig, train_run
from benchsuite_methods.bimp import BIMP, BIMPHparams
from benchsuite_methods.imp import IMP, IMPHparams

STEP = ScheduleSpec("multistep", lr=0.1, milestones=(0.5, 0.75))


def test_imp_plan_dense_phase_then_retraining_phases():
    budget = Budget(20, 10)
    plan = IMP.plan(budget, IMPHparams(phases=3, retrain_fraction=0.5), 0.9, STEP)
    assert [(p.name, p.start_epoch, p.end_epoch) for p in plan.phases] == [
        ("dense", 0, 10),
        ("retrain-1", 10, 13),
        ("retrain-2", 13, 16),
        ("retrain-3", 16, 20),
    ]  # ⌊10/3⌋ per phase, remainder to the last
    assert len(plan.lr) == budget.total_steps
    # the dense phase is the preset's step schedule over its own 10 epochs
    assert plan.lr[49] == pytest.approx(0.1) and plan.lr[50] == pytest.approx(0.01)
    assert plan.lr[75] == pytest.approx(0.001)
    # ALLR phases hold their upper bound η_max until the prune is measured
    assert plan.lr[100 + 3] == pytest.approx(0.1)


def test_ft_plan_uses_the_dense_phase_eta_min():
    plan = IMP.plan(Budget(10, 4), IMPHparams(schedule="ft"), 0.9, STEP)
    np.testing.assert_allclose(plan.lr[36:], 0.001)


def test_bimp_plan_fills_the_budget_with_linear_dense_and_allr_cycles():
    budget = Budget(10, 8)
    plan = BIMP.plan(budget, BIMPHparams(dense_fraction=0.5, cycles=2), 0.9, STEP)
    assert [(p.start_epoch, p.end_epoch) for p in plan.phases] == [(0, 5), (5, 7), (7, 10)]
    assert plan.lr[0] == pytest.approx(0.1) and plan.lr[39] == pytest.approx(0.1 / 40)
    assert len(plan.lr) == budget.total_steps == 80


@pytest.mark.parametrize(
    ("cls", "hp"),
    [(IMP, IMPHparams(phases=3, retrain_fraction=0.2)), (BIMP, BIMPHparams(cycles=6))],
)
def test_plan_refuses_a_too_short_budget(cls, hp):
    with pytest.raises(BudgetError, match="each needs >= 1"):
        cls.plan(Budget(10, 5), hp, 0.9, STEP)


def run(preset, data, method, hparams=(), target=0.9, seed=0, **kw):
    return train_run(RunConfig(preset, method, target, seed, hparams=hparams), dataset=data, **kw)


@pytest.mark.integration
def test_imp_phases_prune_the_per_phase_fraction(tiny_preset, tiny_data):
    preset = tiny_preset.replace(epochs=6)
    seen = []

    def spy(progress):
        seen.append(progress.sparsity)

    result = run(
        preset, tiny_data, "imp", (("phases", "3"), ("retrain_fraction", "0.5")), on_epoch=spy
    )
    p = 1 - 0.1 ** (1 / 3)  # per-phase fraction of the remaining weights
    # epochs 1-2 dense, then a prune at the end of epochs 3, 4, 5 (phases of 1 epoch each)
    assert seen[:2] == [0.0, 0.0]
    for j, s in enumerate(seen[2:5], start=1):
        assert s == pytest.approx(1 - (1 - p) ** j, abs=2e-3)
    assert result.metrics["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert result.metrics["train_steps"] == 6 * 14


@pytest.mark.integration
def test_allr_rescales_the_phase_from_the_measured_norm_drop(tiny_preset, tiny_data, monkeypatch):
    captured = {}
    original = IMP.rescale_allr

    def spy(self, state, j, drop):
        captured["before"] = state.lr.copy()
        original(self, state, j, drop)
        captured.update(after=state.lr.copy(), drop=drop, p=self.fraction, n=self.original_steps)

    monkeypatch.setattr(IMP, "rescale_allr", spy)
    preset = tiny_preset.replace(epochs=10)
    run(preset, tiny_data, "imp", (("retrain_fraction", "0.2"),), target=0.8)
    spe = 14
    eta_max = 0.05  # the preset's peak
    expected = allr_initial_lr(eta_max, captured["drop"], 0.8, 2 * spe, 8 * spe)
    assert captured["p"] == pytest.approx(0.8)
    assert 0 < captured["drop"] < math.sqrt(0.8)  # magnitude pruning removes less than random
    w = int(0.1 * 2 * spe)
    assert captured["after"][8 * spe + w] == pytest.approx(expected)
    np.testing.assert_allclose(captured["after"][: 8 * spe], captured["before"][: 8 * spe])


@pytest.mark.integration
def test_imp_resets_momentum_after_the_dense_phase(tiny_preset, tiny_data, monkeypatch):
    calls = []
    from benchsuite.core.method import TrainState

    original = TrainState.reset_optimizer
    monkeypatch.setattr(
        TrainState, "reset_optimizer", lambda s: (calls.append(s.epoch), original(s))
    )
    run(tiny_preset, tiny_data, "imp", (("retrain_fraction", "0.25"),))
    assert calls == [3]
    calls.clear()
    run(tiny_preset, tiny_data, "bimp", (("cycles", "2"), ("reset_momentum", "false")))
    assert calls == []


@pytest.mark.integration
def test_bimp_reaches_the_target_in_exactly_the_budget(tiny_preset, tiny_data):
    result = run(tiny_preset, tiny_data, "bimp", (("cycles", "2"),), target=0.95)
    assert result.metrics["sparsity"] == pytest.approx(0.95, abs=1e-3)
    # BIMP reaches the target by itself; the harness's projection only fixes rounding
    assert result.metrics["sparsity_before_projection"] == pytest.approx(0.95, abs=2e-3)
    assert result.metrics["train_steps"] == 4 * 14
    assert result.metrics["train_images"] == 4 * 14 * 32
    assert torch.isfinite(torch.tensor(result.metrics["test_accuracy"]))
