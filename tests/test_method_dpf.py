"""DPF: the forward at w ⊙ m while the dense w moves (error feedback), the mask refresh after
every 16th step and at pruning epochs, the stale last mask at the end, the budget check."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.core.budget import Budget, BudgetError
from benchsuite.core.method import TrainState
from benchsuite.data.base import load_dataset
from benchsuite.presets import load_preset
from benchsuite.pruning.schedules import ScheduleSpec
from benchsuite.training.loop import RunConfig, backward_and_step, train_run
from benchsuite_methods.dpf import DPF, DPFHparams
from tests.handmade import hand_state as build_state

SCHEDULE = ScheduleSpec("constant", lr=0.1)
LR, WD = 0.1, 0.01


def hand_state(model: nn.Module, hp: DPFHparams, target: float, epochs: int):
    return build_state(model, DPF, hp, target, Budget(epochs, 8), lr=LR, wd=WD)


def train_step(model: nn.Module, method: DPF, state: TrainState, loss_fn) -> None:
    """One step of the harness with a hand-made loss."""
    backward_and_step(state, method, loss_fn(model))


def dense_of(method: DPF) -> torch.Tensor:
    return method.dense[0].clone()


def test_plan_refuses_a_budget_shorter_than_two_intervals() -> None:
    with pytest.raises(BudgetError) as err:
        DPF.plan(Budget(5, 10), DPFHparams(pruning_interval=3), 0.9, SCHEDULE)
    assert "\n" not in str(err.value) and "pruning_interval=3" in str(err.value)
    assert "5 epochs" in str(err.value)
    DPF.plan(Budget(6, 10), DPFHparams(pruning_interval=3), 0.9, SCHEDULE)


def test_forward_at_masked_point_updates_dense_weights() -> None:
    layer = nn.Linear(4, 2, bias=False)
    w0 = torch.tensor([[0.8, -0.1, 0.5, 0.05], [-0.2, 0.7, -0.02, 0.3]])
    with torch.no_grad():
        layer.weight.copy_(w0)
    # T = 4, P = 2: one prune, at the end of epoch 2, straight to S = 0.5 (4 of 8 kept)
    method, state = hand_state(layer, DPFHparams(pruning_interval=2), 0.5, 4)
    x = torch.tensor([[1.0, 2.0, -1.0, 3.0]])

    def loss_fn(model: nn.Module) -> torch.Tensor:
        return 0.5 * model(x).pow(2).sum()

    train_step(layer, method, state, loss_fn)  # target 0: a plain dense step
    assert method.masks is None and method.dense is None
    state.epoch = 2
    method.on_epoch_end(state)  # the pruning epoch: mask from scratch at S = 0.5
    dense = dense_of(method)
    mask = torch.zeros(8)
    mask[dense.abs().flatten().topk(4).indices] = 1
    mask = mask.view(2, 4)
    assert torch.equal(layer.weight.detach(), dense * mask)  # the forward sees w ⊙ m
    assert torch.allclose(layer(x), x @ (dense * mask).T)
    buf = state.optimizer.state[layer.weight]["momentum_buffer"].clone()
    # the next step: the gradient at w ⊙ m, applied (with wd and momentum) to the dense w
    grad = (x @ (dense * mask).T).T @ x  # ∂/∂W of ½‖W̃x‖² at W̃ = w ⊙ m
    train_step(layer, method, state, loss_fn)
    new_buf = 0.9 * buf + grad + WD * dense
    expected = dense - LR * new_buf
    assert torch.allclose(dense_of(method), expected, atol=1e-6)
    pruned = mask == 0
    assert bool((dense_of(method)[pruned] != dense[pruned]).all())  # pruned weights moved
    assert torch.equal(layer.weight.detach(), dense_of(method) * mask)  # same mask: no refresh
    method.on_finish(state)
    assert method.dense is None and type(layer.weight) is nn.Parameter
    assert torch.allclose(layer.weight.detach(), expected * mask, atol=1e-6)


def test_mask_refresh_after_every_16th_step_only() -> None:
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.9, 0.1, 0.05]]))
    method, state = hand_state(layer, DPFHparams(pruning_interval=1), 0.5, 2)
    state.epoch = 1
    method.on_epoch_end(state)  # 2 of 4 kept: entries 0 and 1
    assert torch.equal(layer.weight.detach() != 0, torch.tensor([[True, True, False, False]]))
    # a gradient that grows the pruned entry 3 and shrinks the kept entry 1 (the loss reads
    # the forward weight, so its gradient is the same wherever the forward is masked)
    push = torch.tensor([[0.0, 0.1, 0.0, -0.1]])

    def loss_fn(model: nn.Module) -> torch.Tensor:
        return (model.weight * push).sum()

    first_mask = torch.tensor([[True, True, False, False]])
    for step in range(1, 17):
        train_step(layer, method, state, loss_fn)
        dense = dense_of(method).flatten()
        assert state.step == step
        if step == 12:  # the dense ranking has flipped (3 above 1) ...
            assert dense[3].abs() > dense[1].abs()
        if step < 16:  # ... but the forward keeps the mask of the pruning epoch
            assert torch.equal(layer.weight.detach() != 0, first_mask)
    # after the 16th step (global counter from 1) the mask is recomputed from the dense w
    assert torch.equal(layer.weight.detach() != 0, torch.tensor([[True, False, False, True]]))
    assert torch.equal(layer.weight.detach(), dense_of(method) * torch.tensor([[1, 0, 0, 1.0]]))
    # the end: the last computed mask (≤ 15 steps old), applied to the newest dense w
    for _ in range(5):
        train_step(layer, method, state, loss_fn)
    final_dense = dense_of(method)
    method.on_finish(state)
    assert torch.equal(layer.weight.detach(), final_dense * torch.tensor([[1, 0, 0, 1.0]]))


@pytest.mark.integration
def test_end_to_end_plain_weights_at_the_target() -> None:
    data = load_dataset("synthetic", n=160, n_test=40, shape=(1, 8, 8))
    preset = load_preset("digits").replace(dataset="synthetic", epochs=4, batch_size=16)
    config = RunConfig(preset=preset, method="dpf", target=0.8, seed=0)
    curve: list[float] = []
    result = train_run(config, dataset=data, on_epoch=lambda p: curve.append(p.sparsity))
    # T = 4, P = 1: the reference rule ends the ramp at E = 3; targets 0.8·(1 − (2/3)³),
    # 0.8·(1 − (1/3)³), then 0.8 (kept in the last epoch)
    assert curve[0] == pytest.approx(0.8 * 19 / 27, abs=1e-3)
    assert curve[1] == pytest.approx(0.8 * 26 / 27, abs=1e-3)
    assert all(c == pytest.approx(0.8, abs=1e-3) for c in curve[2:])
    model = result.model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert result.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
