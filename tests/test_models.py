"""Model shapes, hand-counted parameter numbers, option-A shortcuts, seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from benchsuite.models import (
    MaxPool2x2,
    ModelError,
    ShortcutA,
    build_model,
    count_parameters,
    list_models,
)


def test_lenet5_parameter_count() -> None:
    model = build_model("lenet5", 10, (1, 28, 28))
    # conv1 6·1·25+6, conv2 16·6·25+16, fc 400·120+120, 120·84+84, 84·10+10
    expected = 156 + 2_416 + 48_120 + 10_164 + 850
    assert expected == 61_706
    assert count_parameters(model) == 61_706
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    assert weights == 61_706 - (6 + 16 + 120 + 84 + 10) == 61_470
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(3, 6, 28, 28), (2, 16, 11, 9), (1, 2, 2, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_evaluation_pooling_equals_atens(shape: tuple[int, ...], channels_last: bool) -> None:
    """Without autograd the four-view maximum must give ATen's values and memory layout
    (odd sizes floor, NaN propagates); with autograd ATen's kernel and its gradient stay."""
    x = torch.randn(shape).relu()
    x[0, 0, 0, 1] = float("nan")
    x[-1, -1, 1, 0] = x[-1, -1, 0, 0]  # a tie
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    pool = MaxPool2x2()
    with torch.no_grad():
        fast, aten = pool(x), nn.functional.max_pool2d(x, 2)
    assert fast.shape == aten.shape
    for layout in (torch.contiguous_format, torch.channels_last):
        assert fast.is_contiguous(memory_format=layout) == aten.is_contiguous(memory_format=layout)
    assert torch.equal(fast.isnan(), aten.isnan())
    assert torch.equal(fast.nan_to_num(), aten.nan_to_num())
    leaf = x.nan_to_num().requires_grad_()
    pool(leaf).sum().backward()
    (expected,) = torch.autograd.grad(nn.functional.max_pool2d(leaf, 2).sum(), leaf)
    assert torch.equal(leaf.grad, expected)  # one-hot at ATen's index, ties included


def test_small_cnn_on_digits() -> None:
    model = build_model("small-cnn", 10, (1, 8, 8))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert (linears[0].in_features, linears[0].out_features) == (512, 64)
    # 1·16·9+16, 16·32·9+32, 512·64+64, 64·10+10
    assert count_parameters(model) == 160 + 4_640 + 32_832 + 650
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    # the flatten follows the input shape
    assert build_model("small-cnn", 4, (3, 12, 10))(torch.zeros(1, 3, 12, 10)).shape == (1, 4)


def test_mlp_flattens_any_input() -> None:
    model = build_model("mlp", 10, (1, 28, 28))
    assert count_parameters(model) == 784 * 512 + 512 + 512 * 10 + 10
    drop = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drop] == [0.2]
    assert build_model("mlp", 3, (3, 4, 5))(torch.zeros(2, 3, 4, 5)).shape == (2, 3)


def test_cifar_resnets() -> None:
    r56 = build_model("resnet56", 10, (3, 32, 32))
    assert count_parameters(r56) == 853_018  # the published ≈0.85 M
    r20 = build_model("resnet20", 10, (3, 32, 32))
    assert count_parameters(r20) == 269_722  # ≈0.27 M
    convs = [m for m in r56.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 27  # stem + two per block; no projection shortcuts
    assert all(c.bias is None for c in convs)
    shortcuts = [m for m in r56.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2
    assert all(sum(p.numel() for p in s.parameters()) == 0 for s in shortcuts)
    r20.eval()
    assert r20(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_resnet_template_depth_and_width() -> None:
    """resnet8-8, the fashion-mnist-resnet preset's model: one BasicBlock per stage, 8/16/32
    channels, on 1×28×28 (stride 2 makes 28 → 14 → 7)."""
    model = build_model("resnet8-8", 10, (1, 28, 28))
    # stem 1·8·9 + BN 16; stage 1: 2 × (8·8·9 + 16); stage 2: 8·16·9 + 16·16·9 + 2 × 32;
    # stage 3: 16·32·9 + 32·32·9 + 2 × 64; fc 32·10 + 10
    expected = (72 + 16) + 2 * (576 + 16) + (1_152 + 2_304 + 64) + (4_608 + 9_216 + 128) + 330
    assert count_parameters(model) == expected == 19_074
    prunable = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert sum(w.numel() for w in prunable) == 18_824
    assert sum(isinstance(m, ShortcutA) for m in model.modules()) == 2  # no projection weights
    shapes = []
    for stage in (model.layer1, model.layer2, model.layer3):
        stage.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert shapes == [(2, 8, 28, 28), (2, 16, 14, 14), (2, 32, 7, 7)]
    torch.manual_seed(5)
    a = build_model("resnet20-16", 10, (3, 32, 32))
    torch.manual_seed(5)
    b = build_model("resnet20", 10, (3, 32, 32))  # the same network, the same draws
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    for bad in ("resnet9-8", "resnet8-0", "resnet8-x"):
        with pytest.raises(ModelError, match=bad):
            build_model(bad, 10, (1, 28, 28))


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.arange(16 * 4 * 4, dtype=torch.float32).view(1, 16, 4, 4)
    out = ShortcutA(16, 32, stride=2)(x)
    assert out.shape == (1, 32, 2, 2)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_wide_resnet_28_10() -> None:
    model = build_model("wrn-28-10", 100, (3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None for c in convs)  # docs/protocol.md: convs with bias
    # stem + 12 blocks × 2 convs + 3 projection shortcuts
    assert len(convs) == 1 + 24 + 3
    assert [c.out_channels for c in convs[1:3]] == [160, 160]
    assert count_parameters(model) == pytest.approx(36.5e6, rel=0.01)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3] * 12
    small = build_model("wrn-10-1", 10, (3, 16, 16)).eval()
    assert small(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_same_seed_same_weights() -> None:
    torch.manual_seed(123)
    a = build_model("resnet20", 10, (3, 32, 32))
    torch.manual_seed(123)
    b = build_model("resnet20", 10, (3, 32, 32))
    torch.manual_seed(124)
    c = build_model("resnet20", 10, (3, 32, 32))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])


def test_timm_and_torchvision_models() -> None:
    torch.manual_seed(0)
    model = build_model("timm:resnet18", 10, (3, 32, 32))
    assert model.get_classifier().out_features == 10
    assert model.conv1.in_channels == 3
    gray = build_model("timm:resnet18", 7, (1, 28, 28))
    assert gray.conv1.in_channels == 1 and gray.get_classifier().out_features == 7
    tv = build_model("torchvision:resnet18", 10, (3, 32, 32))
    assert tv.fc.out_features == 10


@pytest.mark.parametrize("name", ["nope", "timm:no_such_model", "torchvision:no_such_model"])
def test_unknown_model_message(name: str) -> None:
    with pytest.raises(ModelError) as info:
        build_model(name, 10, (3, 32, 32))
    message = str(info.value)
    assert "\n" not in message and repr(name) in message
    assert all(m in message for m in list_models())
    assert "timm:<name>" in message and "torchvision:<name>" in message


def test_torchvision_refuses_gray_inputs() -> None:
    with pytest.raises(ModelError, match="3-channel"):
        build_model("torchvision:resnet18", 10, (1, 28, 28))
