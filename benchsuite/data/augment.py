"""Train-time augmentation drawn from caller-supplied generators, so that every method under one
seed sees the same augmented batches (docs/protocol.md): the batched CIFAR crop, flip and
rotation, and ImageNet's Inception-style crop box.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Augment = Callable[[Tensor, torch.Generator], Tensor]


def crop_flip(x: Tensor, padding: int, offsets: Tensor, flip: Tensor) -> Tensor:
    """Random crop of the original size from the zero-padded batch, then a horizontal flip
    where ``flip`` is true; one gather for the whole batch.

    ``offsets`` is (B, 2) int (top, left) in [0, 2*padding]; ``flip`` is (B,) bool.
    """
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = offsets.to(dev)
    rows = offsets[:, 0:1] + torch.arange(h, device=dev)  # (B, H)
    cols = torch.where(
        flip.to(dev)[:, None],
        torch.arange(w - 1, -1, -1, device=dev),
        torch.arange(w, device=dev),
    )
    cols = offsets[:, 1:2] + cols  # (B, W); the flip reverses the columns of the crop
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image about its centre by its own angle (counter-clockwise as displayed),
    nearest-neighbour, zero fill: torchvision's RandomRotation defaults, batched."""
    b, _, h, w = x.shape
    rad = torch.deg2rad(degrees.to(x.device, torch.float32))
    cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid maps output to input coordinates in [-1, 1]; the aspect terms keep the
    # rotation rigid in pixel space when H != W.
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def cifar_augment(max_degrees: float = 0.0, padding: int = 4) -> Augment:
    """docs/protocol.md: crop 32 with padding 4, horizontal flip (CIFAR-10), plus a uniform
    rotation in [-max_degrees, max_degrees] (CIFAR-100: 15°). All draws come from the
    ``augment`` generator on the CPU, so they do not depend on the device."""

    def apply(x: Tensor, gen: torch.Generator) -> Tensor:
        n = x.shape[0]
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        x = crop_flip(x, padding, offsets, flip)
        if max_degrees > 0:
            angles = (torch.rand(n, generator=gen) * 2 - 1) * max_degrees
            x = rotate(x, angles)
        return x

    return apply


def random_resized_crop_box(
    height: int,
    width: int,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style crop (Szegedy et al. 2015): area a uniform
    fraction of the image in ``scale``, aspect ratio log-uniform in ``ratio``; up to ten
    tries, else the largest centred crop whose ratio is clamped into ``ratio``. Drawn from
    ``gen`` rather than the global RNG, so each sample's crop is reproducible."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
