"""The Table 1 setting (imp-retrain): dense for the full budget, N extra retraining steps."""

import numpy as np
import pytest

from benchsuite.core.budget import Budget, BudgetError, Phase, Plan
from benchsuite.core.identity import run_key
from benchsuite.execution.grid import parse_methods
from benchsuite.pruning.schedules import RETRAIN_SCHEDULES, ScheduleSpec, allr_initial_lr
from benchsuite.training.loop import RunConfig, train_run
from benchsuite.training.runner import key_for
from benchsuite_methods.imp import IMP, IMPHparams
from benchsuite_methods.imp_retrain import IMPRetrain, IMPRetrainHparams

STEP = ScheduleSpec("multistep", lr=0.1, milestones=(0.5, 0.75))


def test_retraining_length_of_2_22_percent_by_hand():
    # digits: 20 epochs × 40 steps = 800 dense steps; 0.0222 · 800 = 17.76 → 18 steps
    plan = IMPRetrain.plan(Budget(20, 40), IMPRetrainHparams(retrain_budget=0.0222), 0.9, STEP)
    assert plan.extra_steps == 18 and plan.total_steps == 818 and len(plan.lr) == 818
    assert [(p.name, p.start_epoch, p.end_epoch) for p in plan.phases] == [
        ("dense", 0, 20),
        ("retrain-1", 20, 21),  # one partial epoch
    ]
    assert plan.phase_steps(plan.phases[1]) == slice(800, 818)
    assert plan.epochs == 21
    # fashion-mnist: 10 epochs × 421 steps; 0.0222 · 4210 = 93.46 → 93 steps
    hp = IMPRetrainHparams(retrain_budget=0.0222)
    assert IMPRetrain.retrain_steps(Budget(10, 421), hp) == 93


@pytest.mark.parametrize("fraction", [0.0222, 0.0555, 0.1111])
def test_every_schedule_gets_the_same_steps_at_a_budget(fraction):
    budget = Budget(10, 421)
    steps = set()
    for name in RETRAIN_SCHEDULES:
        hp = IMPRetrainHparams(schedule=name, retrain_budget=fraction)
        plan = IMPRetrain.plan(budget, hp, 0.9, STEP)
        steps.add((plan.extra_steps, plan.total_steps, plan.cache_key, plan.cache_epoch))
    n = round(fraction * 4210)
    assert steps == {(n, 4210 + n, "preset-schedule-dense-10ep", 10)}


def test_the_original_training_of_the_schedules_is_the_whole_dense_run():
    budget = Budget(10, 20)
    record_plan = IMPRetrain.plan(budget, IMPRetrainHparams(schedule="lrw"), 0.9, STEP)
    dense = record_plan.lr[:200]
    lrw = record_plan.lr[200:]
    np.testing.assert_array_equal(lrw, dense[200 - len(lrw) :])  # replays the dense run's tail
    ft = IMPRetrain.plan(budget, IMPRetrainHparams(schedule="ft", retrain_budget=0.1), 0.9, STEP)
    np.testing.assert_allclose(ft.lr[200:], 0.001)  # η_min of the dense run's step schedule
    hp = IMPRetrainHparams(schedule="allr", retrain_budget=0.1)
    plan = IMPRetrain.plan(budget, hp, 0.9, STEP)
    method = IMPRetrain(hp, 0.9, plan)
    assert method.original_steps == 200 and method.fraction == pytest.approx(0.9)
    # ALLR's lower bound η_max · N/(T·I): 20 of 200 steps
    assert allr_initial_lr(0.1, 0.0, 0.9, 20, method.original_steps) == pytest.approx(0.01)


def test_a_budget_with_no_retraining_step_is_refused():
    with pytest.raises(BudgetError, match="retrain_budget=0.0001"):
        IMPRetrain.plan(Budget(4, 14), IMPRetrainHparams(retrain_budget=0.0001), 0.9, STEP)


def test_budget_equal_plans_are_unchanged():
    budget = Budget(10, 4)
    plan = IMP.plan(budget, IMPHparams(), 0.9, STEP)
    assert plan.extra_steps == 0 and plan.total_steps == budget.total_steps
    assert plan.epochs == 10 and plan.phase_steps(plan.phases[-1]) == slice(36, 40)
    with pytest.raises(BudgetError, match="3 learning rates for 2 steps"):
        Plan(Budget(1, 2), (Phase("train", 0, 1),), np.zeros(3))


def test_methods_all_leaves_the_study_setting_out():
    assert "imp-retrain" not in parse_methods("all")
    assert parse_methods("imp-retrain") == ["imp-retrain"]


def run(preset, data, hparams, target=0.9, **kw):
    config = RunConfig(preset, "imp-retrain", target, 0, hparams=hparams)
    return config, train_run(config, dataset=data, **kw)


@pytest.mark.integration
def test_the_loop_stops_inside_the_last_epoch(tiny_preset, tiny_data):
    seen = []
    _, result = run(
        tiny_preset,
        tiny_data,
        (("retrain_budget", "0.3"),),
        on_epoch=lambda p: seen.append((p.epoch, p.epochs, p.step, p.sparsity)),
    )
    # 4 × 14 dense steps, then round(0.3 · 56) = 17 steps: one full epoch and 3 steps
    assert [s[:3] for s in seen] == [(e, 6, 14 * e) for e in range(1, 6)] + [(6, 6, 73)]
    assert seen[3][3] == pytest.approx(0.9, abs=1e-3)  # pruned at the end of the dense run
    assert result.metrics["train_steps"] == 73
    assert result.metrics["train_images"] == 73 * 32
    assert result.metrics["sparsity"] == pytest.approx(0.9, abs=1e-3)


@pytest.mark.integration
def test_one_dense_run_per_seed_serves_every_schedule_sparsity_and_budget(
    tiny_preset, tiny_data, tmp_path
):
    cache = tmp_path / "cache"
    cells = [("ft", "0.2", 0.9), ("allr", "0.5", 0.95), ("lrw", "0.1", 0.8)]
    results = [
        run(
            tiny_preset,
            tiny_data,
            (("schedule", s), ("retrain_budget", b)),
            target=t,
            cache_dir=cache,
        )[1]
        for s, b, t in cells
    ]
    assert [r.tags["cached_dense"] for r in results] == ["false", "true", "true"]
    assert len(list(cache.glob("*.pt"))) == 1
    assert [r.metrics["train_steps"] for r in results] == [56 + 11, 56 + 28, 56 + 6]


def test_the_run_key_counts_the_extra_steps(tiny_preset, tiny_data):
    base = RunConfig(tiny_preset, "imp-retrain", 0.9, 0, hparams=(("retrain_budget", "0.2"),))
    other = RunConfig(tiny_preset, "imp-retrain", 0.9, 0, hparams=(("retrain_budget", "0.2"),))
    assert key_for(base, tiny_data) == key_for(other, tiny_data)

    assert key_for(base, tiny_data) == run_key(base, tiny_data.fingerprint, 56 + 11)
    dense = RunConfig(tiny_preset, "dense", 0.9, 0)
    assert key_for(dense, tiny_data) == run_key(dense, tiny_data.fingerprint, 56)
