"""Composed, autograd-differentiated forms of methods whose production code writes its
gradients out by hand: the tests compare the two."""

from __future__ import annotations

import torch
from torch import Tensor

from benchsuite_methods.dst import step, surrogate_derivative


def soft_threshold_reference(w: Tensor, threshold: Tensor) -> Tensor:
    """STR's soft threshold sign(w)·relu(|w| − g), differentiated by autograd."""
    return torch.sign(w) * torch.relu(w.abs() - threshold)


class Step(torch.autograd.Function):
    """DST's step H(x) with its surrogate derivative, as an autograd function."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return step(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * surrogate_derivative(x)
