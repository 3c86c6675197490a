"""Multiply-adds per sample and the theoretical speedup of a sparse model (docs/protocol.md).

ShrinkBench-style accounting: only Conv and Linear layers count (not BN, activations,
pooling, residual adds or biases), a layer's sparse cost is its dense cost scaled by its
density, and the speedup is Σ dense / Σ sparse. benchsuite's default counts from each
layer's *actual* output shape and with C_in/groups (PyTorch's own formulas), so padded,
dilated and depthwise convs are counted correctly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class LayerCount:
    """One Conv/Linear layer: multiply-adds per sample, weights, non-zero weights."""

    name: str
    dense_macs: int
    weights: int
    nonzero: int

    @property
    def sparse_macs(self) -> float:
        """Dense cost scaled by the layer's density (ShrinkBench's "nonzero FLOPs")."""
        if self.weights == 0:
            return 0.0
        return self.dense_macs * self.nonzero / self.weights


def _counted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf Conv/Linear modules. A module that holds a parametrization has the
    ``parametrizations`` ModuleDict as a child, so "leaf" ignores that container."""
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, _COUNTED):
            continue
        children = [n for n, _ in module.named_children() if n != "parametrizations"]
        if not children:
            layers.append((name, module))
    return layers


def count_layers(model: nn.Module, example: Tensor) -> list[LayerCount]:
    """Per-layer counts from one forward of ``example`` (one val batch, any size) in eval
    mode without gradients; every module's training flag is restored afterwards.

    Counting: ``FlopCounterMode`` counts 2 × multiply-adds of each convolution/matmul op
    over the whole batch, from the real shapes (with groups; bias adds not included). A
    forward pre-hook and a forward hook on each counted layer snapshot the counter's
    running total, so the difference is exactly what that layer's forward added. This
    attributes a layer that is called several times correctly (each call adds), unlike the
    counter's per-module breakdown, which is keyed by a module path. The per-sample count
    is the total ÷ 2 ÷ batch size.
    """
    batch = int(example.shape[0]) if example.dim() > 0 else 1
    if batch < 1:
        raise ValueError("count_layers needs an example batch with at least one sample")
    layers = _counted_layers(model)
    totals = {name: 0 for name, _ in layers}
    flags = {m: m.training for m in model.modules()}
    counter = FlopCounterMode(display=False)
    started: dict[str, list[int]] = {name: [] for name, _ in layers}
    handles = []

    def pre_hook(name: str):
        def hook(_module, _args):
            started[name].append(counter.get_total_flops())

        return hook

    def post_hook(name: str):
        def hook(_module, _args, _out):
            totals[name] += counter.get_total_flops() - started[name].pop()

        return hook

    try:
        for name, module in layers:
            handles.append(module.register_forward_pre_hook(pre_hook(name)))
            handles.append(module.register_forward_hook(post_hook(name)))
        model.eval()
        with torch.no_grad(), counter:
            model(example)
    finally:
        for h in handles:
            h.remove()
        for module, flag in flags.items():
            module.training = flag

    result = []
    with torch.no_grad():
        for name, module in layers:
            weight = module.weight  # as the forward sees it (parametrizations applied)
            # The counter counts 2 FLOPs per multiply-add for every sample of the batch.
            macs = round(totals[name] / (2 * batch))
            result.append(
                LayerCount(
                    name=name,
                    dense_macs=macs,
                    weights=weight.numel(),
                    nonzero=int(torch.count_nonzero(weight).item()),
                )
            )
    return result


def flops_dense(layers: Iterable[LayerCount]) -> int:
    """Dense multiply-adds per sample."""
    return sum(layer.dense_macs for layer in layers)


def flops_sparse(layers: Iterable[LayerCount]) -> float:
    """Multiply-adds per sample with each layer scaled by its density."""
    return sum(layer.sparse_macs for layer in layers)


def theoretical_speedup(layers: Iterable[LayerCount]) -> float | None:
    """Σ dense ÷ Σ sparse multiply-adds; None where the sparse count is 0 (no weights left,
    or nothing counted), as the reference leaves it empty."""
    layers = list(layers)
    sparse = flops_sparse(layers)
    if sparse == 0:
        return None
    return flops_dense(layers) / sparse


def layer_nonzeros(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(non-zero, total) weights per counted layer, as the forward sees them."""
    with torch.no_grad():
        return {
            name: (int(torch.count_nonzero(m.weight)), m.weight.numel())
            for name, m in _counted_layers(model)
        }


@dataclass
class TrainFlops:
    """Multiply-adds of the counted training steps, at the density each step ran with.

    Rule (docs/methods.md, the cost of training): a step on B images costs 3·B·Σ_l D_l·d_l,
    D_l the layer's dense multiply-adds per sample and d_l its density (non-zero ÷ weights
    of the effective weight): the forward pass once and the backward pass (gradients of the
    activations and of the weights) twice. A step that used the dense weight gradient (RigL's
    mask updates, ``TrainState.note_dense_weight_grad``) adds B·Σ_l D_l·(1 − d_l): its weight
    gradient ran dense. d_l is sampled once per epoch, at its start (after ``on_start`` or
    after the previous epoch's hooks), and holds for all that epoch's steps: exact for
    methods whose masks change only at epoch ends (GMP, IMP, BIMP) or keep each layer's count
    (random, SNIP, SET, RigL, dense), the left endpoint for methods whose sparsity moves
    within an epoch (STR, DST, DNW, CS). ``train_cost`` = this ÷ the dense model's 3·B·Σ_l D_l
    for the same steps, so the dense run is 1.0. A masked dense kernel computes every product
    anyway: this is the saving a sparse kernel could realise, not the wall time measured.
    """

    epochs: list[tuple[dict[str, tuple[int, int]], int, int]] = field(default_factory=list)

    def add(
        self, nonzeros: dict[str, tuple[int, int]], images: int, dense_grad_images: int
    ) -> None:
        """One epoch: its densities (sampled at its start), images, dense-gradient images."""
        self.epochs.append((nonzeros, images, dense_grad_images))

    def totals(self, dense_macs: dict[str, int]) -> tuple[float, float]:
        """(train_flops, the dense model's train flops for the same images)."""
        train = dense = 0.0
        for nonzeros, images, dense_grad in self.epochs:
            for name, macs in dense_macs.items():
                nz, n = nonzeros.get(name, (1, 1))
                d = nz / n if n else 1.0
                train += 3 * images * macs * d + dense_grad * macs * (1.0 - d)
                dense += 3 * images * macs
        return train, dense
