"""DNW — discovering neural wirings (Wortsman, Farhadi & Rastegari, NeurIPS 2019), docs/methods.md.

Every prunable weight becomes a trainable latent w. Every forward uses

    τ   = the k-th smallest |w| over all prunable weights, k = ⌊S · N_prunable⌋   (global, exact)
    w_e = w · 1[|w| > τ]

and the backward is straight-through: ∂L/∂w := ∂L/∂w_e, unmasked, so pruned latents keep
receiving gradient (and SGD weight decay) and can re-enter. At the end the mask is taken at the
current τ and the *raw* latent w is kept, masked (docs/methods.md).

Speed without approximation: the latents change only at ``optimizer.step``, so τ (one exact
selection over the flat |w|, see ``kth_smallest_abs``) and the masks are computed once per
change of the latents, for all layers at once (``LayerBatch``), at the first forward after
the step; every other forward until the next step reuses them. That is exactly the τ a
per-forward computation would give: the cache is keyed on the latents' version counters
(bumped by the optimizer step and by any in-place edit, e.g. a hand edit under ``no_grad``),
so no forward (training, validation, a test's) ever sees a stale τ.

The flat buffer and the batch are shared with STR, DST and CS (``benchsuite/pruning/batched.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from benchsuite import (
    BatchedWeight,
    LayerBatch,
    PruningMethod,
    TrainState,
    register_batched,
    remove_batched,
)


class StraightThroughMasks(LayerBatch):
    """w · 1[|w| > τ] for every layer at once, τ the global k-th smallest |w|; identity
    backward (the gradient reaches every latent).

    The mask is relu(sign(|w| − τ)), float ops only (a comparison to bool and the bool
    product cost ~15× more on the CPU): |w| − τ > 0 exactly when |w| > τ (IEEE subtraction
    of distinct floats is never 0; PyTorch does not flush denormals unless asked to).
    """

    def __init__(self, latents: Sequence[Tensor], k: int) -> None:
        super().__init__(latents)
        self.k = k

    def compute(self, w: Tensor, out: Tensor) -> None:
        tau = global_threshold([w], self.k)
        torch.abs(w, out=out).sub_(tau).sign_().clamp_min_(0.0).mul_(w)

    def gradients(self, g: Tensor, out: Tensor) -> list[Tensor]:
        out.copy_(g)
        return []


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
    """DNW has no hyperparameter besides the target sparsity S (docs/methods.md)."""


class DNW(PruningMethod):
    """Global exact top-k of the latent weights every forward, straight-through gradient."""

    name = "dnw"
    source = (
        "Wortsman, Farhadi & Rastegari, Discovering Neural Wirings, NeurIPS 2019, arXiv:1906.00586"
    )
    Hparams = DNWHparams
    targets_sparsity = True

    batch: StraightThroughMasks | None = None

    def on_start(self, state: TrainState) -> None:
        modules = [m for _, m in state.prunable()]
        parametrizations = [BatchedWeight(None, i) for i in range(len(modules))]
        latents = register_batched(modules, parametrizations)
        self.n = sum(w.numel() for w in latents)
        self.k = math.floor(self.target * self.n)  # ⌊S · N_prunable⌋, docs/methods.md
        self.batch = StraightThroughMasks(latents, self.k)
        for p in parametrizations:
            p.batch = self.batch

    def tau(self) -> float:
        """The current τ (for inspection; every forward computes its own)."""
        assert self.batch is not None
        return float(global_threshold(self.batch.inputs, self.k))

    def on_backward(self, state: TrainState) -> None:
        """The latents' gradients: those of the effective weights (straight through)."""
        assert self.batch is not None
        self.batch.backward()

    def on_finish(self, state: TrainState) -> None:
        """Mask at the current τ, keep the raw latents (masked) as plain weights."""
        assert self.batch is not None
        remove_batched([m for _, m in state.prunable()], self.batch)
