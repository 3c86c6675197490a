"""SR-STE: N:M sparse training from scratch with the sparse-refined straight-through estimator
(Zhou, Ma, Zhu, Liu, Zhang, Yuan, Sun & Li, ICLR 2021, arXiv:2102.04010), docs/methods.md.

Every prunable weight of a layer the run's N:M pattern groups becomes a dense latent W. Every
forward uses W̃ = W ⊙ E, E keeping the N largest |W| of each group of M (recomputed whenever W
changed, i.e. once per optimizer step: the paper's per-iteration mask). The backward is
straight-through with the sparse-refined term:

    ∂L/∂W := ∂L/∂W̃ + λ_W · (1 − E) ⊙ W

so the pruned weights still learn from the gradient of the sparse network, and are pulled
towards zero by λ_W, which damps the mask's flips between iterations (the paper's argument).
Layers outside the pattern (input dimension not a multiple of M) are trained dense. At the
end the weights are W̃, exactly N:M.

The latents share the flat buffer of the other reparametrising methods (``LayerBatch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from benchsuite import (
    BatchedWeight,
    LayerBatch,
    PruningMethod,
    TrainState,
    hparam,
    nm_eligible,
    nm_mask,
    register_batched,
    remove_batched,
)


class SparseRefined(LayerBatch):
    """W ⊙ E for every layer at once; ∂L/∂W = g + λ_W·(1 − E)⊙W."""

    def __init__(self, latents: Sequence[Tensor], n: int, m: int, decay: float) -> None:
        super().__init__(latents)
        self.n, self.m, self.decay = n, m, decay
        self.grouped = [nm_eligible(w, m) for w in latents]

    def adopt(self) -> None:
        super().adopt()
        self.mask = torch.ones_like(self.effective)  # E, flat (1 outside the pattern)
        self.masks = self.layout.unflatten(self.mask)

    def compute(self, w: Tensor, out: Tensor) -> None:
        for grouped, latent, mask in zip(self.grouped, self.layout.unflatten(w), self.masks):
            if grouped:
                mask.copy_(nm_mask(latent, self.n, self.m))
        torch.mul(w, self.mask, out=out)

    def gradients(self, g: Tensor, out: Tensor) -> list[Tensor]:
        w = self.layout.buffer
        assert w is not None
        pruned = self.buffer("pruned")
        torch.sub(1.0, self.mask, out=pruned)  # 1 − E
        torch.addcmul(g, pruned, w, value=self.decay, out=out)
        return []


@dataclass(frozen=True)
class SRSTEHparams:
    decay: float = hparam(
        2e-4,
        "Zhou et al. 2021: λ_W = 2e-4, the paper's setting (and its released code's default)",
        low=2e-5,
        high=2e-2,
        log=True,
        help="λ_W, the pull of the pruned weights towards zero",
    )


class SRSTE(PruningMethod):
    """N:M masks recomputed every step from dense latents, straight-through, sparse-refined."""

    name = "srste"
    source = (
        "Zhou et al., Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch, "
        "ICLR 2021, arXiv:2102.04010"
    )
    Hparams = SRSTEHparams
    patterns = ("n:m",)

    batch: SparseRefined | None = None

    def on_start(self, state: TrainState) -> None:
        pattern = state.pattern
        if pattern.kind != "n:m":
            raise ValueError(f"srste trains to an N:M pattern, not {pattern} (--pattern 2:4)")
        modules = [m for _, m in state.prunable()]
        parametrizations = [BatchedWeight(None, i) for i in range(len(modules))]
        latents = register_batched(modules, parametrizations)
        self.batch = SparseRefined(latents, pattern.n, pattern.m, self.hp.decay)
        for p in parametrizations:
            p.batch = self.batch

    def on_backward(self, state: TrainState) -> None:
        """The latents' gradients; the pruned ones need the dense weight gradient every step
        (counted in ``train_flops``, as RigL's updates are)."""
        assert self.batch is not None
        self.batch.backward()
        state.note_dense_weight_grad()

    def on_finish(self, state: TrainState) -> None:
        """The last W̃ = W ⊙ E as plain weights: exactly N:M."""
        assert self.batch is not None
        remove_batched([m for _, m in state.prunable()], self.batch)
