"""Sparsity patterns: which zeros a run's weights may have (docs/protocol.md, Sparsity patterns).

- ``unstructured``: any weight may be zero (the suite's original setting).
- ``N:M``: at most N non-zeros in every group of M consecutive weights along a layer's input
  dimension. A Linear weight (out, in) is grouped along ``in`` in each row; a convolution's
  (out, in, kh, kw) along ``in`` at each (out, kh, kw), the reduction dimension of the GEMM a
  channels-last convolution runs (NVIDIA's 2:4 sparse tensor cores and their ASP tool group
  the same way; torch's semi-structured layout groups a Linear weight's rows). A layer whose
  input dimension is not a multiple of M cannot be grouped so: it stays dense, outside the
  pattern (LeNet-5's two convolutions, with 1 and 6 input channels), and the run names it.
- ``channel``: whole output channels (a Linear layer's output neurons) removed together with
  everything that reads them (``channels.py``, Torch-Pruning's dependency graph).

``Pattern.prune_remaining`` is the magnitude prune of the still-unpruned weights within the
pattern (GMP's ramp, IMP's and BIMP's prune step); ``project`` is the harness's final
projection within it; ``violations`` counts what breaks it in a finished model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchsuite.pruning.channels import ChannelGroups
from benchsuite.pruning.masks import (
    latent_weight,
    project_to_sparsity,
    prunable_modules,
    prune_remaining,
)

UNSTRUCTURED = "unstructured"
NM = "n:m"
CHANNEL = "channel"
KINDS = (UNSTRUCTURED, NM, CHANNEL)
EXAMPLES = "unstructured, channel or N:M such as 2:4, 1:4, 4:8"


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern: its kind and, for N:M, N and M."""

    kind: str = UNSTRUCTURED
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == NM else self.kind

    @property
    def structured(self) -> bool:
        return self.kind != UNSTRUCTURED

    @property
    def sparsity(self) -> float | None:
        """The sparsity N:M sets within its layers (1 − N/M); None for the other kinds."""
        return 1.0 - self.n / self.m if self.kind == NM else None

    def prune_remaining(
        self, weights: list[Tensor], fraction: float, current: list[Tensor]
    ) -> list[Tensor]:
        """Masks that prune ``fraction`` of the still-unpruned weights by global magnitude,
        within the pattern: for N:M, each group's N largest survivors are never candidates, so
        a prune never leaves a group with fewer than N, and the prune to 1 − N/M of the
        grouped weights leaves exactly N in every group. Layers outside the pattern keep their
        masks. (Channels are pruned by the channel methods themselves.)"""
        if self.kind == UNSTRUCTURED:
            return prune_remaining(weights, fraction, current)
        if self.kind == NM:
            return nm_prune_remaining(weights, fraction, current, self.n, self.m)
        raise ValueError(f"pattern {self} has no prune of single weights")


UNSTRUCTURED_PATTERN = Pattern()


def parse_pattern(text: str) -> Pattern:
    """``unstructured``, ``channel`` or ``N:M`` with 1 <= N < M; ValueError naming the choices."""
    value = text.strip().lower()
    if value in (UNSTRUCTURED, CHANNEL):
        return Pattern(value)
    n, sep, m = value.partition(":")
    if sep and n.isdigit() and m.isdigit():
        if 1 <= int(n) < int(m):
            return Pattern(NM, int(n), int(m))
        raise ValueError(f"{text!r} keeps {n} of every {m}: N:M needs 1 <= N < M (e.g. 2:4)")
    raise ValueError(f"{text!r} is not a sparsity pattern; choose {EXAMPLES}")


# --------------------------------------------------------------------------------------- N:M


def nm_eligible(weight: Tensor, m: int) -> bool:
    """Whether the layer's input dimension (dim 1) splits into groups of M."""
    return weight.dim() >= 2 and weight.shape[1] % m == 0


def nm_groups(t: Tensor, m: int) -> Tensor:
    """(groups, M): the input dimension moved last and cut into runs of M (a view where the
    memory allows, e.g. a channels_last convolution's weight or a Linear weight)."""
    return t.movedim(1, -1).reshape(-1, m)


def _ungroup(groups: Tensor, like: Tensor) -> Tensor:
    return groups.reshape(like.movedim(1, -1).shape).movedim(-1, 1)


def nm_top(scores: Tensor, n: int, m: int) -> Tensor:
    """Boolean mask of the N largest ``scores`` of every group of M (ties broken by ``topk``)."""
    grouped = nm_groups(scores, m)
    keep = torch.zeros(grouped.shape, dtype=torch.bool, device=scores.device)
    keep.scatter_(1, grouped.topk(n, dim=1).indices, True)
    return _ungroup(keep, scores)


def nm_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """Boolean mask keeping the N largest |w| of every group of M (zeros rank lowest, so an
    already valid weight keeps its non-zeros)."""
    return nm_top(weight.detach().abs(), n, m)


def nm_prune_remaining(
    weights: list[Tensor], fraction: float, current: list[Tensor], n: int, m: int
) -> list[Tensor]:
    """``Pattern.prune_remaining`` for N:M: round(fraction · alive) of the alive weights of the
    grouped layers, the smallest |w| among those outside each group's top N survivors."""
    with torch.no_grad():
        out = [c.bool().clone() for c in current]
        grouped = [i for i, w in enumerate(weights) if nm_eligible(w, m)]
        if not grouped:
            return out
        scores, sizes = [], []
        for i in grouped:
            alive = out[i]
            magnitude = torch.where(alive, weights[i].detach().abs().float(), -1.0)
            protected = nm_top(magnitude, n, m) & alive  # each group's N largest survivors
            candidate = alive & ~protected
            scores.append(torch.where(candidate, magnitude, torch.inf).flatten())
            sizes.append(weights[i].numel())
        flat = torch.cat(scores)
        alive_count = sum(int(out[i].sum()) for i in grouped)
        remove = min(round(fraction * alive_count), int(torch.isfinite(flat).sum()))
        if remove <= 0:
            return out
        drop = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        drop[torch.topk(flat, remove, largest=False, sorted=False).indices] = True
        for i, part in zip(grouped, drop.split(sizes)):
            out[i] &= ~part.view_as(out[i])
    return out


def nm_violations(weights: list[Tensor], n: int, m: int) -> int:
    """Groups of M, over the grouped layers, that hold more than N non-zeros."""
    with torch.no_grad():
        return sum(
            int(((nm_groups(w.detach(), m) != 0).sum(dim=1) > n).sum())
            for w in weights
            if nm_eligible(w, m)
        )


def exempt_layers(model: nn.Module, pattern: Pattern) -> list[str]:
    """Prunable layers an N:M pattern leaves dense (input dimension not a multiple of M)."""
    if pattern.kind != NM:
        return []
    return [name for name, m in prunable_modules(model) if not nm_eligible(m.weight, pattern.m)]


# ------------------------------------------------------------------- the harness's projection


def project(
    model: nn.Module, target: float, pattern: Pattern, example: Tensor | None = None
) -> None:
    """The harness's final projection within ``pattern`` (docs/protocol.md): unstructured,
    the global magnitude prune to ``target``; N:M, each group's N largest kept (the target is
    1 − N/M); channel, ``channels.ChannelGroups.project``. It never adds zeros outside the
    pattern, and a model already in it and at its target is left as it is."""
    if pattern.kind == UNSTRUCTURED:
        project_to_sparsity(model, target)
    elif pattern.kind == NM:
        with torch.no_grad():
            for _, module in prunable_modules(model):
                w = latent_weight(module)
                if nm_eligible(w, pattern.m):
                    w.mul_(nm_mask(w, pattern.n, pattern.m))
    else:
        channel_groups(model, example).project(target)


def violations(model: nn.Module, pattern: Pattern, example: Tensor | None = None) -> int:
    """What breaks ``pattern`` in a finished model: N:M, groups with more than N non-zeros;
    channel, zero weights outside the removed channels (and their dependants); 0 if valid."""
    if pattern.kind == NM:
        return nm_violations([m.weight for _, m in prunable_modules(model)], pattern.n, pattern.m)
    if pattern.kind == CHANNEL:
        return channel_groups(model, example).violations()
    return 0


def channel_groups(model: nn.Module, example: Tensor | None) -> ChannelGroups:
    """The model's channel groups, traced with ``example`` (one input batch)."""
    if example is None:
        raise ValueError("the channel pattern needs an example input to trace the model")
    return ChannelGroups(model, example)
