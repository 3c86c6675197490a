"""Dynamic pruning with feedback (Lin, Stich, Barba, Dmitriev & Jaggi, ICLR 2020), docs/methods.md.

The model keeps **dense** weights w and an external mask m. Every step computes the forward
and backward at the pruned point w ⊙ m and applies that gradient (with momentum and weight
decay) to the dense w: the error feedback that lets pruned weights move and come back.
m is recomputed *from scratch* as the global magnitude mask of the dense w at the current
target, at every pruning epoch of GMP's cubic schedule (where the target rises, methods/gmp.py)
and after every 16th step of the global iteration counter (counting from 1: after steps 16,
32, ...). Until the first pruning epoch the target is 0 and the mask keeps everything.
Evaluation, the sparsity curve and the end use w ⊙ m with the last computed mask (at most 15
steps old at the end).

How (cheapest of the two exact forms, measured): the parameter's storage is swapped rather
than reparametrized. After each optimizer step the dense tensors are set aside and the
parameters point at one fused ``torch._foreach_mul`` of them with the masks; after backward
they point at the dense tensors again, so ``optimizer.step`` updates the dense w with the
gradient taken at w ⊙ m. That is one elementwise product per prunable weight per step and two
pointer swaps, no copies; a straight-through parametrization w ⊙ m computes the same product
in every forward (evaluation included) plus the parametrization's dispatch. Measured on
LeNet-5 (CPU, batch 128, interleaved medians): the swap 1.00× (1 thread) / 1.03× (2 threads)
of the dense step, the parametrization 1.02× / 1.07×.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchsuite import (
    Budget,
    BudgetError,
    Plan,
    RampHparams,
    ScheduledMagnitude,
    ScheduleSpec,
    TrainState,
    global_magnitude_masks,
    hparam,
    keep_count,
)


@dataclass(frozen=True)
class DPFHparams(RampHparams):
    refresh_interval: int = hparam(
        16,
        "reference code: hard-coded 16 (docs/methods.md)",
        help="steps between mask recomputations (also at every pruning epoch)",
    )


class DPF(ScheduledMagnitude):
    name = "dpf"
    source = (
        "Lin, Stich, Barba, Dmitriev & Jaggi, Dynamic Model Pruning with Feedback, ICLR 2020 "
        "(arXiv:2006.07253); global selection on GMP's cubic schedule as in the BIMP reference code"
    )
    Hparams = DPFHparams

    @classmethod
    def plan(cls, budget: Budget, hp: DPFHparams, target: float, schedule: ScheduleSpec) -> Plan:
        if hp.refresh_interval < 1:
            raise BudgetError(f"dpf: refresh_interval={hp.refresh_interval} needs to be >= 1")
        return super().plan(budget, hp, target, schedule)

    def __init__(self, hp: DPFHparams, target: float, plan: Plan) -> None:
        super().__init__(hp, target, plan)  # self.current: the target of the current mask
        self.params: list[nn.Parameter] = []
        self.masks: list[Tensor] | None = None  # None: keep everything (target 0)
        self.dense: list[Tensor] | None = None  # set aside while the parameters hold w ⊙ m

    def on_start(self, state: TrainState) -> None:
        self.params = [m.weight for _, m in state.prunable()]
        self.n = sum(p.numel() for p in self.params)

    # --- the two states of the parameters: dense w, or w ⊙ m with w set aside -----------------
    def _mask_weights(self) -> None:
        if self.masks is None or self.dense is not None:
            return
        self.dense = [p.data for p in self.params]
        for p, masked in zip(self.params, torch._foreach_mul(self.dense, self.masks)):
            p.data = masked

    def _unmask_weights(self) -> None:
        if self.dense is None:
            return
        for p, dense in zip(self.params, self.dense):
            p.data = dense
        self.dense = None

    def _refresh(self) -> None:
        """m ← the global magnitude mask of the dense w at the current target, from scratch."""
        keep = keep_count(self.n, self.current)
        if keep >= self.n:
            self.masks = None
            return
        weights = self.dense if self.dense is not None else [p.data for p in self.params]
        bools = global_magnitude_masks(weights, keep)
        self.masks = [torch.empty_like(w).copy_(b) for w, b in zip(weights, bools)]

    # --- hooks ------------------------------------------------------------------------------
    def on_backward(self, state: TrainState) -> None:
        self._unmask_weights()  # the gradient taken at w ⊙ m now updates the dense w

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.hp.refresh_interval == 0 and self.current > 0:
            self._refresh()
        self._mask_weights()

    def reach(self, state: TrainState, goal: float) -> None:
        """A new target: the mask recomputed from scratch over the dense w."""
        self.current = goal
        self._unmask_weights()
        self._refresh()
        self._mask_weights()

    def on_finish(self, state: TrainState) -> None:
        """w ← w ⊙ m with the last computed mask; the dense copy is dropped."""
        if self.dense is None:
            self._mask_weights()
        self.dense = None
