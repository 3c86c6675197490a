"""STR mechanics against hand computations: the effective weight sign(w)·relu(|w| − σ(s)), its
exact gradients, the SGD weight decay acting on s, and the shrunk weights stored at the end."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.core.budget import Budget
from benchsuite.core.method import TrainState, parse_hparams
from benchsuite.models import build_model
from benchsuite.pruning.batched import FlatLayout
from benchsuite.pruning.masks import achieved_sparsity, latent_weight
from benchsuite.pruning.schedules import ScheduleSpec
from benchsuite_methods.str import STR, shrink
from tests.oracles import soft_threshold_reference

W = [[0.5, -0.2, 0.05, -0.01]]
S0 = math.log(0.1 / 0.9)  # σ(S0) = 0.1


def prepared(model: nn.Module, lr=0.1, wd=0.0, momentum=0.0, nesterov=False, **hp):
    budget = Budget(1, 10)
    params = parse_hparams(STR.Hparams, {"s_initial": S0, **hp})
    plan = STR.plan(budget, params, 0.5, ScheduleSpec(kind="constant", lr=lr))
    method = STR(params, 0.5, plan)

    def factory():  # the harness's optimizer: SGD over all parameters in one group
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov
        )

    state = TrainState(model, budget, plan, plan.lr.copy(), torch.Generator(), factory)
    method.on_start(state)
    state.optimizer = factory()
    return method, state


def tiny() -> nn.Linear:
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W))
    return layer


def test_effective_weight_is_the_soft_threshold():
    layer = tiny()
    prepared(layer)
    # σ(s) = 0.1: 0.5 → 0.4, −0.2 → −0.1, |0.05|, |−0.01| ≤ 0.1 → exactly 0
    assert layer.weight.tolist() == [[pytest.approx(0.4), pytest.approx(-0.1), 0.0, 0.0]]
    assert torch.equal(layer.weight == 0, torch.tensor([[False, False, True, True]]))


def test_gradients_of_w_and_s_are_exact():
    layer = tiny()
    method, state = prepared(layer)
    c = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    (layer.weight * c).sum().backward()
    assert latent_weight(layer).grad is None  # the latents' gradients come from the hook
    method.on_backward(state)
    s = layer.parametrizations.weight[0].s
    # ∂L/∂w = c·1[|w| > σ]; ∂L/∂s = Σ c·(−sign w)·1[|w| > σ] · σ(1 − σ) = (−1 + 2)·0.09
    assert latent_weight(layer).grad.tolist() == [[1.0, 2.0, 0.0, 0.0]]
    assert float(s.grad) == pytest.approx(0.09)


def test_weight_decay_acts_on_s():
    layer = tiny()
    lr, wd, mu = 0.1, 0.01, 0.9
    method, state = prepared(layer, lr=lr, wd=wd, momentum=mu, nesterov=True)
    s = layer.parametrizations.weight[0].s
    assert any(p is s for p in state.optimizer.param_groups[0]["params"])  # in the single group
    c = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    (layer.weight * c).sum().backward()
    method.on_backward(state)
    state.optimizer.step()
    # first Nesterov step: d = g + wd·s; buf = d; update = d + μ·buf = (1 + μ)(g + wd·s)
    expected = S0 - lr * (1 + mu) * (0.09 + wd * S0)
    assert float(s.detach()) == pytest.approx(expected, rel=1e-6)
    # without any loss gradient the decay alone pulls s towards 0: the threshold σ(s) rises
    layer2 = tiny()
    _, state2 = prepared(layer2, lr=lr, wd=wd)
    s2 = layer2.parametrizations.weight[0].s
    s2.grad = torch.zeros_like(s2)
    state2.optimizer.step()
    assert float(s2.detach()) == pytest.approx(S0 * (1 - lr * wd))
    assert float(torch.sigmoid(s2.detach())) > 0.1


def test_one_threshold_per_layer_or_one_global():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    method, state = prepared(net)
    assert method.thresholds(net).shape == (2,)  # an entry per layer, one Parameter
    assert sum(1 for n, _ in net.named_parameters() if n.endswith(".s")) == 1
    net2 = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    method2, _ = prepared(net2, use_global_threshold="true")
    assert method2.thresholds(net2).shape == (1,)
    assert sum(1 for n, _ in net2.named_parameters() if n.endswith(".s")) == 1


def test_finalize_stores_the_shrunk_weights_as_plain_tensors():
    layer = tiny()
    method, state = prepared(layer)
    method.on_finish(state)
    assert not parametrize.is_parametrized(layer)
    assert type(layer.weight) is nn.Parameter
    assert layer.weight.tolist() == [[pytest.approx(0.4), pytest.approx(-0.1), 0.0, 0.0]]
    assert achieved_sparsity(layer) == 0.5  # what the loop records before projecting


def test_default_threshold_lets_lenet5_train():
    """The debug s_initial = −0.1 zeroes every LeNet-5 weight; the default keeps nearly all."""
    torch.manual_seed(0)
    net = build_model("lenet5", 10, (1, 28, 28))
    method, _ = prepared(net, s_initial=STR.Hparams().s_initial)
    assert achieved_sparsity(net) < 0.15  # σ(−5) ≈ 0.0067: ~12 % of the initial weights below
    torch.manual_seed(0)
    debug = build_model("lenet5", 10, (1, 28, 28))
    prepared(debug, s_initial=-0.1)
    assert achieved_sparsity(debug) == 1.0


def test_weight_decay_override_is_sgd_with_that_decay():
    """``weight_decay`` (the calibration's knob) makes the step SGD with decay λ everywhere."""
    lr, mu, preset_wd, wd = 0.1, 0.9, 1e-4, 0.02
    results = []
    for hp_wd, opt_wd in ((str(wd), preset_wd), ("none", wd)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        method, state = prepared(
            net, lr=lr, wd=opt_wd, momentum=mu, nesterov=True, weight_decay=hp_wd
        )
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            state.optimizer.zero_grad(set_to_none=True)
            net(x).square().sum().backward()
            method.on_backward(state)
            state.optimizer.step()
        results.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("use_global", [False, True])
def test_written_out_backward_equals_autograd_of_the_composed_form(use_global):
    gen = torch.Generator().manual_seed(0)
    s0 = math.log(0.05 / 0.95)
    g0 = float(torch.sigmoid(torch.tensor(s0)))
    w0 = torch.randn(6, 50, generator=gen) * 0.1
    w0[0, :3] = torch.tensor([0.0, g0, -g0])  # a zero and two entries with |w| == σ(s) exactly
    v0 = torch.randn(3, 6, generator=gen) * 0.1
    up = [torch.randn(6, 50, generator=gen), torch.randn(3, 6, generator=gen)]
    net = nn.Sequential(nn.Linear(50, 6, bias=False), nn.Linear(6, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(w0)
        net[1].weight.copy_(v0)
    method, state = prepared(net, s_initial=s0, use_global_threshold=str(use_global))
    for _ in range(2):  # two backward passes add up before the hook, as autograd's do
        sum((layer.weight * u).sum() for layer, u in zip(net, up)).backward()
    method.on_backward(state)
    s = method.thresholds(net)
    w, v = w0.clone().requires_grad_(True), v0.clone().requires_grad_(True)
    s_ref = torch.full((1 if use_global else 2,), s0, requires_grad=True)
    sigmas = torch.sigmoid(s_ref).expand(2)
    outs = [soft_threshold_reference(t, g) for t, g in zip((w, v), sigmas)]
    for _ in range(2):
        sum((o * u).sum() for o, u in zip(outs, up)).backward(retain_graph=True)
    for layer, o in zip(net, outs):
        assert torch.equal(layer.weight.detach(), o.detach())  # the forward is bit-identical
    assert torch.equal(latent_weight(net[0]).grad, w.grad)
    assert torch.equal(latent_weight(net[1]).grad, v.grad)
    torch.testing.assert_close(s.grad, s_ref.grad)
    assert net[0].weight[0, :3].tolist() == [0.0, 0.0, 0.0]
    assert latent_weight(net[0]).grad[0, :3].tolist() == [0.0, 0.0, 0.0]


def test_both_forward_paths_give_the_same_values():
    gen = torch.Generator().manual_seed(1)
    ws = [torch.randn(7, 3, 3, generator=gen) * 0.1, torch.randn(40, 9, generator=gen) * 0.1]
    gs = [torch.tensor(0.05), torch.tensor(0.08)]
    ws[0][0, 0, :2] = torch.tensor([0.05, -0.05])  # exactly at the threshold
    layout, g = FlatLayout(ws), torch.stack(gs)
    flat = layout.flatten(ws)
    cpu, composed = torch.empty_like(flat), torch.empty_like(flat)
    shrink(layout, flat, g, cpu, sync_free=False)
    shrink(layout, flat, g, composed, sync_free=True)
    assert torch.equal(composed, cpu)
    for out, w, g_l in zip(layout.unflatten(cpu), ws, gs):
        assert torch.equal(out, soft_threshold_reference(w, g_l))
