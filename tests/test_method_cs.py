"""CS mechanics against hand computations: the effective weight w·σ(βm)/σ(s₀), the annealed β,
the gradients against autograd of the composed loss, and the soft-scaled weights with the
mask m > 0 stored at the end."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.core.budget import Budget
from benchsuite.core.method import TrainState, parse_hparams
from benchsuite.pruning.masks import achieved_sparsity, latent_weight
from benchsuite.pruning.schedules import ScheduleSpec
from benchsuite_methods.cs import CS


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def prepared(model: nn.Module, wd=0.0, steps=10, **hp):
    budget = Budget(1, steps)
    params = parse_hparams(CS.Hparams, hp)
    plan = CS.plan(budget, params, 0.5, ScheduleSpec(kind="constant", lr=0.1))
    method = CS(params, 0.5, plan)

    def factory():
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=wd)

    state = TrainState(model, budget, plan, plan.lr.copy(), torch.Generator(), factory)
    method.on_start(state)
    state.optimizer = factory()
    return method, state


def tiny(w) -> nn.Linear:
    layer = nn.Linear(len(w[0]), len(w), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w))
    return layer


def logits(layer: nn.Module) -> nn.Parameter:
    return layer.parametrizations.weight[0].logits


def test_initial_effective_weight_is_w():
    layer = tiny([[0.5, -0.2, 0.05]])
    prepared(layer, s_initial=-0.1)
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[0.5, -0.2, 0.05]]))
    assert logits(layer).tolist() == [[pytest.approx(-0.1)] * 3]


def test_beta_anneals_geometrically_per_step():
    layer = tiny([[1.0]])
    method, state = prepared(layer, steps=10, beta_final=100.0)
    assert float(method.temperature.beta) == 1.0
    state.step = 5
    method.on_step_end(state)
    assert float(method.temperature.beta) == pytest.approx(10.0)  # 100^(5/10)
    state.step = 10
    method.on_step_end(state)
    assert float(method.temperature.beta) == pytest.approx(100.0)


def test_effective_weight_by_hand():
    layer = tiny([[0.5, -0.2], [1.0, 2.0]])
    method, state = prepared(layer, wd=0.01, s_initial=0.0, penalty=0.1, beta_final=4.0, steps=2)
    with torch.no_grad():
        logits(layer).copy_(torch.tensor([[1.0, -1.0], [0.5, 0.0]]))
    state.step = 1
    method.on_step_end(state)  # β = 4^(1/2) = 2
    gates = [[sig(2.0), sig(-2.0)], [sig(1.0), 0.5]]
    expected = [[0.5 * gates[0][0] / 0.5, -0.2 * gates[0][1] / 0.5], [gates[1][0] / 0.5, 2.0]]
    assert layer.weight.tolist() == [[pytest.approx(v) for v in row] for row in expected]


@pytest.mark.parametrize("l2_doubled", ["true", "false"])
def test_gradients_equal_autograd_of_the_composed_loss(l2_doubled):
    """after_backward's gradients = autograd of loss + λ·Σσ(βm) (+ ½·wd·Σ‖w‖²) over
    w·σ(βm)/σ(s₀), for weights and logits, at β = 2."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 4))
    method, state = prepared(
        net, wd=0.05, s_initial=0.2, penalty=0.3, beta_final=4.0, steps=2, l2_doubled=l2_doubled
    )
    layers = (net[0], net[2])
    with torch.no_grad():
        for m in layers:
            logits(m).copy_(torch.randn(logits(m).shape, generator=gen))
    state.step = 1
    method.on_step_end(state)  # β = 4^(1/2) = 2
    x = torch.randn(5, 2, 4, 4, generator=gen)
    net(x).square().sum().backward()
    method.on_backward(state)
    params = [latent_weight(m) for m in layers] + [logits(m) for m in layers]
    fast = [p.grad.clone() for p in params]

    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    ws, ms = leaves[:2], leaves[2:]
    weights = [w * torch.sigmoid(2.0 * m) / sig(0.2) for w, m in zip(ws, ms)]
    h = nn.functional.conv2d(x, weights[0], net[0].bias.detach())
    out = nn.functional.linear(h.flatten(1), weights[1], net[2].bias.detach())
    loss = out.square().sum() + 0.3 * sum(torch.sigmoid(2.0 * m).sum() for m in ms)
    if l2_doubled == "true":
        loss = loss + 0.5 * 0.05 * sum(w.square().sum() for w in ws)
    loss.backward()
    for mine, leaf in zip(fast, leaves):
        torch.testing.assert_close(mine, leaf.grad)


def test_logits_are_in_the_single_sgd_group():
    layer = tiny([[0.5, -0.2]])
    _, state = prepared(layer, wd=1e-4)
    assert any(p is logits(layer) for p in state.optimizer.param_groups[0]["params"])


def test_finalize_stores_soft_scaled_weights_masked_at_m_positive():
    layer = tiny([[0.5, -0.2, 0.3]])
    method, state = prepared(layer, s_initial=0.0, beta_final=9.0, steps=2)
    with torch.no_grad():
        logits(layer).copy_(torch.tensor([[0.5, -0.5, 0.0]]))
    state.step = 2
    method.on_finish(state)  # β = 9: kept only m > 0
    assert not parametrize.is_parametrized(layer)
    assert type(layer.weight) is nn.Parameter
    assert layer.weight.tolist() == [[pytest.approx(0.5 * sig(4.5) / 0.5), 0.0, 0.0]]
    assert latent_weight(layer) is layer.weight
    assert achieved_sparsity(layer) == pytest.approx(2 / 3)
