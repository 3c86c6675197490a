"""Per-sample multiply-adds against hand-computed layer counts (docs/protocol.md, benchsuite's
default: actual output shapes, C_in/groups)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from benchsuite.pruning.flops import (
    LayerCount,
    count_layers,
    flops_dense,
    flops_sparse,
    theoretical_speedup,
)

# Conv2d(3, 8, 3, stride 2, pad 1) on 3×17×17: H_out = floor((17 + 2 - 3) / 2) + 1 = 9,
# MACs = C_out·H_out·W_out·(C_in/groups)·k·k = 8·9·9·3·3·3 = 17,496.
CONV_MACS = 8 * 9 * 9 * 3 * 3 * 3
# Depthwise Conv2d(8, 8, 3, groups 8, pad 1) on 8×9×9: 8·9·9·(8/8)·3·3 = 5,832.
DW_MACS = 8 * 9 * 9 * 1 * 3 * 3
# After global average pooling: Linear(8, 20) = 160, Linear(20, 5) = 100.
FC1_MACS, FC2_MACS = 8 * 20, 20 * 5
TOTAL = CONV_MACS + DW_MACS + FC1_MACS + FC2_MACS  # 23,588


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=8, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 20),
        nn.ReLU(),
        nn.Linear(20, 5),
    )


def test_hand_computed_layers() -> None:
    torch.manual_seed(0)
    layers = count_layers(small_net(), torch.randn(4, 3, 17, 17))
    assert [(c.name, c.dense_macs, c.weights) for c in layers] == [
        ("0", 17_496, 8 * 3 * 9),
        ("3", 5_832, 8 * 9),
        ("6", 160, 160),
        ("8", 100, 100),
    ]
    assert CONV_MACS == 17_496 and DW_MACS == 5_832
    assert flops_dense(layers) == TOTAL == 23_588
    assert flops_sparse(layers) == TOTAL  # random init: no exact zeros
    assert theoretical_speedup(layers) == 1.0


def test_batch_size_does_not_change_per_sample_counts() -> None:
    torch.manual_seed(0)
    model = small_net()
    one = count_layers(model, torch.randn(1, 3, 17, 17))
    seven = count_layers(model, torch.randn(7, 3, 17, 17))
    assert [c.dense_macs for c in one] == [c.dense_macs for c in seven]


def test_half_of_one_layer_zeroed_gives_exact_speedup() -> None:
    torch.manual_seed(0)
    model = small_net()
    with torch.no_grad():
        w = model[0].weight.view(-1)
        w[: w.numel() // 2] = 0.0  # 108 of 216 weights
    layers = count_layers(model, torch.randn(2, 3, 17, 17))
    assert layers[0].nonzero == 108
    assert layers[0].sparse_macs == CONV_MACS / 2 == 8_748
    sparse = 8_748 + DW_MACS + FC1_MACS + FC2_MACS  # 14,840
    assert flops_sparse(layers) == sparse == 14_840
    assert theoretical_speedup(layers) == pytest.approx(23_588 / 14_840, rel=1e-12)


def test_bias_is_not_counted() -> None:
    x = torch.randn(2, 3, 17, 17)
    with_bias = count_layers(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True), x)
    without = count_layers(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), x)
    assert with_bias[0].dense_macs == without[0].dense_macs == CONV_MACS
    lin_b = count_layers(nn.Linear(20, 5, bias=True), torch.randn(3, 20))
    lin = count_layers(nn.Linear(20, 5, bias=False), torch.randn(3, 20))
    assert lin_b[0].dense_macs == lin[0].dense_macs == 100


def test_counts_follow_actual_output_shape() -> None:
    # Linear on a (tokens, features) sample: 7 rows × 20 × 5 = 700 per sample.
    assert count_layers(nn.Linear(20, 5), torch.randn(3, 7, 20))[0].dense_macs == 700
    # Conv1d(4, 6, 3) without padding on length 10: L_out = 8 → 6·8·4·3 = 576.
    assert count_layers(nn.Conv1d(4, 6, 3), torch.randn(2, 4, 10))[0].dense_macs == 576
    # Dilation 2, no padding, 3×3 on 9×9: H_out = 9 - 2·2 = 5 → 2·5·5·1·9 = 450.
    conv = nn.Conv2d(1, 2, 3, dilation=2)
    assert count_layers(conv, torch.randn(2, 1, 9, 9))[0].dense_macs == 450


def test_shared_layer_called_twice_counts_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.fc(x)))

    assert count_layers(Twice(), torch.randn(2, 5))[0].dense_macs == 50


class HalfMask(nn.Module):
    """A parametrization that zeroes the first half of the (flattened) weight."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(w).view(-1)
        mask[: mask.numel() // 2] = 0
        return w * mask.view_as(w)


def test_parametrized_weight_is_read_as_the_forward_sees_it() -> None:
    torch.manual_seed(0)
    model = small_net()
    parametrize.register_parametrization(model[6], "weight", HalfMask())  # Linear(8, 20)
    layers = count_layers(model, torch.randn(2, 3, 17, 17))
    assert [c.name for c in layers] == ["0", "3", "6", "8"]
    assert layers[2].dense_macs == 160 and layers[2].nonzero == 80
    assert model[6].parametrizations.weight.original.count_nonzero() == 160  # untouched
    assert theoretical_speedup(layers) == pytest.approx(TOTAL / (TOTAL - 80))


def test_training_flags_restored_and_bn_stats_untouched() -> None:
    model = small_net()
    model.train()
    model[1].eval()  # a frozen BN stays frozen
    before = model[1].running_mean.clone()
    count_layers(model, torch.randn(3, 3, 17, 17) + 5.0)
    assert model.training and model[0].training and not model[1].training
    assert torch.equal(model[1].running_mean, before)


def test_speedup_none_when_nothing_left() -> None:
    assert theoretical_speedup([LayerCount("a", 10, 4, 0)]) is None
    assert theoretical_speedup([]) is None
    layers = [LayerCount("a", 100, 4, 1), LayerCount("b", 50, 10, 10)]
    assert flops_sparse(layers) == 75.0
    assert theoretical_speedup(layers) == 2.0


def test_train_flops_by_hand() -> None:
    from benchsuite.pruning.flops import TrainFlops

    dense = {"conv": 1000, "fc": 200}  # multiply-adds per sample
    cost = TrainFlops()
    # epoch 1: dense, 64 images: 3·64·1200 = 230,400
    cost.add({"conv": (50, 50), "fc": (10, 10)}, 64, 0)
    # epoch 2: conv at 0.2, fc at 0.5, 64 images, 32 of them with a dense weight gradient:
    # 3·64·(1000·0.2 + 200·0.5) = 57,600; + 32·(1000·0.8 + 200·0.5) = 28,800
    cost.add({"conv": (10, 50), "fc": (5, 10)}, 64, 32)
    train, dense_total = cost.totals(dense)
    assert train == pytest.approx(230_400 + 57_600 + 28_800)
    assert dense_total == pytest.approx(2 * 230_400)
    assert train / dense_total == pytest.approx(316_800 / 460_800)  # train_cost 0.6875


def test_layer_nonzeros_reads_the_effective_weight() -> None:
    from benchsuite.pruning.flops import layer_nonzeros

    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight[0] = 0
    assert layer_nonzeros(model) == {"0": (4, 8), "2": (2, 2)}


@pytest.mark.slow
def test_train_run_records_train_flops() -> None:
    """A static mask on digits for one epoch: train_flops = 3·images·Σ D_l·d_l exactly."""
    import dataclasses

    from benchsuite.presets import load_preset
    from benchsuite.training.loop import RunConfig, train_run

    preset = dataclasses.replace(load_preset("digits"), epochs=1)
    result = train_run(RunConfig(preset, "random", 0.9, 0))
    m = result.metrics
    example = torch.zeros(1, 1, 8, 8)
    layers = count_layers(result.model, example)
    expected = 3 * m["train_images"] * flops_sparse(layers)
    assert m["train_flops"] == pytest.approx(expected)
    assert m["train_cost"] == pytest.approx(flops_sparse(layers) / flops_dense(layers))
    assert m["sparsity"] == pytest.approx(0.9, abs=1e-12)
