"""CS — continuous sparsification (Savarese, Silva & Maire, NeurIPS 2020), single round,
docs/methods.md.

One mask logit m per prunable weight, initialised to s₀. Every forward uses

    w_e = w · σ(β m) / σ(s₀)          (so at β = 1, m = s₀ the effective weight is w)

with β annealed per global iteration t as β_t = β_F^(t / T_iter), T_iter = the budget's steps,
so β runs from 1 to β_F. The loss adds λ · Σ σ(β m) (+ ½ · wd · Σ‖w‖² with ``l2_doubled``, the
reference code: SGD's wd acts too, effective 2·wd on the weights). SGD's weight decay also acts on
the logits (docs/methods.md). At the end the mask is 1[m > 0] and the stored weights are the
soft-scaled w_e (docs/methods.md). Single round: no rewinding of the paper's multi-round form.

As in DST, the penalty's value is never recorded (the loop reports the data loss), so only its
gradient is computed, in ``on_backward``; all layers' effective weights come from one flat
computation with the derivative written out (``pruning/batched.py``), tested against autograd
of the composed form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchsuite import (
    BatchedWeight,
    FlatLayout,
    LayerBatch,
    PruningMethod,
    TrainState,
    add_l2_gradient,
    hparam,
    register_batched,
    remove_batched,
)


class Temperature:
    """β, shared by every layer; set from the global step (a 0-dim tensor, updated in place)."""

    def __init__(self, beta_final: float, total_steps: int) -> None:
        self.beta_final = beta_final
        self.total_steps = total_steps
        self.beta = torch.ones(())

    def at(self, step: int) -> float:
        return self.beta_final ** (step / self.total_steps)

    def set(self, step: int) -> None:
        self.beta.fill_(self.at(step))


class SoftMask(BatchedWeight):
    """The parametrization of one layer's weight; owns the logits m (same shape as w)."""

    def __init__(self, like: Tensor, s_initial: float, index: int) -> None:
        super().__init__(None, index)
        self.logits = nn.Parameter(torch.full_like(like, s_initial))


class SoftMasks(LayerBatch):
    """w · σ(β m) / σ(s₀) for every layer at once (``pruning/batched.py``), with 1[m > 0] on
    top once ``hard``; the gradients written out, the penalty's included.

    With gate = σ(βm) and c = 1/σ(s₀): ∂L/∂w = g·gate·c and, with the penalty λ·Σ gate,
    ∂L/∂m = β·gate·(1 − gate)·(g·w·c + λ). Equal to autograd of the composed form (tested).
    """

    def __init__(
        self,
        latents: Sequence[Tensor],
        logits: Sequence[Tensor],
        temperature: Temperature,
        s_initial: float,
        penalty: float,
    ) -> None:
        self.logit_layout = FlatLayout(logits)
        super().__init__(latents, logits)
        self.temperature = temperature
        self.scale = 1.0 + math.exp(-s_initial)  # 1 / σ(s₀)
        self.penalty = penalty
        self.hard = False  # set by finalize: also apply 1[m > 0]

    def adopt(self) -> None:
        super().adopt()
        self.logit_layout.adopt(self.extras)

    def current_key(self) -> tuple:
        return (*super().current_key(), self.temperature.beta._version, self.hard)

    def compute(self, w: Tensor, out: Tensor) -> None:
        m = self.logit_layout.flat(self.extras)
        gate = torch.mul(m, self.temperature.beta, out=self.buffer("gate")).sigmoid_()
        torch.mul(w, gate, out=out).mul_(self.scale)
        if self.hard:
            out.mul_(torch.gt(m, 0.0, out=self.buffer("kept")))

    def gradients(self, g: Tensor, out: Tensor) -> list[Tensor]:
        gate = self.buffer("gate")
        torch.mul(g, gate, out=out).mul_(self.scale)
        slope = torch.neg(gate, out=self.buffer("slope")).add_(1.0).mul_(gate)  # σ'
        grad_m = torch.mul(g, self.layout.buffer, out=self.buffer("grad_m"))
        grad_m.mul_(self.scale).add_(self.penalty)
        grad_m.mul_(slope).mul_(self.temperature.beta)
        return self.logit_layout.unflatten(grad_m)


@dataclass(frozen=True)
class CSHparams:
    s_initial: float = hparam(
        -0.1,
        "reference code (its MNIST smoke-test value, docs/methods.md); the gates start at "
        "σ(−0.1) ≈ 0.475, all weights effective. Sparsity is steep in it (digits, seed 0: "
        "−0.1 → 99.3 %, 0 → 98.3 %, 0.02 → 97.3 %, 0.05 → 2.3 %): calibrate per preset",
        low=-1.0,
        high=1.0,
    )
    beta_final: float = hparam(
        300.0, "reference code (earlier version: 200)", low=50.0, high=1000.0, log=True
    )
    penalty: float = hparam(
        0.002,
        "reference code (its MNIST smoke-test value); a preset calibrates it per target so that "
        "CS lands on the target (docs/methods.md, cs)",
        low=1e-8,
        high=1e-2,
        log=True,
    )
    l2_doubled: bool = hparam(
        True,
        "reference code (docs/methods.md): an explicit ½·wd·Σ‖w‖² on top of SGD's wd, effective "
        "2·wd on the weights; false = the earlier version's single L2",
    )


class CS(PruningMethod):
    """Learned soft masks sharpened by an annealed temperature; mask m > 0 at the end."""

    name = "cs"
    source = (
        "Savarese, Silva & Maire, Winning the Lottery with Continuous Sparsification, "
        "NeurIPS 2020, arXiv:1912.04427 (single round, as in the BIMP reference code)"
    )
    Hparams = CSHparams
    targets_sparsity = False

    def __init__(self, hp, target: float, plan) -> None:
        super().__init__(hp, target, plan)
        self.temperature = Temperature(hp.beta_final, plan.budget.total_steps)
        self.latents: list[Tensor] = []
        self.batch: SoftMasks | None = None

    def on_start(self, state: TrainState) -> None:
        modules = [m for _, m in state.prunable()]
        w0 = modules[0].weight
        self.temperature.beta = torch.ones((), dtype=w0.dtype, device=w0.device)
        self.temperature.set(state.step)
        masks = [SoftMask(m.weight, self.hp.s_initial, i) for i, m in enumerate(modules)]
        self.latents = register_batched(modules, masks)
        self.batch = SoftMasks(
            self.latents,
            [mask.logits for mask in masks],
            self.temperature,
            self.hp.s_initial,
            self.hp.penalty,
        )
        for mask in masks:
            mask.batch = self.batch

    @torch.no_grad()
    def on_backward(self, state: TrainState) -> None:
        """The latents' and logits' gradients (``SoftMasks``, the penalty λ·Σσ(βm)'s included)
        and, with ``l2_doubled``, ½·wd·Σ‖w‖²'s: wd·w added to the latents'."""
        assert self.batch is not None
        self.batch.backward()
        if self.hp.l2_doubled:
            add_l2_gradient(self.latents, state)

    def on_step_end(self, state: TrainState) -> None:
        self.temperature.set(state.step)  # β for the next forwards (and for validation)

    def on_finish(self, state: TrainState) -> None:
        """Store w · σ(β m) / σ(s₀) where m > 0, exact zeros elsewhere; plain tensors."""
        assert self.batch is not None
        self.temperature.set(state.step)
        self.batch.hard = True
        remove_batched([m for _, m in state.prunable()], self.batch)
