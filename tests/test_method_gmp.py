"""GMP: the cubic sparsity after every pruning epoch, the zeroed momentum of newly pruned
entries, recovery's re-ranking of weight-decayed w_orig, the budget check, the end state."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.core.budget import Budget, BudgetError
from benchsuite.data.base import load_dataset
from benchsuite.presets import load_preset
from benchsuite.pruning.ramps import cubic_schedule, ramp_end_epoch
from benchsuite.pruning.schedules import ScheduleSpec
from benchsuite.training.loop import RunConfig, train_run
from benchsuite_methods.gmp import GMP, GMPHparams
from tests.handmade import hand_state as build_state

SCHEDULE = ScheduleSpec("constant", lr=0.1)


def hand_state(model: nn.Module, method_cls, hp, target: float, epochs: int, lr: float, wd: float):
    """A TrainState built by hand around ``model`` (plain SGD with momentum, no Nesterov)."""
    return build_state(model, method_cls, hp, target, Budget(epochs, 4), lr=lr, wd=wd)


def ranked_linear(n_in: int = 20, n_out: int = 10) -> nn.Linear:
    """Weights with distinct magnitudes 1..N in a fixed shuffled order and mixed signs."""
    layer = nn.Linear(n_in, n_out, bias=False)
    n = n_in * n_out
    g = torch.Generator().manual_seed(1)
    magnitudes = torch.randperm(n, generator=g).float() + 1
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        layer.weight.copy_((magnitudes * signs).view(n_out, n_in) / n)
    return layer


def fill_momentum(opt: torch.optim.Optimizer, value: float = 1.0) -> None:
    for group in opt.param_groups:
        for p in group["params"]:
            opt.state[p]["momentum_buffer"] = torch.full_like(p, value)


def test_cubic_schedule_by_hand() -> None:
    # E = 6, P = 2: prunes at the ends of epochs 2, 4, 6
    s = cubic_schedule(6, 2, 0.9)
    assert list(s) == [2, 4, 6]
    assert s[2] == pytest.approx(0.9 * (1 - (1 - 2 / 6) ** 3))  # 0.9·19/27 = 0.6333
    assert s[4] == pytest.approx(0.9 * 26 / 27)
    assert s[6] == 0.9  # exactly S at E
    assert cubic_schedule(1, 1, 0.5) == {1: 0.5}


def test_ramp_end_under_a_constant_schedule_is_the_reference_rule() -> None:
    # the LR never falls: E = T − P rounded down to a multiple of P, = (⌊T/P⌋ − 1)·P
    for epochs, interval, expected in ((8, 2, 6), (9, 2, 6), (10, 1, 9), (2, 1, 1)):
        budget = Budget(epochs, 4)
        GMP.plan(budget, GMPHparams(pruning_interval=interval), 0.9, SCHEDULE)
        assert ramp_end_epoch(budget, interval, None) == expected


def test_ramp_end_is_the_reference_rule_under_a_step_decay_too() -> None:
    """Fashion-MNIST's schedule (×0.1 at 50 % and 75 % of 10 epochs): the default ignores the
    schedule, E = (⌊10/1⌋ − 1)·1 = 9; a fraction puts E where it says."""
    budget = Budget(10, 421)
    step_decay = ScheduleSpec("multistep", lr=0.02, milestones=(0.5, 0.75), gamma=0.1)

    def planned(hp: GMPHparams, target: float) -> GMP:
        return GMP(hp, target, GMP.plan(budget, hp, target, step_decay))

    method = planned(GMPHparams(), 0.98)
    assert method.last_epoch == 9
    assert list(method.schedule) == list(range(1, 10)) and method.schedule[9] == 0.98
    assert planned(GMPHparams(ramp_end=0.7), 0.98).last_epoch == 7
    # an explicit fraction: 0.5 of 10 epochs → E = 5; with P = 2 rounded to a multiple of 2
    assert planned(GMPHparams(ramp_end=0.5), 0.9).last_epoch == 5
    assert planned(GMPHparams(pruning_interval=2, ramp_end=0.5), 0.9).last_epoch in (4, 6)
    with pytest.raises(BudgetError, match="ramp_end=0.95"):  # epoch 10: nothing trains after it
        GMP.plan(budget, GMPHparams(ramp_end=0.95), 0.9, step_decay)


def test_plan_refuses_a_budget_shorter_than_two_intervals() -> None:
    with pytest.raises(BudgetError) as err:
        GMP.plan(Budget(3, 10), GMPHparams(pruning_interval=2), 0.9, SCHEDULE)
    message = str(err.value)
    assert "\n" not in message and "pruning_interval=2" in message and "3 epochs" in message
    hp = GMPHparams(pruning_interval=2)
    plan = GMP.plan(Budget(4, 10), hp, 0.9, SCHEDULE)
    assert len(plan.lr) == 40 and GMP(hp, 0.9, plan).last_epoch == 2


def test_sparsity_after_each_pruning_epoch_and_zeroed_momentum() -> None:
    layer = ranked_linear()  # N = 200, |w| = k/200 for k = 1..200
    # lr small enough that the steps below keep the magnitude ranking (spacing 1/200)
    method, state = hand_state(layer, GMP, GMPHparams(pruning_interval=2), 0.9, 8, 1e-4, 1e-2)
    magnitude_rank = layer.weight.detach().abs().flatten().argsort()  # smallest first
    fill_momentum(state.optimizer)
    # Hand computation (T = 8, P = 2, S = 0.9, N = 200), docs/methods.md:
    #  epoch 2: S = 0.9·19/27 = 0.63333 of all 200  → round(126.67) = 127 pruned, 73 alive
    #  epoch 4: 1 − (1 − 0.86667)/(1 − 0.63333) = 0.63636 of 73 → round(46.45) = 46, 27 alive
    #  epoch 6: 1 − (1 − 0.9)/(1 − 0.86667) = 0.25 of 27 → round(6.75) = 7, 20 alive (= 10 %)
    expected_zeros = {2: 127, 4: 173, 6: 180}
    for epoch in range(1, 9):
        before = layer.weight.detach().clone()
        state.epoch = epoch
        method.on_epoch_end(state)
        w = layer.weight.detach().flatten()
        if epoch not in expected_zeros:
            assert torch.equal(layer.weight.detach(), before)  # no prune between pruning epochs
            continue
        zeros = expected_zeros[epoch]
        assert int((w == 0).sum()) == zeros
        # the pruned entries are the globally smallest magnitudes
        assert torch.equal(w[magnitude_rank[:zeros]], torch.zeros(zeros))
        assert bool((w[magnitude_rank[zeros:]] != 0).all())
        # momentum zero exactly at the pruned entries; untouched (1) at the others
        buf = state.optimizer.state[layer.weight]["momentum_buffer"].flatten()
        assert torch.equal(buf == 0, w == 0)
        assert bool((buf[w != 0] == 1).all())
        assert state.logged["gmp_scheduled_sparsity"] == pytest.approx(
            {2: 0.9 * 19 / 27, 4: 0.9 * 26 / 27, 6: 0.9}[epoch]
        )
        # a training step (gradient everywhere, weight decay, momentum) keeps them at zero
        layer.weight.grad = torch.ones_like(layer.weight)
        state.masks.mask_grads()
        state.optimizer.step()
        assert torch.equal(layer.weight.detach() == 0, (w == 0).view_as(layer.weight))
        fill_momentum(state.optimizer)
    method.on_finish(state)
    assert type(layer.weight) is nn.Parameter and int((layer.weight == 0).sum()) == 180


def test_recovering_decays_masked_w_orig_and_reranks_everything() -> None:
    layer = ranked_linear()
    lr, wd = 0.1, 1e-2
    hp = GMPHparams(pruning_interval=2, allow_recovering=True)
    method, state = hand_state(layer, GMP, hp, 0.9, 8, lr, wd)
    assert parametrize.is_parametrized(layer, "weight")
    original = layer.parametrizations.weight.original
    fill_momentum(state.optimizer)
    state.epoch = 2
    method.on_epoch_end(state)
    assert method.current == 0.0  # reference bookkeeping: back to 0 after a non-last prune
    masked = layer.weight.detach() == 0
    assert int(masked.sum()) == 127
    assert torch.equal(original.detach() != 0, torch.ones_like(masked))  # w_orig is kept
    buf = state.optimizer.state[original]["momentum_buffer"]
    assert torch.equal(buf == 0, masked)  # momentum zeroed at the pruned positions
    # one step of a loss through the forward: masked entries get no loss gradient, only decay
    w0 = original.detach().clone()
    x = torch.randn(3, 20)
    layer(x).pow(2).sum().backward()
    assert torch.equal(original.grad[masked], torch.zeros(127))
    state.optimizer.step()
    # masked: buf = 0.9·0 + wd·w, w ← w − lr·wd·w (frozen apart from weight decay)
    assert torch.allclose(original.detach()[masked], w0[masked] * (1 - lr * wd), rtol=0, atol=1e-7)
    assert torch.equal(layer.weight.detach()[masked], torch.zeros(127))
    # hand-made state: shrink every kept w_orig below every masked one; the next prune
    # restores all w_orig and re-ranks from scratch, so the masked ones come back
    with torch.no_grad():
        original[~masked] *= 1e-4
    state.epoch = 4
    method.on_epoch_end(state)
    kept = layer.weight.detach() != 0
    assert int(kept.sum()) == 200 - round(0.9 * 26 / 27 * 200) == 27  # fresh mask at S(4)
    assert bool(masked[kept].all())  # all 27 survivors are previously masked entries
    state.epoch = 6
    method.on_epoch_end(state)
    assert method.current == 0.9  # ... except after the last prune
    assert int((layer.weight == 0).sum()) == 180
    method.on_finish(state)
    assert not parametrize.is_parametrized(layer)
    assert type(layer.weight) is nn.Parameter and int((layer.weight == 0).sum()) == 180


@pytest.mark.parametrize("recover", [False, True])
@pytest.mark.integration
def test_end_to_end_plain_weights_at_the_target(recover: bool) -> None:
    data = load_dataset("synthetic", n=160, n_test=40, shape=(1, 8, 8))
    preset = load_preset("digits").replace(dataset="synthetic", epochs=6, batch_size=32)
    hp = (("allow_recovering", str(recover)), ("pruning_interval", "2"))
    config = RunConfig(preset=preset, method="gmp", target=0.8, seed=0, hparams=hp)
    curve: list[float] = []
    result = train_run(config, dataset=data, on_epoch=lambda p: curve.append(p.sparsity))
    # T = 6, P = 2: K = 2 prunes at the ends of epochs 2 (0.8·7/8 = 0.7) and 4 (0.8)
    assert curve[0] == 0 and curve[1] == pytest.approx(0.7, abs=2e-3)
    assert curve[3] == pytest.approx(0.8, abs=2e-3) and curve[5] == curve[3]
    model = result.model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert result.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert result.metrics["train_steps"] == 6 * data.steps_per_epoch(32)
