"""Measuring a model: accuracy passes, the channels_last input layout, BatchNorm recalibration.

The loop calls ``evaluate`` through this module (``evaluation.evaluate``), so a test can count
the passes a run makes by patching one name.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from benchsuite.data.base import Dataset


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` with channels_last strides, so a convolution runs channels_last whatever its
    weight's strides say. A one-channel batch is already "contiguous" in both layouts, and
    ``contiguous(memory_format=...)`` keeps its NCHW strides: then a first conv whose weight
    a method recomputed with NCHW strides would switch the whole network to NCHW (2× slower
    pooling on LeNet-5). For one channel the same memory gets channels_last strides, no copy."""
    if x.dim() != 4 or x.stride(1) == 1:
        return x
    _, c, h, w = x.shape
    if c == 1 and x.is_contiguous():
        return x.as_strided(x.shape, (h * w, 1, w, 1))
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) in eval mode; restores the training flag."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    for x, y in batches:
        if channels_last:
            x = channels_last_input(x)
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(x)
        k = min(5, out.shape[1])
        top = out.topk(k, dim=1).indices
        hit = top == y[:, None]
        correct1 += int(hit[:, 0].sum())
        correct5 += int(hit.any(dim=1).sum())
        total += y.numel()
    model.train(was_training)
    return 100.0 * correct1 / total, 100.0 * correct5 / total


def unchanged(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    """The same entries with the same values (a removed parametrization changes the keys)."""
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    data: Dataset,
    batch_size: int,
    n_batches: int,
    generators: tuple[torch.Generator, torch.Generator],
    device: torch.device,
) -> int:
    """Re-estimate BatchNorm statistics on ``n_batches`` training batches (order and
    augmentation from ``generators``), for every method alike; returns the images seen.

    Off by default; its images are counted separately (``bn_recal_images``), never as steps.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    was_training = model.training
    model.train()
    seen = 0
    for i, (x, _) in enumerate(data.train_batches(batch_size, *generators, device)):
        if i == n_batches:
            break
        model(x)
        seen += x.shape[0]
    model.train(was_training)
    return seen
