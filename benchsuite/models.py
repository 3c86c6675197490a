"""Models by name: the reference setups' architectures (docs/protocol.md), plus any timm or
torchvision model, all randomly initialised.

A model is a builder ``(num_classes, input_shape) -> nn.Module`` registered in the
``benchsuite.models`` entry-point group (the built-ins too; docs/extending.md). Templates such
as ``wrn-<depth>-<width>`` and ``timm:<name>`` receive their fields as keyword arguments.

Construction draws all its randomness from torch's global RNG; the harness seeds it (inside
``torch.random.fork_rng()``) so that every method under one seed starts from the same
weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from benchsuite.core.registry import Registry, UnknownName, callable_entries, discover

ModelBuilder = Callable[..., nn.Module]  # (num_classes, input_shape, **template fields)
GROUP = "benchsuite.models"


class ModelError(ValueError):
    """Unknown or unbuildable model name (reported as bad input, exit code 2)."""


@cache
def model_registry() -> Registry[ModelBuilder]:
    """The models (cached; ``model_registry.cache_clear()`` discovers them again)."""
    return discover(Registry("model", GROUP, callable_entries("model", "builder")))


def list_models() -> list[str]:
    return model_registry().names()


def _unknown(name: str, why: str = "unknown model") -> ModelError:
    return ModelError(f"{why} {name!r}; choose from {model_registry().choices()}")


# --------------------------------------------------------------------------- small models


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` that, when no gradient is wanted (evaluation), takes the maximum of
    the window's four strided views instead of ATen's kernel.

    ATen's channels_last max-pool vectorises over channels, and LeNet-5's 6 leave it scalar:
    at 256×6×28×28 (1 thread) it takes 2.4 ms, the four-view maximum 0.21 ms, about 45 % of
    an evaluation forward. The values are the same bit for bit (max is exact; NaN propagates in
    both). Training keeps ATen's kernel: its backward needs the indices and their tie rule.
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
        rows = torch.maximum(x[:, :, 0:h:2, :w], x[:, :, 1:h:2, :w])
        return torch.maximum(rows[:, :, :, 0::2], rows[:, :, :, 1::2])


class SmallCNN(nn.Module):
    """Two 3×3 convs and a 2×2 max-pool, then a 64-unit hidden layer (sized for 8×8 digits:
    the flatten is 32·4·4 = 512 there, and follows ``input_shape`` elsewhere)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        if h < 2 or w < 2:
            raise ModelError(f"small-cnn needs inputs of at least 2×2, got {input_shape}")
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            MaxPool2x2(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * (h // 2) * (w // 2), 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """The reference MNIST MLP: flatten, 512 hidden units, dropout 0.2 after the hidden
    activation."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), 512),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling (LeCun et al. 1998, modernised); on 1×28×28 inputs
    the first conv pads by 2 so the classic 16·5·5 = 400 features reach the classifier."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        fh, fw = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        if fh < 1 or fw < 1:
            raise ModelError(f"lenet5 needs inputs of at least 10×10, got {input_shape}")
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            MaxPool2x2(),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            MaxPool2x2(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * fh * fw, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------- CIFAR ResNet


class ShortcutA(nn.Module):
    """He et al. 2016's option A: a parameter-free shortcut that subsamples by ``stride``
    and zero-pads the new channels (half before, half after), so the comparison with
    pruning is not affected by unprunable 1×1 projection weights."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_front = (planes - in_planes) // 2
        self.pad_back = planes - in_planes - self.pad_front

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_front or self.pad_back:
            x = F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))
        return x


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN plus the shortcut, then ReLU; convs without bias."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            ShortcutA(in_planes, planes, stride)
            if stride != 1 or in_planes != planes
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2) of He et al. 2016 (§4.2): a 3×3 stem with 16 channels, three
    stages of n BasicBlocks with 16/32/64 channels (stride 2 at the start of stages 2 and
    3), global average pooling, one linear classifier. ``width`` replaces the 16 (the stages
    then have width/2·width/4·width channels)."""

    def __init__(self, n: int, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layer1 = nn.Sequential(*blocks[:n])
        self.layer2 = nn.Sequential(*blocks[n : 2 * n])
        self.layer3 = nn.Sequential(*blocks[2 * n :])
        self.fc = nn.Linear(4 * width, num_classes)
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


# --------------------------------------------------------------------------- Wide ResNet


class WideBlock(nn.Module):
    """Pre-activation block of Zagoruyko & Komodakis 2016: BN-ReLU-conv3×3-BN-ReLU-dropout-
    conv3×3; where the shape changes, a 1×1 conv on the pre-activated input is the
    shortcut. Convs carry biases (docs/protocol.md)."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=True)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True)
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.dropout(F.relu(self.bn2(self.conv1(pre))))
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-width: (depth − 4)/6 blocks in each of three stages of 16k/32k/64k
    channels after a 16-channel stem, then BN-ReLU, average pooling, linear."""

    def __init__(
        self,
        depth: int,
        width: int,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10 or width < 1:
            raise ModelError(
                f"wrn-{depth}-{width}: expected a depth of 6n+4 (n >= 1) and a width >= 1"
            )
        n = (depth - 4) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=True)
        stages: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate(widths):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(WideBlock(in_planes, planes, stride, dropout))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _kaiming_init(model: nn.Module) -> None:
    """Convs: Kaiming normal, fan_out, ReLU gain (He et al. 2015; as in torchvision's and
    the WRN authors' PyTorch code), conv biases zero; BN weight 1, bias 0; Linear keeps
    PyTorch's default (uniform ±1/sqrt(fan_in)) with a zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- builders


def resnet20(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    return CifarResNet(3, num_classes, input_shape[0])


def resnet56(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    return CifarResNet(9, num_classes, input_shape[0])


def cifar_resnet(
    num_classes: int, input_shape: tuple[int, int, int], *, depth: str, width: str
) -> nn.Module:
    """``resnet<depth>-<width>``: the CIFAR ResNet at any depth 6n+2 and stem width (16 in
    He et al. 2016; ``resnet20-16`` is ``resnet20``), for budgets that cannot train ResNet-20."""
    if not (depth.isdigit() and width.isdigit()):
        raise ModelError(f"resnet{depth}-{width}: expected integers, as in resnet14-16")
    d, w = int(depth), int(width)
    if (d - 2) % 6 != 0 or d < 8 or w < 1:
        raise ModelError(
            f"resnet{depth}-{width}: expected a depth of 6n+2 (n >= 1) and a width >= 1"
        )
    return CifarResNet((d - 2) // 6, num_classes, input_shape[0], width=w)


def wide_resnet(
    num_classes: int, input_shape: tuple[int, int, int], *, depth: str, width: str
) -> nn.Module:
    """``wrn-<depth>-<width>``, dropout 0.3 (Zagoruyko & Komodakis 2016)."""
    if not (depth.isdigit() and width.isdigit()):
        raise ModelError(f"wrn-{depth}-{width}: expected integers, as in wrn-28-10")
    return WideResNet(int(depth), int(width), num_classes, input_shape[0], dropout=0.3)


def timm_model(num_classes: int, input_shape: tuple[int, int, int], *, name: str) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise _unknown(f"timm:{name}", "unknown timm model")
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0]
        )
    except (TypeError, ValueError, RuntimeError) as err:
        raise ModelError(f"timm:{name} cannot be built: {err}".replace("\n", " ")) from None


def torchvision_model(
    num_classes: int, input_shape: tuple[int, int, int], *, name: str
) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        raise _unknown(f"torchvision:{name}", "unknown torchvision model")
    if input_shape[0] != 3:
        raise ModelError(
            f"torchvision:{name} takes 3-channel inputs, the dataset has {input_shape[0]}; "
            f"use timm:<name>, which sets in_chans"
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ModelError(f"torchvision:{name} cannot be built: {err}".replace("\n", " ")) from None


def get_model(name: str) -> ModelBuilder:
    """The builder registered for ``name`` (a template's fields bound); ModelError if none."""
    try:
        return model_registry().get(name)
    except UnknownName as exc:
        raise ModelError(str(exc)) from None


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """A randomly initialised model; all randomness comes from torch's global RNG, so two
    builds after the same ``torch.manual_seed`` are identical."""
    input_shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
    if len(input_shape) != 3:
        raise ModelError(f"input_shape must be (C, H, W), got {input_shape}")
    return get_model(name)(num_classes, input_shape)


def count_parameters(model: nn.Module) -> int:
    """All parameters, biases and BN included (for reports and tests)."""
    return sum(p.numel() for p in model.parameters())
