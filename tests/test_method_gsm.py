"""GSM: only the global top-Q entries by |w·g| (weights, biases and BN alike) keep their
gradient; the others only decay; Q = ⌊(1 − S)·N_prunable⌋; the end state."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchsuite.core.budget import Budget
from benchsuite.data.base import load_dataset
from benchsuite.presets import load_preset
from benchsuite.pruning.scores import FlatScores, top_count, top_indices
from benchsuite.training.loop import RunConfig, train_run
from benchsuite_methods.gsm import GSM, GSMHparams
from tests.handmade import hand_state as build_state

LR, WD = 0.1, 0.01


def tiny_model() -> nn.Sequential:
    """Linear 3→2 (6 prunable weights, 2 biases), BatchNorm1d(2) (2 weights, 2 biases)."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.1, -1.0]]))
        model[0].bias.copy_(torch.tensor([2.0, -0.5]))
        model[1].weight.copy_(torch.tensor([1.0, 1.5]))
        model[1].bias.copy_(torch.tensor([0.2, -3.0]))
    return model


def hand_state(model: nn.Module, target: float, decay: float | None = 0.0):
    """``decay`` 0: the non-selected entries feel the preset's weight decay only."""
    hp = GSMHparams(decay=decay)
    return build_state(model, GSM, hp, target, Budget(1, 4), lr=LR, wd=WD)


def test_top_count_is_an_exact_floor() -> None:
    assert top_count(1000, 0.9) == 100  # the float (1 − 0.9)·1000 is 99.999…
    assert top_count(6, 0.5) == 3 and top_count(7, 0.5) == 3 and top_count(10, 0.99) == 0
    assert top_count(61_470, 0.9) == 6147


def test_top_indices_is_an_exact_top_k() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50_000, generator=g)
    for k in (1, 17, 5_000, 25_000, 49_999):
        expected = set(torch.topk(scores, k).indices.tolist())
        assert set(top_indices(scores, k).tolist()) == expected
    # ties at the k-th value: exactly k entries, none smaller than an unselected one;
    # mostly-zero scores (dead units) take the positive-only path, with k below and above
    # the number of positive entries
    tied = torch.randint(0, 5, (10_000,), generator=g).float()
    sparse = torch.where(torch.rand(10_000, generator=g) < 0.95, 0.0, scores[:10_000])
    positive = int((sparse > 0).sum())
    for values, ks in (
        (tied, (1, 1_999, 2_000, 2_001, 7_777)),
        (sparse, (1, positive - 1, positive, positive + 1, 9_999)),
    ):
        for k in ks:
            index = top_indices(values, k)
            chosen = torch.zeros(10_000, dtype=torch.bool)
            chosen[index] = True
            assert int(chosen.sum()) == k == len(set(index.tolist()))
            assert values[chosen].min() >= values[~chosen].max()


def test_only_the_global_top_q_saliencies_keep_their_gradient() -> None:
    model = tiny_model()
    method, state = hand_state(model, 0.5)  # N_prunable = 6 → Q = 3 over all 12 entries
    lin, bn = model
    grads = {
        lin.weight: torch.tensor([[0.1, 0.3, -0.2], [0.05, 4.0, 0.2]]),
        lin.bias: torch.tensor([0.4, 0.1]),
        bn.weight: torch.tensor([-0.3, 0.2]),
        bn.bias: torch.tensor([0.01, 0.5]),
    }
    # |w·g| by hand:  weight [[0.1, 0.6, 0.1], [0.15, 0.4, 0.2]]   bias [0.8, 0.05]
    #                 bn.weight [0.3, 0.3]                          bn.bias [0.002, 1.5]
    # top 3: bn.bias[1] = 1.5, lin.bias[0] = 0.8, lin.weight[0, 1] = 0.6
    for p, g in grads.items():
        p.grad = g.clone()
    before = {p: p.detach().clone() for p in grads}
    method.on_backward(state)
    selected = {
        lin.weight: torch.tensor([[False, True, False], [False, False, False]]),
        lin.bias: torch.tensor([True, False]),
        bn.weight: torch.tensor([False, False]),
        bn.bias: torch.tensor([False, True]),
    }
    for p, g in grads.items():
        assert torch.equal(p.grad, torch.where(selected[p], g, torch.zeros_like(g)))
    # the step: momentum and weight decay act on all entries; the others only decay
    state.optimizer.step()
    for p, g in grads.items():
        w = before[p]
        d = torch.where(selected[p], g, torch.zeros_like(g)) + WD * w  # first step: buf = d
        assert torch.allclose(p.detach(), w - LR * d, rtol=0, atol=1e-7)
        assert bool((p.detach()[~selected[p]].abs() < w[~selected[p]].abs()).all())


def test_own_decay_hits_only_the_non_selected_entries() -> None:
    model = tiny_model()
    method, state = hand_state(model, 0.5, decay=0.05)
    lin, bn = model
    g = torch.Generator().manual_seed(5)
    grads = {p: torch.randn(p.shape, generator=g) for p in model.parameters()}
    for p, grad in grads.items():
        p.grad = grad.clone()
    before = {p: p.detach().clone() for p in grads}
    saliency = torch.cat([(before[p] * grads[p]).abs().flatten() for p in grads])
    top = torch.zeros_like(saliency, dtype=torch.bool)
    top[saliency.topk(3).indices] = True
    method.on_backward(state)
    offset = 0
    for p, grad in grads.items():
        chosen = top[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
        # selected: the loss gradient, untouched; the rest: only the decay's 0.05·w
        expected = torch.where(chosen, grad, 0.05 * before[p])
        assert torch.allclose(p.grad, expected, rtol=0, atol=1e-7)


def test_default_decay_is_scaled_to_the_budget() -> None:
    """One epoch of 4 steps at LR 0.1, momentum 0.9: Σ η = 0.4, so a total pull of 17 needs
    decay = 17·(1 − 0.9)/0.4 = 4.25."""
    method, state = hand_state(tiny_model(), 0.5, decay=None)
    assert method.decay(state) == pytest.approx(4.25)


def test_parameters_without_gradient_are_skipped() -> None:
    model = tiny_model()
    method, state = hand_state(model, 0.5)
    lin, bn = model
    lin.weight.grad = torch.ones(2, 3)
    bn.bias.grad = torch.ones(2)
    method.on_backward(state)  # saliency over the 8 entries that have a gradient
    assert int((lin.weight.grad != 0).sum()) + int((bn.bias.grad != 0).sum()) == 3
    assert torch.equal(bn.bias.grad, torch.tensor([0.0, 1.0]))  # |−3| is the largest |w·g|
    assert lin.bias.grad is None and bn.weight.grad is None


def test_channels_last_gradients_select_the_same_entries() -> None:
    def run(channels_last: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3))
        x = torch.randn(2, 3, 8, 8)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        method, state = hand_state(model, 0.9)
        model(x).pow(2).sum().backward()
        method.on_backward(state)
        return [p.grad.clone() for p in model.parameters()]

    plain, last = run(False), run(True)
    assert sum(int((g != 0).sum()) for g in plain) == top_count(3 * 8 * 9 + 8 * 4 * 9, 0.9)
    # the kernels round differently; the selected entries are the same
    assert all(torch.equal(a != 0, b != 0) for a, b in zip(plain, last))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(plain, last))


def test_fused_and_per_parameter_scores_agree() -> None:
    """The fused write (the CUDA default) and the per-parameter one (the CPU default)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3))
    model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    flat = FlatScores(model)
    params, grads = flat.current()
    results = []
    for fused in (False, True):
        flat.write_saliency(params, grads, fused=fused)
        saliency = flat.buffer.clone()
        flat.write_magnitude(params, fused=fused)
        results.append((saliency, flat.buffer.clone()))
    expected_saliency = torch.cat([(p * g).abs().flatten() for p, g in zip(params, grads)])
    expected_magnitude = torch.cat([p.detach().abs().flatten() for p in params])
    for saliency, magnitude in results:
        assert torch.equal(saliency, expected_saliency)
        assert torch.equal(magnitude, expected_magnitude)


@pytest.mark.integration
def test_end_to_end_plain_weights_at_the_target() -> None:
    data = load_dataset("synthetic", n=160, n_test=40, shape=(1, 8, 8))
    preset = load_preset("digits").replace(dataset="synthetic", epochs=2, batch_size=32)
    config = RunConfig(preset=preset, method="gsm", target=0.8, seed=0)
    curve: list[float] = []
    result = train_run(config, dataset=data, on_epoch=lambda p: curve.append(p.sparsity))
    assert curve == [0.0, 0.0]  # no mask during training
    model = result.model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert result.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
