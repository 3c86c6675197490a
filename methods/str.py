"""STR — soft threshold reparameterization (Kusupati et al., ICML 2020), docs/methods.md.

One learnable scalar s_l per prunable layer (``use_global_threshold``: one s for all layers,
the earlier version's option), held as the entries of one vector Parameter: SGD updates each
entry exactly as it would a scalar of its own, and one tensor instead of one per layer saves
the optimizer ~30 µs a step (~0.7 % of a LeNet-5 step). Every forward uses the
soft-thresholded weight

    w_e = sign(w) · relu(|w| − σ(s_l))

with its exact gradient, written out (``SoftThresholds``; w and s_l both learn). The s_l sit in
the single SGD group, so the optimizer's weight decay pulls them towards 0, raising the
threshold σ(s_l): this is the main sparsifying force (docs/methods.md). There is no goal
sparsity: it emerges from s_initial and the weight decay λ (``weight_decay``: by default the
preset's; the presets' calibration sets it per target); the harness's projection then gives
max(achieved, target). At the end the stored weight is the *shrunk* w_e, exactly zero where
|w| ≤ σ(s_l) (docs/methods.md).
"""

from __future__ import annotations

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
    hparam,
    register_batched,
    remove_batched,
)


def shrink(
    layout: FlatLayout, w: Tensor, g: Tensor, out: Tensor, sync_free: bool | None = None
) -> None:
    """``out`` = sign(w) · relu(|w| − g_l) over the flat latents ``w``, g_l = ``g[l]`` for
    layer l.

    On accelerators (``sync_free``) the composed form, g spread over each layer's entries,
    without a host sync; on the CPU ATen's softshrink layer by layer, the same values bit for
    bit (for |w| > g both compute ±(|w| − g) with one rounding; elsewhere +0) in one pass (the
    composed form takes five, w − clamp(w, −g, g) two: 22.8 → 18.5 µs hot on LeNet-5).
    """
    if w.is_cuda if sync_free is None else sync_free:
        sizes = layout.constant(layout.sizes, torch.int64, w.device)
        spread = g.repeat_interleave(sizes, output_size=layout.numel)
        torch.abs(w, out=out).sub_(spread).clamp_min_(0.0).mul_(w.sign())  # relu, then the sign
        return
    for w_l, out_l, g_l in zip(layout.parts(w), layout.parts(out), g.tolist()):
        torch._C._nn.softshrink(w_l, g_l, out=out_l)  # F.softshrink, with out=


class SoftThresholds(LayerBatch):
    """sign(w) · relu(|w| − σ(s_l)) for every layer at once, the gradients written out.

    With o = the output and z = sign(o) = sign(w)·1[|w| > σ(s_l)]: ∂L/∂w = g_o·z²
    (= g_o·1[|w| > σ], relu'(0) = 0 as in autograd), ∂L/∂σ_l = −Σ_layer l g_o·z and
    ∂L/∂s_l = ∂L/∂σ_l · σ(1 − σ) (summed over the layers for the one global s). Equal to
    autograd of the composed form (tested).
    """

    def __init__(self, latents: Sequence[Tensor], s: Tensor) -> None:
        """``s``: one logit per layer, or a single one shared by all (the global threshold)."""
        super().__init__(latents, [s])
        self.s = s
        self.sigma = torch.sigmoid(s.detach())

    def compute(self, w: Tensor, out: Tensor) -> None:
        self.sigma = torch.sigmoid(self.s)
        shared = self.s.numel() == 1 and len(self.latents) > 1
        shrink(self.layout, w, self.sigma.expand(len(self.latents)) if shared else self.sigma, out)

    def gradients(self, g: Tensor, out: Tensor) -> list[Tensor]:
        z = torch.sign(self.effective, out=self.buffer("z"))
        gz = torch.mul(g, z, out=out)
        grad_sigma = self.layout.sums(gz).neg_()
        if self.s.numel() == 1:  # the one global σ(s): its gradient sums the layers'
            grad_sigma = grad_sigma.sum(0, keepdim=True)
        grad_sigma.mul_(1.0 - self.sigma).mul_(self.sigma)  # σ' = σ(1 − σ), autograd's order
        gz.mul_(z)  # ∂L/∂w = g·z²
        return [grad_sigma]


class SoftThreshold(BatchedWeight):
    """The parametrization of one layer's weight; shares the threshold logits s (every
    layer's module registers the same Parameter: the model and the optimizer hold it once)."""

    def __init__(self, s: nn.Parameter, index: int) -> None:
        super().__init__(None, index)
        self.s = s


@dataclass(frozen=True)
class STRHparams:
    s_initial: float = hparam(
        -5.0,
        "STR paper (Kusupati et al. 2020, §3): s starts where the threshold σ(s) is near 0, "
        "every weight active; σ(−5) ≈ 0.0067 (the BIMP reference code's debug −0.1, σ ≈ 0.475, "
        "starts above every LeNet-5 weight); the decay on s raises it during training",
        low=-12.0,
        high=-3.0,
    )
    weight_decay: float | None = hparam(
        None,
        "docs/methods.md, None: the preset's SGD weight decay, the same for every method. STR's "
        "sparsity comes out of λ and s_init; with a preset's small λ the loss pulls s down to an "
        "equilibrium (fashion-mnist, λ = 1e-4: ≈ 36–41 % for any trainable s_init), so the "
        "presets' calibration sets λ per target. Applied as SGD's coupled decay on every "
        "parameter (weights, biases, s), exactly like the optimizer's own",
        low=1e-4,
        high=5e-2,
        log=True,
    )
    use_global_threshold: bool = hparam(
        False,
        "reference code: one threshold per layer (its earlier version's option: one global)",
    )


class STR(PruningMethod):
    """Learned per-layer soft thresholds; weight decay on the threshold parameters."""

    name = "str"
    source = (
        "Kusupati, Ramanujan, Somani, Wortsman, Jain, Kakade & Farhadi, Soft Threshold Weight "
        "Reparameterization for Learnable Sparsity, ICML 2020, arXiv:2002.03231"
    )
    Hparams = STRHparams
    targets_sparsity = False

    batch: SoftThresholds | None = None

    def thresholds(self, model: nn.Module) -> nn.Parameter:
        """The threshold logits s: one entry per layer, or the one global s."""
        return next(m.s for m in model.modules() if isinstance(m, SoftThreshold))

    def on_start(self, state: TrainState) -> None:
        modules = [m for _, m in state.prunable()]
        w = modules[0].weight
        entries = 1 if self.hp.use_global_threshold else len(modules)
        s = nn.Parameter(
            torch.full((entries,), float(self.hp.s_initial), dtype=w.dtype, device=w.device)
        )
        parametrizations = [SoftThreshold(s, i) for i in range(len(modules))]
        latents = register_batched(modules, parametrizations)
        self.batch = SoftThresholds(latents, s)
        for p in parametrizations:
            p.batch = self.batch

    def on_backward(self, state: TrainState) -> None:
        """The latents' and thresholds' gradients (``SoftThresholds``). With ``weight_decay``
        set: SGD's coupled decay λ instead of the preset's, on every parameter (written into
        the optimizer's groups before each step, so it also holds for a replaced optimizer;
        a plain field of SGD, no extra pass over the weights)."""
        assert self.batch is not None
        self.batch.backward()
        if self.hp.weight_decay is None:
            return
        assert state.optimizer is not None
        for group in state.optimizer.param_groups:
            group["weight_decay"] = self.hp.weight_decay

    def on_finish(self, state: TrainState) -> None:
        """Store the shrunk weights sign(w)·relu(|w| − σ(s)); plain tensors, exact zeros."""
        assert self.batch is not None
        remove_batched([m for _, m in state.prunable()], self.batch)
