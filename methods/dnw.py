"""DNW — discovering neural wirings (Wortsman, Farhadi & Rastegari, NeurIPS 2019), reference §5.

Every prunable weight becomes a trainable latent w. Every forward uses

    τ   = the k-th smallest |w| over all prunable weights, k = ⌊S · N_prunable⌋   (global, exact)
    w_e = w · 1[|w| > τ]

and the backward is straight-through: ∂L/∂w := ∂L/∂w_e, unmasked, so pruned latents keep
receiving gradient (and SGD weight decay) and can re-enter. At the end the mask is taken at the
current τ and the *raw* latent w is kept, masked (reference §5, §11.10).

Speed without approximation: the latents change only at ``optimizer.step``, so τ (one exact
selection over the flat |w|, see ``kth_smallest_abs``) and the masks are computed once per
change of the latents, for all layers at once (``LayerBatch``), at the first forward after
the step; every other forward until the next step reuses them. That is exactly the τ a
per-forward computation would give: the cache is keyed on the latents' version counters
(bumped by the optimizer step and by any in-place edit, e.g. a hand edit under ``no_grad``),
so no forward (training, validation, a test's) ever sees a stale τ.

``LayerBatch``, ``BatchedWeight``, ``register_batched`` and ``remove_batched`` are shared with
STR and DST (``methods/str.py``, ``methods/dst.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from benchsuite.method import PruningMethod, TrainState


class LayerBatch:
    """Every prunable layer's effective weight from one autograd call, recomputed on change.

    A per-layer parametrization runs its forward and backward in Python once per layer and
    step; here layer i's parametrization asks the batch for output i, and the batch computes
    all layers at once with one ``torch.autograd.Function`` over ``torch._foreach`` ops (one
    dispatch per op for all layers, fused multi-tensor kernels on CUDA). Exact: the outputs
    depend only on ``inputs`` and are recomputed whenever

    * any input's version counter moved (the optimizer step, a hand edit, DST's reset), or
    * grad mode changed, or
    * (with grad enabled) layer i already took its output since the last computation, so
      each forward pass builds its own graph node.
    """

    def __init__(self, compute: Callable[..., Sequence[Tensor]], inputs: Sequence[Tensor]) -> None:
        """``compute(*inputs)`` → the layers' weights; ``inputs``: the latent weights in layer
        order, then any other tensor they depend on (a deep copy of the model remaps them)."""
        self.compute = compute
        self.inputs = list(inputs)
        self.outputs: Sequence[Tensor] | None = None
        self.key: tuple | None = None
        self.taken: set[int] = set()

    def current_key(self) -> tuple:
        return (torch.is_grad_enabled(), *(t._version for t in self.inputs))

    def output(self, i: int) -> Tensor:
        stale = self.outputs is None or self.key != self.current_key()
        if stale or (i in self.taken and torch.is_grad_enabled()):
            self.outputs = self.compute_in_memory_order()
            self.key = self.current_key()  # after the computation (it may reset inputs)
            self.taken = set()
        self.taken.add(i)
        return self.outputs[i]

    def compute_in_memory_order(self) -> list[Tensor]:
        """``compute`` on every input as laid out in memory, outputs in the inputs' layout.

        A channels_last weight (O, I, H, W) is computed on as its dense (O, H, W, I) view:
        the multi-tensor kernels take their fast path, and the effective weight stays
        channels_last, so the convolution keeps its fast layout (an NCHW result would make
        it and the pooling after it switch formats every step: 2× slower on LeNet-5).
        Element-wise results and per-output-channel reductions are the same in either view.
        """
        permuted = [_channels_last(t) for t in self.inputs]
        views = [t.permute(0, 2, 3, 1) if p else t for t, p in zip(self.inputs, permuted)]
        outputs = self.compute(*views)
        return [o.permute(0, 3, 1, 2) if p else o for o, p in zip(outputs, permuted)]

    def invalidate(self) -> None:
        self.outputs = None


def _channels_last(t: Tensor) -> bool:
    """A 4-d tensor stored channels_last, by the rule convolutions pick their layout with
    (unit stride on the channels), which also decides for a single input channel, where
    both layouts describe the same memory."""
    return t.dim() == 4 and t.stride(1) == 1 and t.is_contiguous(memory_format=torch.channels_last)


class BatchedWeight(nn.Module):
    """The parametrization of layer ``index``: its effective weight from the shared batch.

    It may own the layer's extra parameters (thresholds, logits), so that they sit in the
    model and in the optimizer's single group.
    """

    def __init__(self, batch: LayerBatch | None, index: int) -> None:
        super().__init__()
        self.batch = batch
        self.index = index

    def forward(self, w: Tensor) -> Tensor:
        assert self.batch is not None
        if self.batch.inputs[self.index] is not w:  # e.g. a deep copy of the model
            raise RuntimeError("this parametrization's batch computes another tensor's weight")
        return self.batch.output(self.index)


def register_batched(modules: Sequence[nn.Module], parametrizations: Sequence[BatchedWeight]):
    """Register ``parametrizations`` on ``modules``' weights; returns the latent weights."""
    for m, p in zip(modules, parametrizations):
        # unsafe: skip the registration-time evaluation; the batch is bound afterwards
        parametrize.register_parametrization(m, "weight", p, unsafe=True)
    return [m.parametrizations.weight.original for m in modules]


@torch.no_grad()
def remove_batched(modules: Sequence[nn.Module], batch: LayerBatch) -> list[Tensor]:
    """Turn every layer's current effective weight into its plain weight tensor.

    All outputs are computed once before any layer changes, then each parametrization is
    removed and the latent (the same Parameter object) overwritten with its output.
    """
    batch.invalidate()
    outputs = [batch.output(i) for i in range(len(modules))]
    for m, out in zip(modules, outputs):
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        m.weight.copy_(out)
    return [m.weight for m in modules]


class _StraightThroughMasks(torch.autograd.Function):
    """w_i · 1[|w_i| > τ] for every layer; identity backward (the gradient reaches every latent).

    The mask is relu(sign(|w| − τ)), float ops only (a comparison to bool and the bool
    product cost ~15× more on the CPU): |w| − τ > 0 exactly when |w| > τ (IEEE subtraction
    of distinct floats is never 0; PyTorch does not flush denormals unless asked to).
    """

    @staticmethod
    def forward(ctx, tau: Tensor, *ws: Tensor) -> tuple[Tensor, ...]:  # noqa: D102
        m = torch._foreach_abs(ws)
        torch._foreach_sub_(m, [tau] * len(ws))
        torch._foreach_sign_(m)
        torch._foreach_clamp_min_(m, 0.0)
        return tuple(torch._foreach_mul(ws, m))

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:  # noqa: D102
        return None, *grads


def straight_through_mask(w: Tensor, tau: Tensor) -> Tensor:
    """One layer's w · 1[|w| > τ] with the straight-through gradient (the reference form)."""
    return _StraightThroughMasks.apply(tau, w)[0]


def kth_smallest_abs(tensors: Sequence[Tensor], k: int) -> Tensor:
    """The exact k-th smallest |w| (1-based) over all entries of ``tensors``, as a 0-dim tensor.

    On the CPU, NumPy's single-threaded introselect (``np.partition``) over one concatenated
    copy: ~50 µs for LeNet-5's 61k weights, where ``torch.kthvalue`` sorts a clone with
    threads that, on a loaded 2-core machine, wait for a time slice (up to ~10 ms a call).
    Elsewhere, a ``topk`` over the smaller side. All three return the same stored value.
    """
    first = tensors[0]
    if first.device.type == "cpu" and first.dtype in (torch.float32, torch.float64):
        flat = np.concatenate([w.detach().numpy().reshape(-1) for w in tensors])
        np.abs(flat, out=flat)
        return torch.from_numpy(np.partition(flat, k - 1)[k - 1 : k].reshape(()))
    flat = torch.cat([w.detach().reshape(-1) for w in tensors]).abs_()
    n = flat.numel()
    if k <= n - k + 1:  # the k-th smallest is the largest of the k smallest ...
        return flat.topk(k, largest=False, sorted=False).values.max()
    return flat.topk(n - k + 1, sorted=False).values.min()  # ... and the (n−k+1)-th largest


@torch.no_grad()
def global_threshold(latents: Sequence[Tensor], k: int) -> Tensor:
    """τ = the k-th smallest |w| over all latents (below every |w| when k < 1)."""
    if k < 1:
        return torch.full((), -1.0, dtype=latents[0].dtype, device=latents[0].device)
    return kth_smallest_abs(latents, k).to(latents[0].device)


@dataclass(frozen=True)
class DNWHparams:
    """DNW has no hyperparameter besides the target sparsity S (reference §5)."""


class DNW(PruningMethod):
    """Global exact top-k of the latent weights every forward, straight-through gradient."""

    name = "dnw"
    source = (
        "Wortsman, Farhadi & Rastegari, Discovering Neural Wirings, NeurIPS 2019, arXiv:1906.00586"
    )
    Hparams = DNWHparams
    targets_sparsity = True

    batch: LayerBatch | None = None

    def prepare(self, model: nn.Module, state: TrainState) -> None:
        modules = [m for _, m in state.prunable()]
        parametrizations = [BatchedWeight(None, i) for i in range(len(modules))]
        latents = register_batched(modules, parametrizations)
        self.n = sum(w.numel() for w in latents)
        self.k = k = math.floor(self.target * self.n)  # ⌊S · N_prunable⌋, reference §5

        def compute(*ws: Tensor) -> Sequence[Tensor]:
            return _StraightThroughMasks.apply(global_threshold(ws, k), *ws)

        self.batch = LayerBatch(compute, latents)
        for p in parametrizations:
            p.batch = self.batch

    def tau(self) -> float:
        """The current τ (for inspection; every forward computes its own)."""
        assert self.batch is not None
        return float(global_threshold(self.batch.inputs, self.k))

    def finalize(self, model: nn.Module, state: TrainState) -> None:
        """Mask at the current τ, keep the raw latents (masked) as plain weights."""
        assert self.batch is not None
        weights = remove_batched([m for _, m in state.prunable()], self.batch)
        zeros = sum(int((w == 0).sum()) for w in weights)
        state.log("sparsity_before_projection", zeros / self.n)
