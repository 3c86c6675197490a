"""Layer-wise sparsity distributions: how a target sparsity S is split over the prunable layers.

Methods that allocate a mask per layer (random, SNIP, SET, RigL) share one orthogonal choice
(docs/methods.md, layer-wise distributions):

- ``uniform``: every layer at S;
- ``erk`` (Erdős–Rényi-Kernel, Evci et al. 2020, §3): layer l keeps a density proportional to
  Σ dims / Π dims of its weight, i.e. (n_in + n_out + k_h + k_w)/(n_in·n_out·k_h·k_w) for a
  conv and (n_in + n_out)/(n_in·n_out) for a linear layer, scaled so the total kept count is
  (1 − S)·N; a layer whose density would exceed 1 is kept dense and the others rescaled,
  repeatedly, until none exceeds 1;
- ``global``: one threshold on a score over all layers (magnitude by default), so the split
  follows the scores.

Every distribution yields exact integer keep counts whose sum is ``keep_count(N, S)``, so the
achieved sparsity equals the target exactly (the harness's projection then changes nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from benchsuite.pruning.masks import global_magnitude_masks, keep_count

DISTRIBUTIONS = ("uniform", "erk", "global")


def check_distribution(name: str) -> None:
    if name not in DISTRIBUTIONS:
        raise ValueError(f"distribution={name!r}; choose from {', '.join(DISTRIBUTIONS)}")


def erk_densities(shapes: Sequence[Sequence[int]], sparsity: float) -> list[float]:
    """Real-valued ERK densities per layer (each in (0, 1]) whose kept total is (1 − S)·N."""
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / n for s, n in zip(shapes, sizes)]
    keep_total = (1.0 - sparsity) * sum(sizes)
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(sizes)) if i not in dense]
        budget = keep_total - sum(sizes[i] for i in dense)
        weight = sum(raw[i] * sizes[i] for i in free)
        eps = budget / weight if weight > 0 else 0.0
        over = {i for i in free if eps * raw[i] > 1.0}
        if not over:
            break
        dense |= over
    return [1.0 if i in dense else eps * raw[i] for i in range(len(sizes))]


def apportion(ideal: Sequence[float], sizes: Sequence[int], total: int) -> list[int]:
    """Integer counts near ``ideal`` (each ≤ its size) summing exactly to ``total``: floors,
    then the remainder one by one to the largest fractional parts (ties to the earlier layer)."""
    counts = [min(int(math.floor(x)), n) for x, n in zip(ideal, sizes)]
    short = total - sum(counts)
    order = sorted(range(len(ideal)), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    while short > 0:
        moved = False
        for i in order:
            if short == 0:
                break
            if counts[i] < sizes[i]:
                counts[i] += 1
                short -= 1
                moved = True
        if not moved:
            raise ValueError(f"cannot keep {total} of {sum(sizes)} entries")
    while short < 0:  # only reachable through rounding of ideals above the sizes
        for i in reversed(order):
            if short == 0:
                break
            if counts[i] > 0:
                counts[i] -= 1
                short += 1
    return counts


def layer_keep_counts(
    distribution: str, shapes: Sequence[Sequence[int]], sparsity: float, dense: Sequence[int] = ()
) -> list[int]:
    """Entries each layer keeps under ``uniform`` or ``erk``; the sum is keep_count(N, S).

    ``dense``: indices of layers kept whole (a method's dense first or last layer); the others
    share what is left of the budget by the distribution, so the network still reaches S."""
    check_distribution(distribution)
    if distribution == "global":
        raise ValueError("global keep counts follow the scores; use distribution_masks")
    sizes = [math.prod(s) for s in shapes]
    total = keep_count(sum(sizes), sparsity)
    rest = [i for i in range(len(sizes)) if i not in set(dense)]
    left = total - sum(sizes[i] for i in dense)
    rest_size = sum(sizes[i] for i in rest)
    if left < 0 or not rest:
        raise ValueError(f"dense layers {list(dense)} hold more than the {total} entries kept")
    rest_sparsity = 1.0 - left / rest_size
    if distribution == "uniform":
        ideal = [(1.0 - rest_sparsity) * sizes[i] for i in rest]
    else:
        ideal = [
            d * sizes[i]
            for d, i in zip(erk_densities([shapes[i] for i in rest], rest_sparsity), rest)
        ]
    counts = dict(zip(rest, apportion(ideal, [sizes[i] for i in rest], left)))
    return [sizes[i] if i not in counts else counts[i] for i in range(len(sizes))]


def top_masks(scores: Sequence[Tensor], counts: Sequence[int]) -> list[Tensor]:
    """Per layer, a boolean mask keeping the ``count`` entries of largest score."""
    masks = []
    for s, k in zip(scores, counts):
        flat = torch.zeros(s.numel(), dtype=torch.bool, device=s.device)
        if k > 0:
            flat[torch.topk(s.detach().flatten().float(), k, sorted=False).indices] = True
        masks.append(flat.view_as(s))
    return masks


def distribution_masks(
    distribution: str, scores: Sequence[Tensor], sparsity: float, dense: Sequence[int] = ()
) -> list[Tensor]:
    """Boolean masks keeping the highest-scoring entries, split over layers by ``distribution``.

    ``scores`` are non-negative (|w|, |w·g|, or uniform random numbers for a random mask); for
    ``global`` one threshold over all of them decides, for ``uniform``/``erk`` each layer keeps
    its own count. Exactly keep_count(N, S) entries are kept in all three cases; ``dense``
    layers keep everything and the others share the rest.
    """
    check_distribution(distribution)
    if distribution == "global":
        total = keep_count(sum(s.numel() for s in scores), sparsity)
        rest = [s for i, s in enumerate(scores) if i not in set(dense)]
        left = total - sum(scores[i].numel() for i in dense)
        if left < 0 or not rest:
            raise ValueError(f"dense layers {list(dense)} hold more than the {total} entries kept")
        kept = global_magnitude_masks(rest, left)
        it = iter(kept)
        return [
            torch.ones_like(s, dtype=torch.bool) if i in set(dense) else next(it)
            for i, s in enumerate(scores)
        ]
    shapes = [tuple(s.shape) for s in scores]
    return top_masks(scores, layer_keep_counts(distribution, shapes, sparsity, dense))
