"""Sparse-to-sparse training: SET and RigL (docs/methods.md, SET and RigL).

Both start from a sparse mask with a layer-wise distribution (default ERK) and keep every
layer's count of active weights fixed. Every ΔT steps, while t < T_end, each layer drops the
fraction ζ_t of its active weights with the smallest magnitude and regrows as many among the
positions inactive after the drop (RigL, Algorithm 1): SET at random, RigL where the dense
gradient of the current batch is largest in magnitude. Regrown weights start at 0 with zero
momentum. ζ_t = ζ₀/2 · (1 + cos(π t / T_end)) (RigL, eq. 1).

The dense gradient: the loop's hard masks would zero the gradients of inactive weights before
``on_backward``, so these methods keep their own ``HardMasks`` (not the harness's): the
autograd gradient of a zero weight is already the dense one, and ``on_backward`` reads it
at an update step, updates the masks, then masks the gradients itself, one fused multiply as
the harness would. The other methods' steps are untouched.

The mask update happens in ``on_backward`` of the update step, before that step's
optimizer step, so the grown weights (at 0, momentum 0) receive this step's gradient under
the new mask and the dropped ones none: every counted step is an ordinary optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from benchsuite import (
    DISTRIBUTIONS,
    Budget,
    BudgetError,
    HardMasks,
    Plan,
    PruningMethod,
    ScheduleSpec,
    TrainState,
    dense_indices,
    dense_layers_hparam,
    distribution_masks,
    hparam,
    start_hparam,
)

PAPER_INTERVAL = 100  # ΔT of Evci et al. 2020, §4.1 (ImageNet and CIFAR-10)
MIN_UPDATES = 20  # chosen here: fewer mask updates than this and ΔT is scaled down


def drop_fraction(step: int, zeta0: float, t_end: int) -> float:
    """ζ_t = ζ₀/2 · (1 + cos(π t / T_end)): cosine decay from ζ₀ at t = 0 to 0 at T_end."""
    if step >= t_end:
        return 0.0
    return zeta0 / 2.0 * (1.0 + math.cos(math.pi * step / t_end))


def end_step(total_steps: int, end_fraction: float) -> int:
    return int(end_fraction * total_steps)


def resolve_interval(requested: int | None, t_end: int) -> int:
    """ΔT: the requested one, else the paper's 100 where that leaves at least 20 updates
    before T_end, else ⌊T_end / 20⌋ (at least 1), so a small budget still gets ~20 updates."""
    if requested is not None:
        return requested
    if t_end >= MIN_UPDATES * PAPER_INTERVAL:
        return PAPER_INTERVAL
    return max(1, t_end // MIN_UPDATES)


def is_update_step(step: int, interval: int, t_end: int) -> bool:
    """Steps ΔT, 2ΔT, ... strictly before T_end (``step``: 0-based index of the current step)."""
    return 0 < step < t_end and step % interval == 0


def drop_grow(mask: Tensor, weight: Tensor, grow_score: Tensor, count: int) -> Tensor:
    """The new boolean mask: ``count`` active entries of smallest |w| dropped, then ``count``
    entries of largest ``grow_score`` among those inactive after the drop grown (a dropped
    entry may come back, at 0). The number of active entries is unchanged."""
    flat = mask.flatten().clone()
    if count <= 0:
        return flat.view_as(mask)
    inf = torch.tensor(float("inf"), device=weight.device)
    magnitude = torch.where(flat, weight.detach().flatten().abs().float(), inf)
    flat[torch.topk(magnitude, count, largest=False, sorted=False).indices] = False
    growable = torch.where(flat, -inf, grow_score.flatten().float())
    flat[torch.topk(growable, count, sorted=False).indices] = True
    return flat.view_as(mask)


@dataclass(frozen=True)
class DynamicHparams:
    distribution: str = hparam(
        "erk",
        "Evci et al. 2020, §4.1: ERK, their best-performing allocation for sparse training",
        choices=DISTRIBUTIONS,
        help="initial layer-wise allocation (kept for the whole run): uniform, erk or global",
    )
    drop_fraction: float = hparam(
        0.3,
        "Evci et al. 2020, §4.1: initial drop fraction α = 0.3 (also SET's ζ, Mocanu et al. "
        "2018, §4)",
        low=0.1,
        high=0.5,
        help="ζ₀, the fraction of each layer's active weights replaced at the first update",
    )
    end_fraction: float = hparam(
        0.75,
        "Evci et al. 2020, §4.1: mask updates stop at T_end = 75 % of training",
        low=0.5,
        high=0.9,
        help="T_end ÷ T: no mask update at or after this fraction of the steps",
    )
    update_interval: int | None = hparam(
        None,
        "Evci et al. 2020, §4.1: ΔT = 100; None here means 100 where that leaves >= 20 "
        "updates before T_end, else ⌊T_end/20⌋ (chosen here: small budgets still get ~20 "
        "updates)",
        help="ΔT, steps between mask updates (None: 100, scaled down for small budgets)",
    )
    start: str = start_hparam()
    dense_layers: str = dense_layers_hparam()


class DynamicSparse(PruningMethod):
    """Base of SET and RigL; subclasses choose where to grow (``grow_scores``)."""

    Hparams = DynamicHparams
    needs_dense_grad = False

    @classmethod
    def plan(
        cls, budget: Budget, hp: DynamicHparams, target: float, schedule: ScheduleSpec
    ) -> Plan:
        if not 0.0 <= hp.drop_fraction <= 1.0:
            raise BudgetError(f"{cls.name}: drop_fraction={hp.drop_fraction}; expected 0..1")
        if not 0.0 < hp.end_fraction <= 1.0:
            raise BudgetError(f"{cls.name}: end_fraction={hp.end_fraction}; expected (0, 1]")
        if hp.update_interval is not None and hp.update_interval < 1:
            raise BudgetError(f"{cls.name}: update_interval={hp.update_interval}; expected >= 1")
        return super().plan(budget, hp, target, schedule)

    def __init__(self, hp: DynamicHparams, target: float, plan: Plan) -> None:
        super().__init__(hp, target, plan)
        self.t_end = end_step(plan.budget.total_steps, hp.end_fraction)
        self.interval = resolve_interval(hp.update_interval, self.t_end)
        self.own: HardMasks | None = None
        self.updates = 0

    def on_start(self, state: TrainState) -> None:
        weights = [m.weight for _, m in state.prunable()]
        scores = [torch.rand(w.shape, generator=state.generator).to(w.device) for w in weights]
        self.own = HardMasks(weights)  # the method's own: the loop must not mask the grads
        dense = dense_indices(self.hp.dense_layers, len(weights))
        self.dense = set(dense)  # kept whole: no drop and regrow there
        masks = distribution_masks(self.hp.distribution, scores, self.target, dense)
        self.own.set(masks)
        if self.hp.start == "rescaled":
            state.start_sparse(weights, masks)
        state.record("update_interval", self.interval)
        state.record("mask_updates", 0)

    def grow_scores(self, state: TrainState) -> list[Tensor]:
        raise NotImplementedError

    def on_backward(self, state: TrainState) -> None:
        assert self.own is not None
        if is_update_step(state.step, self.interval, self.t_end):
            self.update(state)
        self.own.mask_grads()

    @torch.no_grad()
    def update(self, state: TrainState) -> None:
        own = self.own
        zeta = drop_fraction(state.step, self.hp.drop_fraction, self.t_end)
        old = own.bool_masks()
        grow = self.grow_scores(state)
        new = [
            m if i in self.dense else drop_grow(m, w, g, round(zeta * int(m.sum())))
            for i, (m, w, g) in enumerate(zip(old, own.params, grow))
        ]
        kept = [a & b for a, b in zip(old, new)]
        own.set(kept, state.optimizer)  # zero the dropped and the grown weights and momentum
        own.set(new)
        self.updates += 1
        state.log(f"{self.name}_drop_fraction", zeta)
        state.record("mask_updates", self.updates)

    def state_dict(self) -> dict:
        masks = None if self.own is None else self.own.bool_masks()
        return {"masks": masks, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if self.own is not None and state.get("masks") is not None:
            self.own.set(state["masks"])
        self.updates = state.get("updates", 0)


class SET(DynamicSparse):
    """SET: magnitude drop, random regrowth (from the method's own generator)."""

    name = "set"
    source = (
        "Mocanu et al., Scalable training of artificial neural networks with adaptive sparse "
        "connectivity inspired by network science, Nature Communications 2018; with RigL's "
        "schedule (ΔT, cosine ζ_t, T_end) as in Evci et al. 2020"
    )

    def grow_scores(self, state: TrainState) -> list[Tensor]:
        return [
            torch.rand(p.shape, generator=state.generator).to(p.device) for p in self.own.params
        ]


class RigL(DynamicSparse):
    """RigL: magnitude drop, regrowth where the dense gradient of the current batch is largest."""

    name = "rigl"
    source = "Evci et al., Rigging the Lottery: Making All Tickets Winners, ICML 2020"
    needs_dense_grad = True

    def grow_scores(self, state: TrainState) -> list[Tensor]:
        state.note_dense_weight_grad()
        return [torch.zeros_like(p) if p.grad is None else p.grad.abs() for p in self.own.params]
