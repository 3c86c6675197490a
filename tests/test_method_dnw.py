"""DNW mechanics against hand computations: the global τ, the mask, the straight-through
gradient reaching pruned latents, τ tracking the weights, and the finalized plain weights."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.core.budget import Budget
from benchsuite.core.method import TrainState
from benchsuite.pruning.masks import achieved_sparsity, keep_count, latent_weight
from benchsuite.pruning.schedules import ScheduleSpec
from benchsuite_methods.dnw import DNW, kth_smallest_abs

W1 = [[0.1, -0.5], [0.3, -0.05]]
W2 = [[0.2, -0.4]]


def tiny() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(W1))
        net[1].weight.copy_(torch.tensor(W2))
    return net


def prepared(
    model: nn.Module, target: float, lr: float = 0.1, selection: str = "global"
) -> tuple[DNW, TrainState]:
    """DNW on ``model``; the hand computations below use the global τ unless told otherwise."""
    budget = Budget(1, 10)
    hp = DNW.Hparams(selection=selection)
    plan = DNW.plan(budget, hp, target, ScheduleSpec(kind="constant", lr=lr))
    method = DNW(hp, target, plan)

    def factory():
        return torch.optim.SGD(model.parameters(), lr=lr)

    state = TrainState(model, budget, plan, plan.lr.copy(), torch.Generator(), factory)
    method.on_start(state)
    state.optimizer = factory()
    return method, state


def test_tau_is_the_global_kth_smallest_and_masks_at_it():
    net = tiny()
    method, _ = prepared(
        net, 0.5
    )  # N = 6, k = ⌊0.5·6⌋ = 3: |w| sorted 0.05, 0.1, 0.2 | 0.3, 0.4, 0.5
    assert method.tau() == pytest.approx(0.2)
    assert net[0].weight.tolist() == [[0.0, pytest.approx(-0.5)], [pytest.approx(0.3), 0.0]]
    assert net[1].weight.tolist() == [[0.0, pytest.approx(-0.4)]]


def test_straight_through_gradient_reaches_pruned_latents():
    net = tiny()
    method, state = prepared(net, 0.5)
    x = torch.tensor([[1.0, 2.0]])
    net(x).sum().backward()
    method.on_backward(state)
    # h = W1_e x = [−0.5·2, 0.3·1] = [−1.0, 0.3]; ∂L/∂W2_e = hᵀ; ∂L/∂W1_e = W2_eᵀ xᵀ
    g1 = latent_weight(net[0]).grad
    g2 = latent_weight(net[1]).grad
    assert g2.tolist() == [[pytest.approx(-1.0), pytest.approx(0.3)]]  # W2[0,0] = 0.2 is pruned
    assert g1.tolist() == [[0.0, 0.0], [pytest.approx(-0.4), pytest.approx(-0.8)]]  # W1[1,1] pruned
    assert g2[0, 0] != 0 and g1[1, 1] != 0  # unmasked: pruned latents get gradient


def test_tau_follows_every_step_and_a_pruned_latent_reenters():
    net = tiny()
    method, state = prepared(net, 0.5, lr=2.0)
    net(torch.tensor([[1.0, 2.0]])).sum().backward()
    method.on_backward(state)
    state.optimizer.step()  # W2 ← [0.2 + 2·1.0, −0.4 − 2·0.3] = [2.2, −1.0]; W1[1] ← [1.1, 1.55]
    method.on_step_end(state)
    # |w| now 0.1, 0.5, 1.1, 1.55 | 2.2, 1.0 → τ = 3rd smallest = 1.0
    assert method.tau() == pytest.approx(1.0)
    assert float(net[1].weight[0, 0].detach()) == pytest.approx(2.2)  # the pruned 0.2 re-entered
    assert float(net[1].weight[0, 1].detach()) == 0.0  # the kept −0.4 is now pruned
    assert net[0].weight.tolist() == [[0.0, 0.0], [pytest.approx(1.1), pytest.approx(1.55)]]
    net.eval()  # evaluation uses the same, current τ
    assert net[0].weight.tolist() == [[0.0, 0.0], [pytest.approx(1.1), pytest.approx(1.55)]]


def test_a_hand_edit_is_seen_by_the_next_forward():
    net = tiny()
    method, _ = prepared(net, 0.5)
    with torch.no_grad():
        latent_weight(net[0]).mul_(10.0)  # |W1| = 1, 5, 3, 0.5 → τ is now 0.5 (0.2, 0.4, 0.5)
    assert net[0].weight.tolist() == [
        [pytest.approx(1.0), pytest.approx(-5.0)],
        [pytest.approx(3.0), 0.0],
    ]
    assert method.tau() == pytest.approx(0.5)


def test_finalize_keeps_raw_masked_latents_as_plain_weights():
    net = tiny()
    method, state = prepared(net, 0.5)
    method.on_finish(state)
    for m in net:
        assert not parametrize.is_parametrized(m)
        assert type(m.weight) is nn.Parameter
    assert net[0].weight.tolist() == [[0.0, pytest.approx(-0.5)], [pytest.approx(0.3), 0.0]]
    assert net[1].weight.tolist() == [[0.0, pytest.approx(-0.4)]]
    assert int(sum((m.weight == 0).sum() for m in net)) == 3
    assert achieved_sparsity(net) == pytest.approx(0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_selection_is_exact_on_every_path(dtype):
    gen = torch.Generator().manual_seed(0)
    ws = [
        torch.randn(37, 11, generator=gen).to(dtype),
        torch.randn(5, 3, 2, generator=gen).to(dtype),
    ]
    flat = torch.cat([w.flatten() for w in ws]).abs().float().numpy()
    for k in (1, 2, 100, 200, 436, 437):
        expected = np.sort(flat)[k - 1]
        assert float(kth_smallest_abs(ws, k)) == float(expected)


def test_two_backward_passes_add_up_and_eval_reuses_the_weights():
    net = tiny()
    method, state = prepared(net, 0.5)
    x = torch.tensor([[1.0, 2.0]])
    for _ in range(2):  # two forward/backward passes without a step: gradients add up
        net(x).sum().backward()
    method.on_backward(state)
    assert latent_weight(net[1]).grad.tolist() == [[pytest.approx(-2.0), pytest.approx(0.6)]]
    with torch.no_grad():
        first = net[0].weight
        assert net[0].weight is first  # no change since: the computed weight is reused


def test_a_deep_copy_computes_from_its_own_latents():
    import copy

    net = tiny()
    prepared(net, 0.5)
    twin = copy.deepcopy(net)
    with torch.no_grad():
        latent_weight(twin[0]).mul_(10.0)  # only the copy changes
    assert net[0].weight.tolist() == [[0.0, pytest.approx(-0.5)], [pytest.approx(0.3), 0.0]]
    assert twin[0].weight.tolist() == [
        [pytest.approx(1.0), pytest.approx(-5.0)],
        [pytest.approx(3.0), 0.0],
    ]


@pytest.mark.parametrize("method", ["dnw", "str", "dst"])
def test_channels_last_weights_stay_channels_last_with_the_same_values(method) -> None:
    """The batched methods compute on each weight as stored: a channels_last model gets
    channels_last effective weights (a convolution would otherwise switch layouts every
    step), with exactly the values and gradients of the NCHW model."""
    from benchsuite.presets import load_preset
    from benchsuite.training.evaluation import channels_last_input
    from benchsuite.training.loop import RunConfig, setup

    class Shape:
        num_classes, input_shape = 10, (1, 28, 28)

    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    results = []
    for channels_last in (False, True):
        preset = load_preset("fashion-mnist").replace(channels_last=channels_last)
        model, hooks, state = setup(RunConfig(preset, method, 0.9, 0), Shape, Budget(2, 4), "cpu")
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:
            assert conv.weight.stride() == latent_weight(conv).stride()
            if channels_last:
                assert conv.weight.stride(1) == 1  # channels_last, also with one input channel
        inputs = channels_last_input(x) if channels_last else x
        model(inputs).square().sum().backward()
        hooks.on_backward(state)
        results.append(
            [(c.weight.detach().contiguous(), latent_weight(c).grad.contiguous()) for c in convs]
        )
    for (w0, g0), (w1, g1) in zip(*results):
        assert torch.equal(w0, w1)
        torch.testing.assert_close(g0, g1)


def test_finalized_weights_have_storage_of_their_own() -> None:
    net = tiny()
    method, state = prepared(net, 0.5)
    method.on_finish(state)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    assert net[1].weight.tolist() == [[0.0, pytest.approx(-0.4)]]  # not a view of a shared buffer


def test_per_layer_selection_keeps_each_layers_top_count():
    """uniform: N = 6 at S = 0.5 keeps 3, split 2 + 1 over the layers of 4 and 2 weights
    (exact counts); each layer masks at its own k_l-th smallest |w|."""
    net = tiny()
    method, _ = prepared(net, 0.5, selection="uniform")
    # layer 1 |w| = 0.1, 0.5, 0.3, 0.05 keeps 2: 0.5 and 0.3; layer 2 |w| = 0.2, 0.4 keeps 0.4
    assert method.taus() == [pytest.approx(0.1), pytest.approx(0.2)]
    assert net[0].weight.tolist() == [[0.0, pytest.approx(-0.5)], [pytest.approx(0.3), 0.0]]
    assert net[1].weight.tolist() == [[0.0, pytest.approx(-0.4)]]


def test_ignorefirst_keeps_the_first_layer_dense_and_reaches_the_target():
    """S = 0.5 of N = 6 keeps 3: the first layer's 4 are more than that, so a 2-layer net whose
    first layer is the small one: 2 weights dense, the other 4 keep 1."""
    net = nn.Sequential(nn.Linear(1, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.01], [-0.02]]))
        net[1].weight.copy_(torch.tensor([[0.3, -0.1], [0.2, 0.05]]))
    prepared(net, 0.5, selection="ignorefirst")
    assert net[0].weight.tolist() == [[pytest.approx(0.01)], [pytest.approx(-0.02)]]
    assert net[1].weight.tolist() == [[pytest.approx(0.3), 0.0], [0.0, 0.0]]


def layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_the_default_keeps_weights_in_every_lenet5_layer_at_98_percent():
    """The global τ from PyTorch's default init empties conv2 and fc1 of LeNet-5 at 98 %; the
    authors' per-layer selection (the default) keeps weights in every layer."""
    from benchsuite.models import build_model

    for seed in range(3):
        torch.manual_seed(seed)
        model = build_model("lenet5", 10, (1, 28, 28))
        method, _ = prepared(model, 0.98, selection=DNW.Hparams().selection)
        kept = [int(m.weight.count_nonzero()) for m in layers(model)]
        assert all(k > 0 for k in kept), kept
        assert sum(kept) == keep_count(method.n, 0.98)  # exact per-layer counts
        torch.manual_seed(seed)
        model = build_model("lenet5", 10, (1, 28, 28))
        prepared(model, 0.98, selection="global")
        kept = [int(m.weight.count_nonzero()) for m in layers(model)]
        assert 0 in kept  # the global form's collapse at init, as documented
