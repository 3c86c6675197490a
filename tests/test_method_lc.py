"""LC: the penalty μ_t·w added to the gradients of the entries outside the global top-k |w|
(weights, biases and BN alike), k = ⌊(1 − S)·N_prunable⌋; μ_t = μ₀·a^epoch with μ₀ from the
budget's total pull; the end state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.core.budget import Budget
from benchsuite.data.base import load_dataset
from benchsuite.presets import load_preset
from benchsuite.training.loop import RunConfig, train_run
from benchsuite_methods.lc import LC, LCHparams, penalty_schedule
from tests.handmade import hand_state as build_state

LR = 0.1


def tiny_model() -> nn.Sequential:
    """Linear 3→2 (6 prunable weights, 2 biases), BatchNorm1d(2) (2 weights, 2 biases)."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.1, -1.2]]))
        model[0].bias.copy_(torch.tensor([2.5, -0.5]))
        model[1].weight.copy_(torch.tensor([0.9, 1.5]))
        model[1].bias.copy_(torch.tensor([0.2, -0.3]))
    return model


def hand_state(model: nn.Module, target: float, wd: float, hp: LCHparams | None = None):
    return build_state(model, LC, hp or LCHparams(), target, Budget(2, 4), lr=LR, wd=wd)


def test_penalty_at_step_t_by_hand() -> None:
    """2 epochs of 4 steps at a constant LR 0.1, momentum 0.9, G = 4: a = 4 per epoch,
    μ_t = μ₀ for t < 4 and 4·μ₀ after; the total pull Σ η_t·μ_t/(1 − 0.9) = 0.1·μ₀·(4 + 16)/0.1
    = 20·μ₀ = 17 → μ₀ = 0.85."""
    lr = np.full(8, 0.1)
    mu = penalty_schedule(lr, 4, 0.9, LCHparams(total_pull=17.0, penalty_growth=4.0))
    assert mu[:4] == pytest.approx([0.85] * 4) and mu[4:] == pytest.approx([3.4] * 4)
    # Fashion-MNIST's 10 × 421 steps, LR 0.02 → 0.002 → 0.0002 at 50 % / 75 %, G = 1.1^30:
    # the pull adds up to the requested total whatever the schedule
    steps = np.arange(4210)
    fm = 0.02 * np.where(steps < 2105, 1.0, np.where(steps < 3157, 0.1, 0.01))
    hp = LCHparams()
    mu = penalty_schedule(fm, 421, 0.9, hp)
    assert float(np.sum(fm * mu)) / 0.1 == pytest.approx(hp.total_pull)
    assert mu[-1] / mu[0] == pytest.approx(hp.penalty_growth)


def test_penalty_hits_only_the_entries_outside_the_top_k() -> None:
    wd = 0.01
    model = tiny_model()
    method, state = hand_state(model, 0.5, wd)  # N_prunable = 6 → k = 3 over all 12 entries
    lin, bn = model
    # |w| by hand: weight [[1, 2, 0.5], [3, 0.1, 1.2]], bias [2.5, 0.5], bn [0.9, 1.5], [0.2, 0.3]
    # top 3: lin.weight[1, 0] = 3, lin.bias[0] = 2.5, lin.weight[0, 1] = 2
    top = {
        lin.weight: torch.tensor([[False, True, False], [True, False, False]]),
        lin.bias: torch.tensor([True, False]),
        bn.weight: torch.tensor([False, False]),
        bn.bias: torch.tensor([False, False]),
    }
    g = torch.Generator().manual_seed(3)
    grads = {p: torch.randn(p.shape, generator=g) for p in top}
    for p, grad in grads.items():
        p.grad = grad.clone()
    before = {p: p.detach().clone() for p in top}
    mu = method.penalty(state)
    assert mu == pytest.approx(float(method.mu[0])) and mu > 0
    method.on_backward(state)
    for p, grad in grads.items():
        # the gradient of μ/2·‖w − Π(w)‖²: μ·w outside the top-k, nothing on it
        expected = torch.where(top[p], grad, grad + mu * before[p])
        assert torch.allclose(p.grad, expected, atol=1e-6)
    state.step = 4  # the second epoch: μ₀·a
    assert method.penalty(state) == pytest.approx(mu * LCHparams().penalty_growth)


@pytest.mark.integration
def test_end_to_end_plain_weights_at_the_target() -> None:
    data = load_dataset("synthetic", n=160, n_test=40, shape=(1, 8, 8))
    preset = load_preset("digits").replace(dataset="synthetic", epochs=2, batch_size=32)
    config = RunConfig(preset=preset, method="lc", target=0.8, seed=0)
    result = train_run(config, dataset=data)
    model = result.model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert result.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
