"""DST — dynamic sparse training (Liu, Xu, Shi, Cheung & So, ICLR 2020), docs/methods.md.

Every prunable Conv/Linear gets trainable thresholds t ∈ R^{out_channels} (init 0), one per
output channel/row. Every forward masks the weight with a step function,

    x = |w| − t_o,   m = H(x) = 1[x > 0],   w_e = w ⊙ m,

whose backward uses the surrogate derivative H'(x) ≈ 2 − 4|x| (|x| ≤ 0.4), 0.4 (0.4 < |x| ≤ 1),
0 (|x| > 1). Gradients reach w directly (through m) and through the surrogate (∂x/∂w = sign w),
and reach t through the mask (∂x/∂t = −1). Safety reset: a layer whose mask keeps ≤ 1 % of its
weights in a forward gets its thresholds reset to 0 and the mask recomputed. The loss adds

    α · Σ_layers Σ_o exp(−t_o)  +  ½ · wd · Σ ‖w‖²       (the L2 term only with ``l2_doubled``)

and SGD applies wd to w and t once more, so with ``l2_doubled`` (the reference code, the
default) the weights' effective L2 is 2·wd. The penalty's value is never recorded (the loop
reports the data loss), so only its gradient, −α·exp(−t) and wd·w, is computed: added to the
gradients after the backward pass, three multi-tensor ops instead of an autograd node. At the
end the mask comes from t and the raw w is kept, masked (docs/methods.md).

All layers' masked weights come from one computation over the flat latents, recomputed when
the latents or thresholds change (``pruning/batched.py``): one op per formula step for all
layers, the reset check per layer, and the gradients written out in ``on_backward``;
tested against the composed autograd form.
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
    add_l2_gradient,
    add_to_grads,
    hparam,
    register_batched,
    remove_batched,
)

RESET_DENSITY = 0.01  # docs/methods.md: hard-coded reset at ≤ 1 % density
NARROW, WIDE = 0.4, 1.0  # docs/methods.md: the surrogate's breakpoints
NARROW_VALUE = 0.4  # its value on 0.4 < |x| ≤ 1 (= 2 − 4·0.4: continuous at 0.4)


def step(x: Tensor, out: Tensor | None = None) -> Tensor:
    """H(x) = 1[x > 0] as a float tensor: the comparison written straight into a float
    output, one pass (a bool result and a conversion, or ``where``, cost 5–10× more on the
    CPU)."""
    return torch.gt(x, 0.0, out=torch.empty_like(x) if out is None else out)


def surrogate_derivative(
    x: Tensor, out: Tensor | None = None, scratch: Tensor | None = None
) -> Tensor:
    """The step function's backward: 2 − 4|x| on |x| ≤ 0.4, 0.4 on 0.4 < |x| ≤ 1, else 0.

    Written as max(2 − 4|x|, 0.4) − 0.4·1[|x| > 1], float ops only; exact (2 − 4|x| ≥ 0.4
    exactly when |x| ≤ 0.4, and 4|x| is exact), and equal at the breakpoints to the
    definition: 1.2 at |x| = 0.2, 0.4 at |x| = 0.4 and 1, 0 beyond 1. ``scratch`` (x's size)
    holds 1[|x| > 1], so a caller with kept buffers allocates nothing.
    """
    d = torch.abs(x, out=out)
    beyond = torch.gt(d, WIDE, out=torch.empty_like(d) if scratch is None else scratch)
    d.mul_(-4.0).add_(2.0).clamp_min_(NARROW_VALUE)  # 2 − 4|x| (exact: 4|x| is), at least 0.4
    return d.sub_(beyond, alpha=NARROW_VALUE)


def reset_sparse_layers(
    layout: FlatLayout,
    ts: Sequence[Tensor],
    a: Tensor,
    x: Tensor,
    keep: Tensor,
    sync_free: bool | None = None,
) -> None:
    """The safety reset: every layer whose float mask ``keep`` holds ≤ 1 % of its weights gets
    t ← 0 and x = |w| − t, keep = H(x) recomputed (``a`` = |w|; x, keep, t edited in place;
    all but t flat, see ``FlatLayout``).

    On the CPU a plain branch per layer; on accelerators (``sync_free``) the same result
    without a host sync: t is multiplied by 0 where a layer resets, and x, keep recomputed
    for every layer (identical where t did not change).
    """
    # exact counts: a float32 sum of 0/1 is exact below 2²⁴ entries, float64 beyond
    wide = max(layout.sizes) >= 2**24
    counts = layout.sums(keep, dtype=torch.float64 if wide else None)
    limits = [RESET_DENSITY * size for size in layout.sizes]
    if keep.is_cuda if sync_free is None else sync_free:
        limit = layout.constant(limits, counts.dtype, counts.device)
        stay = (counts > limit).to(ts[0].dtype)
        torch._foreach_mul_(list(ts), list(stay.unbind()))
        torch._foreach_add_(list(ts), 0.0)  # −0.0 → 0.0
        subtract_thresholds(layout, ts, a, x)
        torch.sign(x, out=keep).clamp_min_(0.0)
        return
    for t, a_l, x_l, keep_l, count, limit in zip(
        ts, layout.parts(a), layout.parts(x), layout.parts(keep), counts.tolist(), limits
    ):
        if count <= limit:
            t.zero_()
            x_l.copy_(a_l)  # |w| − 0
            torch.sign(x_l, out=keep_l).clamp_min_(0.0)


def subtract_thresholds(layout: FlatLayout, ts: Sequence[Tensor], a: Tensor, x: Tensor) -> None:
    """x = a − t_o over the flat tensors, t_o the threshold of each entry's output channel."""
    for a_rows, x_rows, t in zip(layout.rows(a), layout.rows(x), ts):
        torch.sub(a_rows, t.view(-1, 1), out=x_rows)


class MaskedWeights(LayerBatch):
    """w ⊙ H(|w| − t_o) for every layer at once (over the flat latents), with the reset; the
    gradients written out.

    With x = |w| − t, m = H(x), s = H'(x) (the surrogate) and upstream gradient g:
    ∂L/∂x = g·w·s;  ∂L/∂w = g·m + ∂L/∂x · sign(w) = g·m + g·s·|w|;  ∂L/∂t_o = −Σ_{row o} ∂L/∂x.
    """

    def compute(self, w: Tensor, out: Tensor) -> None:
        ts = self.extras
        a = torch.abs(w, out=self.buffer("a"))
        x = self.buffer("x")
        subtract_thresholds(self.layout, ts, a, x)
        keep = step(x, out=self.buffer("keep"))
        reset_sparse_layers(self.layout, ts, a, x, keep)  # may reset t in place
        torch.mul(w, keep, out=out)

    def gradients(self, g: Tensor, out: Tensor) -> list[Tensor]:
        w, a, x, keep = self.layout.buffer, self.buffer("a"), self.buffer("x"), self.buffer("keep")
        gs = surrogate_derivative(x, self.buffer("gs"), self.buffer("beyond")).mul_(g)  # g·H'(x)
        gx = torch.mul(gs, w, out=self.buffer("gx"))  # ∂L/∂x
        grad_t = [rows.sum(dim=1).neg_() for rows in self.layout.rows(gx)]  # −Σ_row ∂L/∂x
        torch.mul(g, keep, out=out).addcmul_(gs, a)
        return grad_t


class ThresholdMask(BatchedWeight):
    """The parametrization of one layer's weight; owns its per-output-channel thresholds t."""

    def __init__(self, out_channels: int, like: Tensor, index: int) -> None:
        super().__init__(None, index)
        self.threshold = nn.Parameter(
            torch.zeros(out_channels, dtype=like.dtype, device=like.device)
        )


@dataclass(frozen=True)
class DSTHparams:
    penalty: float = hparam(
        0.002,
        "reference code (its MNIST smoke-test value, docs/methods.md); it trains (seed 0: "
        "digits 86 % sparse at 98.6 % test accuracy, fashion-mnist/LeNet-5 96.8 % at 88.9 %); "
        "the presets calibrate it per target",
        low=1e-5,
        high=1e-1,
        log=True,
    )
    l2_doubled: bool = hparam(
        True,
        "reference code (docs/methods.md): an explicit ½·wd·Σ‖w‖² on top of SGD's wd, "
        "effective 2·wd on the weights; false = the single-L2 form",
    )


class DST(PruningMethod):
    """Trainable per-channel hard thresholds with a surrogate gradient and an exp(−t) penalty."""

    name = "dst"
    source = (
        "Liu, Xu, Shi, Cheung & So, Dynamic Sparse Training: Find Efficient Sparse Network from "
        "Scratch with Trainable Masked Layers, ICLR 2020, arXiv:2005.06870"
    )
    Hparams = DSTHparams
    targets_sparsity = False

    def __init__(self, hp, target: float, plan) -> None:
        super().__init__(hp, target, plan)
        self.latents: list[Tensor] = []
        self.thresholds: list[nn.Parameter] = []
        self.batch: MaskedWeights | None = None

    def on_start(self, state: TrainState) -> None:
        modules = [m for _, m in state.prunable()]
        masks = [ThresholdMask(m.weight.shape[0], m.weight, i) for i, m in enumerate(modules)]
        self.latents = register_batched(modules, masks)
        self.thresholds = [mask.threshold for mask in masks]
        self.batch = MaskedWeights(self.latents, self.thresholds)
        for mask in masks:
            mask.batch = self.batch

    @torch.no_grad()
    def on_backward(self, state: TrainState) -> None:
        """The latents' and thresholds' gradients (``MaskedWeights``), then the penalty's
        added: −α·exp(−t) to t's and, with ``l2_doubled``, wd·w to the latent weights' (see
        the module docstring)."""
        assert self.batch is not None
        self.batch.backward()
        decay = torch._foreach_exp(torch._foreach_neg(self.thresholds))
        add_to_grads(self.thresholds, decay, -self.hp.penalty)
        if self.hp.l2_doubled:
            add_l2_gradient(self.latents, state)

    def on_finish(self, state: TrainState) -> None:
        """Mask from the thresholds (after the reset check, as in a forward); raw w kept."""
        assert self.batch is not None
        remove_batched([m for _, m in state.prunable()], self.batch)
