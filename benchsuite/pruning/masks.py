"""Prunable parameters, global magnitude selection, hard masks and achieved sparsity.

What is prunable is an explicit allow-list (docs/methods.md): the weight of every Conv and
Linear layer, including the first conv and the classifier; never biases or norm layers.
Sparsity is always a fraction of the prunable weights and is counted from the tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every Conv/Linear layer, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


def effective_weights(model: nn.Module) -> list[Tensor]:
    """The weights as the forward sees them (a parametrization's output where there is one)."""
    return [m.weight for _, m in prunable_modules(model)]


def latent_weight(module: nn.Module) -> nn.Parameter:
    """The trainable tensor behind ``module.weight`` (the original under a parametrization)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def keep_count(n: int, sparsity: float) -> int:
    """Entries kept when ``sparsity`` of ``n`` are pruned: n − round(S·n)."""
    return n - round(sparsity * n)


def global_magnitude_masks(
    weights: list[Tensor], keep: int, current: list[Tensor] | None = None
) -> list[Tensor]:
    """Boolean masks keeping exactly ``keep`` entries of largest |w| over all tensors.

    Entries already pruned in ``current`` are never kept again (hard pruning).
    """
    with torch.no_grad():
        scores = torch.cat([w.detach().abs().flatten().float() for w in weights])
        if current is not None:
            alive = torch.cat([m.flatten() for m in current]).bool()
            scores = torch.where(alive, scores, torch.full_like(scores, -1.0))
            keep = min(keep, int(alive.sum()))
        flat = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
        if keep > 0:
            flat[torch.topk(scores, keep, sorted=False).indices] = True
    return [part.view_as(w) for part, w in zip(flat.split([w.numel() for w in weights]), weights)]


def prune_remaining(weights: list[Tensor], fraction: float, current: list[Tensor]) -> list[Tensor]:
    """Prune round(fraction · n_unpruned) of the still-unpruned entries (docs/methods.md)."""
    alive = int(sum(int(m.sum()) for m in current))
    return global_magnitude_masks(weights, alive - round(fraction * alive), current)


def count_zeros(weights: list[Tensor]) -> tuple[int, int]:
    """(exact zeros, total entries) over the given tensors."""
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros, sum(w.numel() for w in weights)


def achieved_sparsity(model: nn.Module) -> float:
    """Fraction of prunable weights that are exactly zero, as the forward sees them."""
    with torch.no_grad():
        zeros, total = count_zeros(effective_weights(model))
    return zeros / total


def collapsed_layers(model: nn.Module) -> list[str]:
    """Prunable layers without a single non-zero weight: no signal passes them (layer collapse)."""
    with torch.no_grad():
        return [n for n, m in prunable_modules(model) if not bool(m.weight.any())]


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    with torch.no_grad():
        return {n: float((m.weight == 0).float().mean()) for n, m in prunable_modules(model)}


def project_to_sparsity(model: nn.Module, target: float) -> None:
    """The harness's final projection (docs/protocol.md): global magnitude prune to ``target``.

    Zeros already present rank lowest, so an already sparser model keeps its mask: the
    result is max(achieved, target). Works on plain weights (after ``on_finish``).
    """
    weights = [latent_weight(m) for _, m in prunable_modules(model)]
    n = sum(w.numel() for w in weights)
    masks = global_magnitude_masks(weights, keep_count(n, target))
    with torch.no_grad():
        for w, m in zip(weights, masks):
            w.mul_(m)


@torch.no_grad()
def rescale_to_kept_fan_in(weights: list[Tensor], masks: list[Tensor]) -> None:
    """Scale each output unit's weights by √(fan_in / kept fan_in), in place.

    A unit's pre-activation variance is (its kept fan-in)·Var(w)·Var(x); cut out of a dense
    initialisation it falls with the density, and through several sparse layers the signal
    reaching the logits vanishes (Evci et al. 2022, "Gradient flow in sparse neural networks
    and how lottery tickets win"). The rescale restores the dense init's variance per unit
    while keeping the same weights (only scaled), so runs of one seed stay paired. A unit with
    nothing kept is left as it is.
    """
    for w, m in zip(weights, masks):
        kept = m.reshape(m.shape[0], -1).sum(dim=1).to(w.dtype)
        fan_in = w[0].numel()
        scale = torch.where(kept > 0, torch.sqrt(fan_in / kept.clamp_min(1)), torch.ones_like(kept))
        w.mul_(scale.view(-1, *[1] * (w.dim() - 1)))  # any memory layout (channels_last)


class HardMasks:
    """Masks that keep pruned weights at exactly zero without touching the forward.

    Pruned entries are zeroed once, their momentum zeroed once, and their gradient masked
    every step (one fused ``_foreach_mul_``): with zero weight, zero gradient and zero
    momentum, SGD (with weight decay, Nesterov or not) leaves them at zero for good. This
    costs one multiply per weight per step instead of a masked copy in every forward.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.masks: list[Tensor] | None = None

    @property
    def active(self) -> bool:
        return self.masks is not None

    def bool_masks(self) -> list[Tensor]:
        if self.masks is None:
            return [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        return [m.bool() for m in self.masks]

    def set(self, masks: list[Tensor], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Install new masks: zero the pruned weights and, if given, their momentum."""
        self.masks = [m.to(dtype=p.dtype) for m, p in zip(masks, self.params)]
        with torch.no_grad():
            torch._foreach_mul_(self.params, self.masks)
        if optimizer is not None:
            zero_momentum(optimizer, self.params, self.masks)

    def mask_grads(self) -> None:
        if self.masks is None:
            return
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            return
        torch._foreach_mul_(grads, self.masks)

    def clear(self) -> None:
        self.masks = None


def zero_momentum(
    optimizer: torch.optim.Optimizer, params: list[Tensor], masks: list[Tensor]
) -> None:
    """Zero the momentum buffer at the masked-out positions (GMP, docs/methods.md)."""
    with torch.no_grad():
        for p, m in zip(params, masks):
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(m.to(dtype=buf.dtype))


def parameter_norm(model: nn.Module) -> float:
    """L2 norm over all parameters (weights, biases, BN affine): the θ of ALLR's norm drop."""
    with torch.no_grad():
        return float(
            torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in model.parameters()]))
        )
