"""Random, SNIP, SET, RigL: the mechanics on hand-made tensors and one tiny run each."""

import math

import pytest
import torch
from torch import nn

from benchsuite.core.budget import Budget
from benchsuite_methods.dynamic_sparse import (
    drop_fraction,
    drop_grow,
    end_step,
    is_update_step,
    resolve_interval,
)


def test_drop_fraction_schedule():
    # ζ_t = ζ₀/2 (1 + cos(π t / T_end)), ζ₀ = 0.3, T_end = 600
    assert drop_fraction(0, 0.3, 600) == pytest.approx(0.3)
    assert drop_fraction(150, 0.3, 600) == pytest.approx(0.15 * (1 + math.sqrt(0.5)))  # 0.2561
    assert drop_fraction(300, 0.3, 600) == pytest.approx(0.15)
    assert drop_fraction(450, 0.3, 600) == pytest.approx(0.15 * (1 - math.sqrt(0.5)))  # 0.0439
    assert drop_fraction(600, 0.3, 600) == 0.0
    assert drop_fraction(700, 0.3, 600) == 0.0


def test_update_steps_and_interval():
    assert end_step(4210, 0.75) == 3157
    assert resolve_interval(None, 3157) == 100  # fashion-mnist: 31 updates at the paper's ΔT
    assert resolve_interval(None, 600) == 30  # digits (800 steps): 19 updates, scaled
    assert resolve_interval(None, 2000) == 100
    assert resolve_interval(None, 10) == 1
    assert resolve_interval(7, 600) == 7
    steps = [t for t in range(800) if is_update_step(t, 30, 600)]
    assert steps == list(range(30, 600, 30)) and len(steps) == 19


def test_drop_grow_by_hand():
    mask = torch.tensor([True, True, True, True, False, False, False, False])
    weight = torch.tensor([0.5, -0.1, 0.3, -0.05, 0.0, 0.0, 0.0, 0.0])
    grad = torch.tensor([9.0, 9.0, 0.1, 0.2, 0.7, 0.3, 0.9, 0.05])
    new = drop_grow(mask, weight, grad.abs(), 2)
    # dropped: the two smallest |w| among active: indices 3 (0.05) and 1 (0.1)
    # growable: inactive after the drop {1, 3, 4, 5, 6, 7}; largest |g|: 1 (9.0) and 6 (0.9)
    assert new.tolist() == [True, True, True, False, False, False, True, False]
    assert int(new.sum()) == int(mask.sum())


def test_drop_grow_keeps_count_on_random_layers():
    g = torch.Generator().manual_seed(1)
    for n, active, k in [(100, 10, 3), (60, 32, 10), (50, 49, 1), (20, 5, 5)]:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=g)[:active]] = True
        w = torch.randn(n, generator=g) * mask
        new = drop_grow(mask.view(5, -1), w.view(5, -1), torch.rand(n, generator=g).view(5, -1), k)
        assert new.shape == (5, n // 5)
        assert int(new.sum()) == active


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def make_state(method_cls, hp, target=0.75, steps=40):
    from benchsuite.core.method import TrainState
    from benchsuite.pruning.schedules import ScheduleSpec

    torch.manual_seed(0)
    model = Tiny()
    budget = Budget(1, steps)
    plan = method_cls.plan(budget, hp, target, ScheduleSpec())
    method = method_cls(hp, target, plan)
    g = torch.Generator().manual_seed(3)

    def batches(gen):
        for _ in range(4):
            yield torch.randn(5, 6, generator=gen), torch.randint(0, 3, (5,), generator=gen)

    def opt():
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    state = TrainState(model, budget, plan, plan.lr.copy(), g, opt, train_batches=batches)
    method.on_start(state)
    state.optimizer = opt()
    return model, method, state


def run_steps(model, method, state, n):
    from benchsuite.training.loop import train_step

    data = torch.Generator().manual_seed(5)
    for _ in range(n):
        x, y = torch.randn(5, 6, generator=data), torch.randint(0, 3, (5,), generator=data)
        train_step(state, method, x, y)


@pytest.mark.parametrize("name", ["set", "rigl"])
@pytest.mark.integration
def test_dynamic_updates_keep_layer_counts_and_zero_new_weights(name):
    from benchsuite.core.method import get_method
    from benchsuite.pruning.masks import keep_count

    cls = get_method(name)
    hp = cls.Hparams(update_interval=5)
    model, method, state = make_state(cls, hp)
    counts = [int((m.weight != 0).sum()) for m in (model.a, model.b)]
    assert sum(counts) == keep_count(48 + 24, 0.75)
    assert method.t_end == 30
    before = [m.clone() for m in method.own.bool_masks()]
    run_steps(model, method, state, 5)  # steps 0..4: no update yet
    assert all(torch.equal(a, b) for a, b in zip(before, method.own.bool_masks()))

    # step 5 is an update: watch the weights right before the optimizer step
    seen = {}
    original = state.optimizer.step

    def spy(*a, **k):
        masks = method.own.bool_masks()
        seen["grown"] = [n & ~o for n, o in zip(masks, before)]
        seen["w"] = [m.weight.detach().clone() for m in (model.a, model.b)]
        seen["buf"] = [
            state.optimizer.state[m.weight]["momentum_buffer"].clone() for m in (model.a, model.b)
        ]
        seen["grad"] = [m.weight.grad.clone() for m in (model.a, model.b)]
        seen["masks"] = masks
        return original(*a, **k)

    state.optimizer.step = spy
    run_steps(model, method, state, 1)
    state.optimizer.step = original
    assert method.updates == 1
    assert any(bool(g.any()) for g in seen["grown"])
    for grown, w, buf, grad, m, c in zip(
        seen["grown"], seen["w"], seen["buf"], seen["grad"], seen["masks"], counts
    ):
        assert int(m.sum()) == c  # per-layer count preserved
        assert (w[grown] == 0).all() and (buf[grown] == 0).all()  # grown: weight, momentum 0
        assert (w[~m] == 0).all() and (buf[~m] == 0).all() and (grad[~m] == 0).all()
    if name == "rigl":
        assert state.dense_grad_steps == 1
    run_steps(model, method, state, 34)  # to the end: updates at 5, 10, .., 25 (T_end = 30)
    assert method.updates == 5
    assert [int((m.weight != 0).sum()) for m in (model.a, model.b)] == counts


def test_rigl_grows_where_the_dense_gradient_is_largest():
    from benchsuite_methods.dynamic_sparse import RigL

    hp = RigL.Hparams(update_interval=1, distribution="uniform")
    model, method, state = make_state(RigL, hp, target=0.5)
    state.step = 1
    masks = method.own.bool_masks()
    for p, m in zip(method.own.params, masks):
        p.grad = torch.where(m, 0.0, torch.arange(p.numel(), dtype=p.dtype).view_as(p) + 1.0)
    method.update(state)
    zeta = drop_fraction(1, 0.3, method.t_end)
    for old, new in zip(masks, method.own.bool_masks()):
        k = round(zeta * int(old.sum()))
        grown = new & ~old
        assert int(grown.sum()) == k
        inactive = torch.nonzero(~old.flatten()).flatten()
        assert set(torch.nonzero(grown.flatten()).flatten().tolist()) == set(inactive[-k:].tolist())


@pytest.mark.parametrize("name", ["random", "snip"])
@pytest.mark.integration
def test_at_init_masks_are_exact_and_static(name):
    from benchsuite.core.method import get_method
    from benchsuite.pruning.masks import keep_count

    cls = get_method(name)
    model, method, state = make_state(cls, cls.Hparams(), target=0.75)
    masks = [m.clone() for m in state.masks.bool_masks()]
    assert sum(int(m.sum()) for m in masks) == keep_count(72, 0.75)
    run_steps(model, method, state, 10)
    for m, layer in zip(masks, (model.a, model.b)):
        assert ((layer.weight != 0) == m).all()
    if name == "snip":
        assert state.recorded["score_images"] == 5
        assert state.step == 10  # the scoring pass took no step


def test_snip_scores_are_weight_times_gradient():
    from benchsuite_methods.sparse_init import SNIP

    model, method, state = make_state(SNIP, SNIP.Hparams(score_batches=2), target=0.5)
    # recompute by hand from the same two batches (the same generator state as in prepare)
    torch.manual_seed(0)
    fresh = Tiny()
    gen = torch.Generator().manual_seed(3)
    it = list(state.train_batches(gen))[:2]
    loss = sum(nn.functional.cross_entropy(fresh(x), y) for x, y in it) / 2
    loss.backward()
    scores = [(m.weight * m.weight.grad).abs() for m in (fresh.a, fresh.b)]
    from benchsuite.pruning.distributions import distribution_masks

    expected = distribution_masks("global", scores, 0.5)
    assert all(torch.equal(e, m) for e, m in zip(expected, state.masks.bool_masks()))
    assert state.recorded["score_images"] == 10


@pytest.mark.parametrize("name", ["snip", "rigl"])
@pytest.mark.integration
def test_step_timing_runs_without_a_dataset(name):
    """benchmarks/step_overhead.py hands ``setup`` only shapes: SNIP scores its fixed batches."""
    from dataclasses import dataclass

    from benchsuite.presets import load_preset
    from benchsuite.training.loop import RunConfig
    from benchsuite.training.throughput import plan_step_time

    @dataclass
    class Shape:
        num_classes: int
        input_shape: tuple[int, int, int]

    preset = load_preset("fashion-mnist").replace(epochs=2, batch_size=8)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 28, 28, generator=gen)
    batches = [(x, torch.randint(0, 10, (8,), generator=gen))]
    seconds = plan_step_time(
        RunConfig(preset, name, 0.9, 0), Shape(10, (1, 28, 28)), Budget(2, 4), batches, 421
    )
    assert 0 < seconds < float("inf")


@pytest.mark.integration
def test_snip_scoring_leaves_the_counted_steps_and_their_data_order_alone(
    tiny_preset, tiny_data, monkeypatch
):
    from benchsuite.training.loop import RunConfig, train_run

    calls = []
    original = type(tiny_data).train_batches

    def spy(self, *args, **kwargs):
        first = True
        for x, y in original(self, *args, **kwargs):
            if first:
                calls.append(y.clone())
                first = False
            yield x, y

    monkeypatch.setattr(type(tiny_data), "train_batches", spy)
    preset = tiny_preset.replace(epochs=2)
    plain = train_run(RunConfig(preset, "random", 0.9, seed=3), dataset=tiny_data)
    loop_batches = calls[:]
    calls.clear()
    snip = train_run(RunConfig(preset, "snip", 0.9, seed=3), dataset=tiny_data)
    scoring, rest = calls[0], calls[1:]
    assert len(rest) == len(loop_batches) == 2  # one call per epoch, after the scoring one
    assert all(torch.equal(a, b) for a, b in zip(rest, loop_batches))  # same data order
    assert not torch.equal(scoring, loop_batches[0])  # scoring: the method's own order
    assert snip.metrics["train_steps"] == plain.metrics["train_steps"] == 2 * 14
    assert snip.metrics["score_images"] == preset.batch_size
    assert snip.metrics["sparsity"] == plain.metrics["sparsity"] == pytest.approx(0.9, abs=1e-3)


@pytest.mark.parametrize("method", ["random", "snip", "set", "rigl"])
def test_a_sparse_start_is_the_shared_init_rescaled_per_unit(method) -> None:
    """The default start and ``start=dense`` hold the same kept weights, the default's scaled
    per output unit by √(fan-in ÷ kept fan-in): the same seed, only rescaled."""
    from benchsuite.data.base import load_dataset
    from benchsuite.presets import load_preset
    from benchsuite.training.loop import RunConfig, setup

    data = load_dataset("synthetic", n=64, n_test=16, shape=(1, 8, 8))
    preset = load_preset("digits").replace(dataset="synthetic", batch_size=16)
    weights = {}
    for start in ("rescaled", "dense"):
        config = RunConfig(preset, method, 0.9, 0, hparams=(("start", start),))
        model, _, _ = setup(config, data, Budget(2, 4), "cpu")
        layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        weights[start] = [m.weight.detach().clone() for m in layers]
    for scaled, plain in zip(weights["rescaled"], weights["dense"]):
        kept = plain != 0
        assert torch.equal(scaled != 0, kept)
        rows = kept.reshape(kept.shape[0], -1).sum(dim=1)
        factor = torch.sqrt(kept[0].numel() / rows.clamp_min(1).to(plain.dtype))
        factor = torch.where(rows > 0, factor, torch.ones_like(factor))
        torch.testing.assert_close(scaled, plain * factor.view(-1, *[1] * (plain.dim() - 1)))
