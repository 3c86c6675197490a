"""Per-entry scores and exact top-k over all parameters at once (GSM's saliency, LC's
magnitudes): one flat buffer with a view per parameter, and an exact selection on it."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor, nn


def top_count(n_prunable: int, sparsity: float) -> int:
    """⌊(1 − S)·N⌋ in exact decimal arithmetic (the float product can fall just below an
    integer, e.g. (1 − 0.9)·1000 = 99.99999999999999)."""
    return math.floor((1 - Fraction(repr(float(sparsity)))) * n_prunable)


def top_indices(scores: Tensor, k: int) -> Tensor:
    """The indices of exactly ``k`` largest entries of a flat tensor of scores ≥ 0, 0 < k < n.

    Ties at the k-th value are broken arbitrarily, as by ``torch.topk``. On the CPU this is
    numpy's ``argpartition`` (introselect on a zero-copy view): exact, and measured 4–6× faster
    than ``torch.topk`` on LeNet-5's 61,706 saliencies (≈ 0.07 vs 0.3–0.4 ms). Introselect
    degrades (≈ 30×) when most entries tie, which for these scores means exact zeros (dead
    units, zero gradients), so when zeros are the majority the selection runs over the
    positive entries only, and when those are at most k it needs none. On CUDA (and for
    dtypes numpy lacks) ``torch.topk(sorted=False)``, a radix select.
    """
    n = scores.numel()
    if scores.device.type != "cpu" or scores.dtype not in (torch.float32, torch.float64):
        return torch.topk(scores, k, sorted=False).indices
    values = scores.numpy()
    positive = int(np.count_nonzero(values))  # (torch.count_nonzero: ≈ 8 ms on 2 threads)
    if 2 * positive >= n:
        return torch.from_numpy(np.argpartition(values, n - k)[n - k :])
    candidates = np.flatnonzero(values)
    if positive <= k:  # every positive entry, then the first zeros
        zeros = np.flatnonzero(values == 0)[: k - positive]
        return torch.from_numpy(np.concatenate([candidates, zeros]))
    top = np.argpartition(values[candidates], positive - k)[positive - k :]
    return torch.from_numpy(candidates[top])


class FlatScores:
    """The parameters that carry a gradient this step and one flat buffer over them, with a
    view per parameter (logical order, as ``flatten``): per-entry scores are written into
    the views, selected on the flat buffer, and the selection is written back into the same
    buffer, so a step allocates nothing but the selected indices. Rebuilt only when the set
    of parameters with a gradient changes."""

    def __init__(self, model: nn.Module) -> None:
        self.all = [p for p in model.parameters() if p.requires_grad]
        self._key: tuple[int, ...] | None = None
        self.params: list[Tensor] = []
        self.buffer = torch.empty(0)
        self.views: list[Tensor] = []

    def current(self) -> tuple[list[Tensor], list[Tensor]]:
        """(parameters, gradients) of the parameters whose gradient is not None."""
        present = tuple(i for i, p in enumerate(self.all) if p.grad is not None)
        if present != self._key:
            self._key = present
            self.params = [self.all[i] for i in present]
            if self.params:
                first = self.params[0]
                total = sum(p.numel() for p in self.params)
                self.buffer = torch.empty(total, dtype=first.dtype, device=first.device)
                parts = self.buffer.split([p.numel() for p in self.params])
                self.views = [v.view(p.shape) for v, p in zip(parts, self.params)]
        return self.params, [p.grad for p in self.params]

    @torch.no_grad()
    def write_saliency(
        self, params: list[Tensor], grads: list[Tensor], fused: bool | None = None
    ) -> None:
        """buffer ← |w·g| over all entries. ``fused`` (default: on CUDA) takes one fused
        product and one ``cat`` (few kernel launches); otherwise one product per parameter
        straight into its view (no temporaries; cheaper on the CPU)."""
        if self.buffer.is_cuda if fused is None else fused:
            prods = torch._foreach_mul(params, grads)
            torch.cat([t.reshape(-1) for t in prods], out=self.buffer)
        else:
            for p, g, v in zip(params, grads, self.views):
                torch.mul(p, g, out=v)
        self.buffer.abs_()

    @torch.no_grad()
    def write_magnitude(self, params: list[Tensor], fused: bool | None = None) -> None:
        """buffer ← |w| over all entries (``fused`` as in ``write_saliency``)."""
        if self.buffer.is_cuda if fused is None else fused:
            torch.cat([p.reshape(-1) for p in params], out=self.buffer)
            self.buffer.abs_()
        else:
            for p, v in zip(params, self.views):
                torch.abs(p, out=v)

    def select_top(self, k: int, value: float) -> list[Tensor]:
        """Replace the scores in the buffer by ``value`` at exactly ``k`` largest scores and 0
        elsewhere; return the per-parameter views."""
        buffer = self.buffer
        n = buffer.numel()
        if k >= n:
            buffer.fill_(value)
        elif k <= 0:
            buffer.zero_()
        else:
            index = top_indices(buffer, k)
            buffer.zero_().index_fill_(0, index, value)
        return self.views
