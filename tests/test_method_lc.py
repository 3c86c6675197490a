"""LC: −wd·w added to the gradients of the global top-k |w| (weights, biases and BN alike), so
only the small entries feel weight decay; k = ⌊(1 − S)·N_prunable⌋; the end state."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.budget import Budget
from benchsuite.data import load_dataset
from benchsuite.method import NoHparams
from benchsuite.presets import load_preset
from benchsuite.train import RunConfig, train_run
from methods.lc import LC
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


def hand_state(model: nn.Module, target: float, wd: float):
    return build_state(model, LC, NoHparams(), target, Budget(1, 4), lr=LR, wd=wd)


def test_decay_hits_only_the_entries_outside_the_top_k() -> None:
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
    method.after_backward(state)
    for p, grad in grads.items():
        # the exact gradient after the edit: g − wd·w on the top-k, g elsewhere
        expected = torch.where(top[p], grad - wd * before[p], grad)
        assert torch.equal(p.grad, expected)
    state.optimizer.step()  # coupled L2 adds +wd·w everywhere: it cancels on the top-k
    for p, grad in grads.items():
        w = before[p]
        decayed = w - LR * (grad + wd * w)
        undecayed = w - LR * grad
        assert torch.allclose(p.detach(), torch.where(top[p], undecayed, decayed), atol=1e-7)


def test_weight_decay_is_read_from_the_optimizer() -> None:
    model = tiny_model()
    method, state = hand_state(model, 0.5, 0.0)  # no decay: LC is plain SGD
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    method.after_backward(state)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    state.optimizer.param_groups[0]["weight_decay"] = 0.5
    method.after_backward(state)
    assert model[0].weight.grad[1, 0] == 1 - 0.5 * 3.0 and model[1].bias.grad[1] == 1


def test_end_to_end_plain_weights_at_the_target() -> None:
    data = load_dataset("synthetic", n=160, n_test=40, shape=(1, 8, 8))
    preset = load_preset("digits").replace(dataset="synthetic", epochs=2, batch_size=32)
    config = RunConfig(preset=preset, method="lc", target=0.8, seed=0)
    result = train_run(config, dataset=data)
    model = result.model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert result.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
