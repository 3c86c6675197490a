"""DST — dynamic sparse training (Liu, Xu, Shi, Cheung & So, ICLR 2020), reference §5.

Every prunable Conv/Linear gets trainable thresholds t ∈ R^{out_channels} (init 0), one per
output channel/row. Every forward masks the weight with a step function,

    x = |w| − t_o,   m = H(x) = 1[x > 0],   w_e = w ⊙ m,

whose backward uses the surrogate derivative H'(x) ≈ 2 − 4|x| (|x| ≤ 0.4), 0.4 (0.4 < |x| ≤ 1),
0 (|x| > 1). Gradients reach w directly (through m) and through the surrogate (∂x/∂w = sign w),
and reach t through the mask (∂x/∂t = −1). Safety reset: a layer whose mask keeps ≤ 1 % of its
weights in a forward gets its thresholds reset to 0 and the mask recomputed. The loss adds

    α · Σ_layers Σ_o exp(−t_o)  +  ½ · wd · Σ ‖w‖²       (the L2 term only with ``l2_doubled``)

and SGD applies wd to w and t once more, so with ``l2_doubled`` (the reference code, the
default) the weights' effective L2 is 2·wd. At the end the mask comes from t and the raw w is
kept, masked (reference §11.10).

All layers' masked weights come from one autograd function per forward pass (``LayerBatch``
in ``methods/dnw.py``): multi-tensor ops for the mask, the reset check and the product, and
the backward written out; tested against the composed autograd form of one layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchsuite.method import PruningMethod, TrainState, hparam
from benchsuite.sparsity import count_zeros
from methods.dnw import BatchedWeight, LayerBatch, register_batched, remove_batched

RESET_DENSITY = 0.01  # reference §10: hard-coded reset at ≤ 1 % density
NARROW, WIDE = 0.4, 1.0  # reference §10: the surrogate's breakpoints
NARROW_VALUE = 0.4  # its value on 0.4 < |x| ≤ 1 (= 2 − 4·0.4: continuous at 0.4)


def step(x: Tensor) -> Tensor:
    """H(x) = 1[x > 0] as a float tensor, from float ops only: relu(sign(x)) is exactly 1 where
    x > 0 and 0 elsewhere (comparisons to bool and ``where`` cost 5–50× more on the CPU)."""
    return torch.sign(x).relu_()


def surrogate_derivative(x: Tensor) -> Tensor:
    """The step function's backward: 2 − 4|x| on |x| ≤ 0.4, 0.4 on 0.4 < |x| ≤ 1, else 0.

    Written as max(2 − 4|x|, 0.4) − 0.4·1[|x| > 1], float ops only; exact (2 − 4|x| ≥ 0.4
    exactly when |x| ≤ 0.4, and 4|x| is exact), and equal at the breakpoints to the
    definition: 1.2 at |x| = 0.2, 0.4 at |x| = 0.4 and 1, 0 beyond 1.
    """
    a = x.abs()
    d = torch.rsub(a, 2.0, alpha=4.0).clamp_min_(NARROW_VALUE)
    return d.sub_(step(a - WIDE), alpha=NARROW_VALUE)


class Step(torch.autograd.Function):
    """H(x) with the surrogate derivative (the composed form, for tests)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return step(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * surrogate_derivative(x)


def _channel_view(t: Tensor, w: Tensor) -> Tensor:
    return t.view(-1, *([1] * (w.dim() - 1)))


def reset_sparse_layers(
    ws: Sequence[Tensor],
    ts: Sequence[Tensor],
    a: list[Tensor],
    x: list[Tensor],
    keep: list[Tensor],
    sync_free: bool | None = None,
) -> None:
    """The safety reset: every layer whose float mask ``keep`` holds ≤ 1 % of its weights gets
    t ← 0 (in place) and x = |w| − t, keep = H(x) recomputed (``a`` = |w|; lists edited).

    On the CPU a plain branch per layer; on accelerators (``sync_free``) the same result
    without a host sync: t is multiplied by 0 where a layer resets, and x, keep recomputed
    for every layer (identical where t did not change).
    """
    # exact counts: a float32 sum of 0/1 is exact below 2²⁴ entries, float64 beyond
    wide = max(k.numel() for k in keep) >= 2**24
    counts = torch.stack([k.sum(dtype=torch.float64 if wide else None) for k in keep])
    limits = [RESET_DENSITY * w.numel() for w in ws]
    if ws[0].is_cuda if sync_free is None else sync_free:
        limit = torch.tensor(limits, dtype=counts.dtype, device=counts.device)
        stay = (counts > limit).to(ts[0].dtype)
        torch._foreach_mul_(list(ts), list(stay.unbind()))
        torch._foreach_add_(list(ts), 0.0)  # −0.0 → 0.0
        x[:] = torch._foreach_sub(a, [_channel_view(t, w) for t, w in zip(ts, ws)])
        keep[:] = [step(xi) for xi in x]
        return
    for i, (count, limit) in enumerate(zip(counts.tolist(), limits)):
        if count <= limit:
            ts[i].zero_()
            x[i] = a[i].clone()  # |w| − 0
            keep[i] = step(x[i])


class _MaskedWeights(torch.autograd.Function):
    """w_i ⊙ H(|w_i| − t_i) for every layer, with the reset; backward written out.

    With x = |w| − t, m = H(x), s = H'(x) (the surrogate) and upstream gradient g:
    ∂L/∂x = g·w·s;  ∂L/∂w = g·m + ∂L/∂x · sign(w) = g·m + g·s·|w|;  ∂L/∂t_o = −Σ_{row o} ∂L/∂x.
    """

    @staticmethod
    def forward(ctx, n: int, *tensors: Tensor) -> tuple[Tensor, ...]:  # noqa: D102
        ws, ts = tensors[:n], tensors[n:]
        a = torch._foreach_abs(ws)
        x = list(torch._foreach_sub(a, [_channel_view(t, w) for t, w in zip(ts, ws)]))
        keep = list(torch._foreach_sign(x))
        torch._foreach_clamp_min_(keep, 0.0)  # H(x) = relu(sign(x))
        reset_sparse_layers(ws, ts, a, x, keep)  # may reset t in place (no grad here)
        ctx.n = n
        ctx.save_for_backward(*ws, *a, *x, *keep)
        return tuple(torch._foreach_mul(ws, keep))

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:  # noqa: D102
        n, saved = ctx.n, ctx.saved_tensors
        ws, a, x, keep = saved[:n], saved[n : 2 * n], saved[2 * n : 3 * n], saved[3 * n :]
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, ws)]
        gs = surrogate_derivatives(x)
        torch._foreach_mul_(gs, grads)  # g·H'(x)
        dx = torch._foreach_mul(gs, ws)  # ∂L/∂x
        grad_t = [d.sum(dim=tuple(range(1, d.dim()))).neg_() for d in dx]
        grad_w = torch._foreach_mul(grads, keep)
        torch._foreach_addcmul_(grad_w, gs, a)
        return None, *grad_w, *grad_t


def surrogate_derivatives(x: Sequence[Tensor]) -> list[Tensor]:
    """``surrogate_derivative`` over a list of tensors with ``torch._foreach`` ops."""
    d = list(torch._foreach_abs(x))
    over = torch._foreach_sub(d, WIDE)
    torch._foreach_sign_(over)
    torch._foreach_clamp_min_(over, 0.0)  # 1[|x| > 1]
    torch._foreach_mul_(d, -4.0)
    torch._foreach_add_(d, 2.0)  # 2 − 4|x| (4|x| is exact: one rounding, as in the scalar form)
    torch._foreach_clamp_min_(d, NARROW_VALUE)
    torch._foreach_add_(d, over, alpha=-NARROW_VALUE)
    return d


def masked_weight(w: Tensor, t: Tensor) -> Tensor:
    """One layer's w ⊙ H(|w| − t) with the reset and the surrogate gradient."""
    return _MaskedWeights.apply(1, w, t)[0]


class ThresholdMask(BatchedWeight):
    """The parametrization of one layer's weight; owns its per-output-channel thresholds t."""

    def __init__(self, out_channels: int, like: Tensor, index: int) -> None:
        super().__init__(None, index)
        self.threshold = nn.Parameter(
            torch.zeros(out_channels, dtype=like.dtype, device=like.device)
        )


class _Penalty(torch.autograd.Function):
    """α · Σ exp(−t) + ½ · wd · Σ ‖w‖² over lists of tensors, as one autograd node.

    The gradients −α·exp(−t) and wd·w are written out with ``torch._foreach`` ops: the same
    value and gradients as the composed expression, without ~30 tiny autograd nodes a step.
    """

    @staticmethod
    def forward(ctx, alpha: float, wd: float, n_t: int, *tensors: Tensor) -> Tensor:  # noqa: D102
        ts, ws = tensors[:n_t], tensors[n_t:]
        e = torch._foreach_exp(torch._foreach_neg(ts))
        value = alpha * torch.cat([x.reshape(-1) for x in e]).sum()
        if ws:
            norms = torch.stack(torch._foreach_norm(ws))
            value = value + 0.5 * wd * norms.square().sum()
        ctx.alpha, ctx.wd, ctx.n_t = alpha, wd, n_t
        ctx.save_for_backward(*e, *ws)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        saved = ctx.saved_tensors
        e, ws = saved[: ctx.n_t], saved[ctx.n_t :]
        grad_t = torch._foreach_mul(e, grad * -ctx.alpha)
        grad_w = torch._foreach_mul(ws, grad * ctx.wd) if ws else []
        return None, None, None, *grad_t, *grad_w


@dataclass(frozen=True)
class DSTHparams:
    penalty: float = hparam(
        0.002,
        "reference code (its MNIST smoke-test value, reference §10); it trains (seed 0: "
        "digits 86 % sparse at 98.6 % test accuracy, fashion-mnist/LeNet-5 96.8 % at 88.9 %); "
        "the presets calibrate it per target",
        low=1e-5,
        high=1e-1,
        log=True,
    )
    l2_doubled: bool = hparam(
        True,
        "reference code (reference §5, §11.9): an explicit ½·wd·Σ‖w‖² on top of SGD's wd, "
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
        self.batch: LayerBatch | None = None

    def prepare(self, model: nn.Module, state: TrainState) -> None:
        modules = [m for _, m in state.prunable()]
        masks = [ThresholdMask(m.weight.shape[0], m.weight, i) for i, m in enumerate(modules)]
        self.latents = register_batched(modules, masks)
        self.thresholds = [mask.threshold for mask in masks]
        n = len(modules)

        def compute(*inputs: Tensor) -> Sequence[Tensor]:
            return _MaskedWeights.apply(n, *inputs)

        self.batch = LayerBatch(compute, [*self.latents, *self.thresholds])
        for mask in masks:
            mask.batch = self.batch

    def weight_decay(self, state: TrainState) -> float:
        assert state.optimizer is not None
        return float(state.optimizer.param_groups[0]["weight_decay"])

    def regularization(self, state: TrainState) -> Tensor:
        """α · Σ exp(−t) (+ ½ · wd · Σ‖w‖² over the latent prunable weights if l2_doubled)."""
        wd = self.weight_decay(state)
        ws = self.latents if self.hp.l2_doubled and wd else []
        return _Penalty.apply(self.hp.penalty, wd, len(self.thresholds), *self.thresholds, *ws)

    def finalize(self, model: nn.Module, state: TrainState) -> None:
        """Mask from the thresholds (after the reset check, as in a forward); raw w kept."""
        assert self.batch is not None
        weights = remove_batched([m for _, m in state.prunable()], self.batch)
        zeros, total = count_zeros(weights)
        state.log("sparsity_before_projection", zeros / total)
