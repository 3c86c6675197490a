"""DST mechanics against hand computations: the step function's surrogate gradient at
|x| = 0.2, 0.7, 1.5, the gradients of w and t, the reset below 1 % density, the penalty's
gradients, and the finalized plain weights (raw w kept, masked)."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.core.budget import Budget
from benchsuite.core.method import TrainState, parse_hparams
from benchsuite.pruning.batched import FlatLayout
from benchsuite.pruning.masks import achieved_sparsity, latent_weight
from benchsuite.pruning.schedules import ScheduleSpec
from benchsuite_methods.dst import (
    DST,
    reset_sparse_layers,
    step,
    subtract_thresholds,
    surrogate_derivative,
)
from tests.oracles import Step


def prepared(model: nn.Module, lr=0.1, wd=0.0, **hp):
    budget = Budget(1, 10)
    params = parse_hparams(DST.Hparams, hp)
    plan = DST.plan(budget, params, 0.5, ScheduleSpec(kind="constant", lr=lr))
    method = DST(params, 0.5, plan)

    def factory():
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)

    state = TrainState(model, budget, plan, plan.lr.copy(), torch.Generator(), factory)
    method.on_start(state)
    state.optimizer = factory()
    return method, state


def thresholds(layer: nn.Module) -> nn.Parameter:
    return layer.parametrizations.weight[0].threshold


def test_surrogate_derivative_at_the_three_pieces():
    x = torch.tensor([0.2, -0.2, 0.7, -0.7, 1.5, -1.5], requires_grad=True)
    out = Step.apply(x)
    assert out.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    out.sum().backward()
    # 2 − 4·0.2 = 1.2 on |x| ≤ 0.4; 0.4 on 0.4 < |x| ≤ 1; 0 beyond
    assert x.grad.tolist() == pytest.approx([1.2, 1.2, 0.4, 0.4, 0.0, 0.0])


def test_gradients_reach_w_directly_and_through_the_surrogate_and_t_through_the_mask():
    layer = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.2, -0.3, 2.5]]))
    method, _ = prepared(layer)
    with torch.no_grad():
        thresholds(layer).fill_(1.0)  # x = |w| − t = 0.2, −0.7, 1.5
    w_e = layer.weight
    assert w_e.tolist() == [[pytest.approx(1.2), 0.0, pytest.approx(2.5)]]
    w_e.sum().backward()
    method.batch.backward()  # the masks' gradients alone (after_backward adds the penalty's)
    # ∂L/∂x = g·w·H'(x) = 1.2·1.2, −0.3·0.4, 2.5·0 = 1.44, −0.12, 0
    # ∂L/∂w = g·m + ∂L/∂x·sign(w) = 1 + 1.44, 0 + 0.12, 1 + 0;   ∂L/∂t = −Σ ∂L/∂x = −1.32
    assert latent_weight(layer).grad.tolist() == [[pytest.approx(2.44), pytest.approx(0.12), 1.0]]
    assert thresholds(layer).grad.tolist() == [pytest.approx(-1.32)]


def test_fused_forward_and_backward_equal_the_composed_autograd_form():
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 3, 3, 3, generator=gen))
    method, _ = prepared(conv)
    t0 = torch.tensor([0.3, 0.8, -0.2, 1.1])
    with torch.no_grad():
        thresholds(conv).copy_(t0)
    upstream = torch.randn(4, 3, 3, 3, generator=gen)
    (conv.weight * upstream).sum().backward()
    method.batch.backward()

    w = latent_weight(conv).detach().clone().requires_grad_(True)
    t = t0.clone().requires_grad_(True)
    composed = w * Step.apply(w.abs() - t.view(-1, 1, 1, 1))
    (composed * upstream).sum().backward()
    assert torch.equal(conv.weight.detach(), composed.detach())
    torch.testing.assert_close(latent_weight(conv).grad, w.grad)
    torch.testing.assert_close(thresholds(conv).grad, t.grad)


@pytest.mark.parametrize("sync_free", [False, True])
@pytest.mark.parametrize(
    ("t_row0", "kept", "reset"), [(0.995, 1, True), (0.985, 2, True), (0.975, 3, False)]
)
def test_reset_at_or_below_one_percent_density(sync_free, t_row0, kept, reset):
    w = torch.linspace(0.01, 1.0, 100).repeat(2, 1)  # 200 weights, 1 % = 2
    t = torch.tensor([t_row0, 2.0])  # row 0 keeps its largest `kept`, row 1 keeps none
    other_w, other_t = torch.ones(3, 4), torch.zeros(3)  # a dense second layer: never reset
    layout = FlatLayout([w, other_w])
    a = layout.flatten([w, other_w]).abs()
    x = torch.empty_like(a)
    subtract_thresholds(layout, [t, other_t], a, x)
    keep = step(x)
    assert int(layout.parts(keep)[0].sum()) == kept
    x0 = x.clone()
    reset_sparse_layers(layout, [t, other_t], a, x, keep, sync_free=sync_free)
    x_w, (keep_w, keep_other) = layout.parts(x)[0], layout.parts(keep)
    if reset:  # thresholds to 0, mask recomputed: every (nonzero) weight kept
        assert t.tolist() == [0.0, 0.0] and not torch.signbit(t).any()
        assert torch.equal(x_w, w.abs().flatten()) and bool((keep_w == 1).all())
    else:
        assert t.tolist() == [pytest.approx(t_row0), 2.0]
        assert torch.equal(x, x0) and int(keep_w.sum()) == kept
    assert other_t.tolist() == [0.0] * 3 and bool((keep_other == 1).all())


def test_reset_happens_in_the_forward_of_a_layer():
    layer = nn.Linear(10, 10, bias=False)
    prepared(layer)
    with torch.no_grad():
        thresholds(layer).fill_(10.0)  # would prune every weight
    w_e = layer.weight
    assert thresholds(layer).tolist() == [0.0] * 10
    assert torch.equal(w_e, latent_weight(layer).detach())  # mask recomputed with t = 0


def test_penalty_gradients_by_hand():
    def grads_with(**hp):
        net = nn.Sequential(nn.Linear(2, 2, bias=True), nn.Linear(2, 1, bias=False))
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.0]]))
            net[0].bias.fill_(7.0)  # never in the L2 term
            net[1].weight.copy_(torch.tensor([[2.0, 0.5]]))
        method, state = prepared(net, wd=0.01, penalty=0.1, **hp)
        with torch.no_grad():
            thresholds(net[0]).copy_(torch.tensor([0.0, math.log(2.0)]))
            thresholds(net[1]).copy_(torch.tensor([math.log(4.0)]))
        method.on_backward(state)  # no backward: the gradients are the penalty's alone
        return [t.grad.tolist() for t in method.thresholds], [
            None if w.grad is None else w.grad.tolist() for w in method.latents
        ]

    # ∂/∂t α Σ exp(−t) = −α·exp(−t) = −0.1·(1, 0.5), −0.1·0.25;  ∂/∂w ½·wd·‖w‖² = wd·w
    t_grads, w_grads = grads_with()
    assert t_grads == [pytest.approx([-0.1, -0.05]), pytest.approx([-0.025])]
    assert w_grads == [
        [pytest.approx([0.01, -0.01]), pytest.approx([0.005, 0.0])],
        [pytest.approx([0.02, 0.005])],
    ]
    t_grads, w_grads = grads_with(l2_doubled="false")
    assert t_grads[1] == [pytest.approx(-0.025)] and w_grads == [None, None]


def test_thresholds_are_in_the_single_sgd_group():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(12, 2))
    method, state = prepared(net, wd=1e-4)
    group = state.optimizer.param_groups[0]["params"]
    assert len(state.optimizer.param_groups) == 1
    for t in method.thresholds:
        assert any(p is t for p in group)
    assert [t.shape[0] for t in method.thresholds] == [3, 2]  # one per output channel/row


def test_finalize_masks_from_t_and_keeps_raw_weights():
    layer = nn.Linear(4, 2, bias=False)
    w = torch.tensor([[0.5, -0.2, 0.05, -0.9], [0.3, -0.31, 0.1, 0.0]])
    with torch.no_grad():
        layer.weight.copy_(w)
    method, state = prepared(layer)
    with torch.no_grad():
        thresholds(layer).copy_(torch.tensor([0.25, 0.305]))
    method.on_finish(state)
    assert not parametrize.is_parametrized(layer)
    assert type(layer.weight) is nn.Parameter
    expected = [[0.5, 0.0, 0.0, -0.9], [0.0, -0.31, 0.0, 0.0]]
    assert layer.weight.tolist() == [[pytest.approx(v) for v in row] for row in expected]
    assert achieved_sparsity(layer) == 5 / 8


def test_surrogate_matches_its_piecewise_definition_everywhere():
    x = torch.cat([torch.linspace(-1.5, 1.5, 3001), torch.tensor([0.4, -0.4, 1.0, -1.0, 0.0])])
    a = x.double().abs()
    expected = torch.where(a <= 0.4, 2 - 4 * a, torch.where(a <= 1.0, 0.4, 0.0))
    torch.testing.assert_close(surrogate_derivative(x).double(), expected, atol=1e-6, rtol=0)
    assert surrogate_derivative(torch.tensor([1.0, -1.0, 1.0000001])).tolist() == pytest.approx(
        [0.4, 0.4, 0.0]
    )


@pytest.mark.parametrize("l2_doubled", ["true", "false"])
def test_penalty_gradients_equal_the_composed_expression(l2_doubled):
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 4))
    method, state = prepared(net, wd=0.05, penalty=0.3, l2_doubled=l2_doubled)
    with torch.no_grad():
        for t in method.thresholds:
            t.copy_(torch.randn(t.shape, generator=gen))
    params = (*method.thresholds, *method.latents)
    x = torch.randn(5, 2, 4, 4, generator=gen)
    net(x).square().sum().backward()
    method.on_backward(state)
    fast = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    composed = net(x).square().sum() + 0.3 * sum(t.neg().exp().sum() for t in method.thresholds)
    if l2_doubled == "true":
        composed = composed + 0.5 * 0.05 * sum(w.square().sum() for w in method.latents)
    composed.backward()
    method.batch.backward()  # the masks' gradients, added to the penalty terms' autograd
    for a, p in zip(fast, params):
        torch.testing.assert_close(a, p.grad)
