"""DNW — discovering neural wirings (Wortsman, Farhadi & Rastegari, NeurIPS 2019), docs/methods.md.

Every prunable weight becomes a trainable latent w. Every forward uses

    τ_l = the k_l-th smallest |w| of layer l                 (``selection``: uniform, ignorefirst)
    τ   = the k-th smallest |w| over all prunable weights    (``selection``: global)
    w_e = w · 1[|w| > τ]

and the backward is straight-through: ∂L/∂w := ∂L/∂w_e, unmasked, so pruned latents keep
receiving gradient (and SGD weight decay) and can re-enter. At the end the mask is taken at the
current thresholds and the *raw* latent w is kept, masked (docs/methods.md).

Selection. DNW's authors choose per weight tensor: ``uniform`` is their ``allsparse`` (every
layer at the target S), ``ignorefirst`` keeps the first layer dense (the other layers share the
rest of the budget, so the network still reaches S); both keep exact per-layer counts
(``layer_keep_counts``). ``global`` (k = ⌊S · N_prunable⌋, one τ) is the BIMP paper's
re-implementation; from PyTorch's default initialisation it can empty whole layers at high
sparsity (docs/methods.md), which per-layer selection cannot.

Speed without approximation: the latents change only at ``optimizer.step``, so the thresholds
(exact selections, see ``kth_smallest_abs``) and the masks are computed once per change of the
latents, for all layers at once (``LayerBatch``), at the first forward after the step; every
other forward until the next step reuses them. The cache is keyed on the latents' version
counters (bumped by the optimizer step and by any in-place edit), so no forward ever sees a
stale threshold.

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
    hparam,
    layer_keep_counts,
    register_batched,
    remove_batched,
)


class StraightThroughMasks(LayerBatch):
    """w · 1[|w| > τ] for every layer at once, τ per layer (``counts``: the k_l of each layer)
    or one global τ (``counts`` None, ``k`` entries pruned); identity backward (the gradient
    reaches every latent).

    The mask is relu(sign(|w| − τ)), float ops only (a comparison to bool and the bool
    product cost ~15× more on the CPU): |w| − τ > 0 exactly when |w| > τ (IEEE subtraction
    of distinct floats is never 0; PyTorch does not flush denormals unless asked to).
    """

    def __init__(self, latents: Sequence[Tensor], k: int, counts: list[int] | None) -> None:
        super().__init__(latents)
        self.k = k
        self.counts = counts

    def thresholds(self, w: Tensor) -> list[Tensor]:
        """τ of every layer (the same global τ for each, under global selection)."""
        if self.counts is None:
            return [global_threshold([w], self.k)] * len(self.layout)
        return [global_threshold([part], k) for part, k in zip(self.layout.parts(w), self.counts)]

    def compute(self, w: Tensor, out: Tensor) -> None:
        if self.counts is None:
            tau = global_threshold([w], self.k)
            torch.abs(w, out=out).sub_(tau).sign_().clamp_min_(0.0).mul_(w)
            return
        for part, o, tau in zip(self.layout.parts(w), self.layout.parts(out), self.thresholds(w)):
            torch.abs(part, out=o).sub_(tau).sign_().clamp_min_(0.0).mul_(part)

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


SELECTIONS = ("uniform", "ignorefirst", "global")


@dataclass(frozen=True)
class DNWHparams:
    selection: str = hparam(
        "uniform",
        "DNW's authors' code (allenai/dnw): per-layer top-k, `allsparse` (every layer at S); "
        "`ignorefirst` keeps the first layer dense; `global` is the BIMP paper's "
        "re-implementation (docs/methods.md, dnw)",
        choices=SELECTIONS,
        help="uniform (every layer at S), ignorefirst (first layer dense) or global (one τ)",
    )


class DNW(PruningMethod):
    """Exact top-k of the latent weights every forward (per layer, or global), straight-through
    gradient."""

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
        counts = None
        if self.hp.selection != "global":
            dense = (0,) if self.hp.selection == "ignorefirst" else ()
            shapes = [tuple(w.shape) for w in latents]
            kept = layer_keep_counts("uniform", shapes, self.target, dense)
            counts = [w.numel() - keep for w, keep in zip(latents, kept)]
        self.batch = StraightThroughMasks(latents, self.k, counts)
        for p in parametrizations:
            p.batch = self.batch

    def taus(self) -> list[float]:
        """The current threshold of every layer (for inspection; every forward has its own)."""
        assert self.batch is not None
        return [float(t) for t in self.batch.thresholds(self.batch.layout.flat(self.batch.inputs))]

    def tau(self) -> float:
        """The current global τ (global selection)."""
        assert self.batch is not None
        return float(global_threshold(self.batch.inputs, self.k))

    def on_backward(self, state: TrainState) -> None:
        """The latents' gradients: those of the effective weights (straight through)."""
        assert self.batch is not None
        self.batch.backward()

    def on_finish(self, state: TrainState) -> None:
        """Mask at the current thresholds, keep the raw latents (masked) as plain weights."""
        assert self.batch is not None
        remove_batched([m for _, m in state.prunable()], self.batch)
