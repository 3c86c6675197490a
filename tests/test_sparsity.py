"""Global magnitude selection, fractions of the remaining weights, hard masks, projection."""

import pytest
import torch
from torch import nn

from benchsuite.pruning.masks import (
    HardMasks,
    achieved_sparsity,
    collapsed_layers,
    global_magnitude_masks,
    keep_count,
    project_to_sparsity,
    prunable_modules,
    prune_remaining,
)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.norm = nn.LayerNorm(2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.norm(self.bn(self.conv(x)).mean((2, 3))))


def test_prunable_is_conv_and_linear_weights_only():
    names = [n for n, _ in prunable_modules(Net())]
    assert names == ["conv", "fc"]  # first and last layer included; BN and LayerNorm never


def test_global_selection_spans_tensors():
    a = torch.tensor([0.1, -5.0, 0.2])
    b = torch.tensor([[3.0, -0.05], [0.3, 4.0]])
    masks = global_magnitude_masks([a, b], keep=3)
    assert masks[0].tolist() == [False, True, False]
    assert masks[1].tolist() == [[True, False], [False, True]]


def test_fraction_is_of_the_remaining_weights():
    w = torch.arange(1.0, 11.0)  # 10 weights
    current = [torch.tensor([False] * 4 + [True] * 6)]  # 4 already pruned
    new = prune_remaining([w], 0.5, current)  # round(0.5 · 6) = 3 more, not 5
    assert int(new[0].sum()) == 3
    assert new[0].tolist() == [False] * 7 + [True] * 3
    # already-pruned entries are never revived, even if large
    w2 = torch.tensor([100.0, 1.0, 2.0, 3.0])
    again = prune_remaining([w2], 1 / 3, [torch.tensor([False, True, True, True])])
    assert again[0].tolist() == [False, False, True, True]


def test_keep_count_rounds_the_pruned_amount():
    assert keep_count(1000, 0.9) == 100
    assert keep_count(61470, 0.98) == 61470 - round(0.98 * 61470)


def test_projection_gives_max_of_achieved_and_target():
    torch.manual_seed(0)
    net = Net()
    project_to_sparsity(net, 0.5)
    total = net.conv.weight.numel() + net.fc.weight.numel()  # 2 + 6 = 8
    assert achieved_sparsity(net) == (total - keep_count(total, 0.5)) / total
    with torch.no_grad():
        net.conv.weight.fill_(1.0)
        net.fc.weight.zero_()  # 6 of 8 zero: sparser than the target
        net.fc.bias.fill_(0.01)
    project_to_sparsity(net, 0.5)
    assert achieved_sparsity(net) == 0.75
    assert torch.all(net.conv.weight == 1.0)
    assert torch.all(net.fc.bias == 0.01)  # biases are never pruned


def test_hard_masks_keep_pruned_weights_at_zero_under_sgd_with_decay_and_momentum():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    x = torch.randn(8, 4)
    for _ in range(3):  # build up momentum first
        opt.zero_grad()
        lin(x).pow(2).sum().backward()
        opt.step()
    masks = HardMasks([lin.weight])
    keep = torch.rand(4, 4) > 0.5
    masks.set([keep], opt)
    assert torch.all(opt.state[lin.weight]["momentum_buffer"][~keep] == 0)
    for _ in range(5):
        opt.zero_grad()
        lin(x).pow(2).sum().backward()
        masks.mask_grads()
        opt.step()
    assert torch.all(lin.weight[~keep] == 0)
    assert torch.all(lin.weight[keep] != 0)


def test_collapsed_layers_names_the_layers_without_a_nonzero_weight():
    """A layer is collapsed only when every weight is zero; its bias and other layers' zeros
    do not count."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 2))
    assert collapsed_layers(net) == []
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.fill_(1.0)  # a bias keeps no signal path through the weights
        net[3].weight[0].zero_()  # half empty: not collapsed
        net[3].weight[1, 1:].zero_()  # one weight left: still not collapsed
    assert collapsed_layers(net) == ["2"]
    with torch.no_grad():
        net[0].weight.zero_()
    assert collapsed_layers(net) == ["0", "2"]  # registration order


def test_the_sparse_start_restores_each_units_variance_from_the_same_weights() -> None:
    """A linear layer of 2,000 inputs keeps a random tenth of each unit's inputs: masked, each
    unit's pre-activation variance (Σ w² for unit-variance inputs) falls to ~10 % of dense;
    rescaled by √(fan-in ÷ kept) it is the dense one again (sampling error ~4 % per unit),
    and every kept weight is its shared initial value times its unit's one factor."""
    from benchsuite.pruning.masks import rescale_to_kept_fan_in

    torch.manual_seed(0)
    layer = torch.nn.Linear(2000, 64)
    dense = layer.weight.detach().clone()
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(dense.shape, generator=gen) < 0.1
    weight = dense * mask
    kept = mask.sum(dim=1).to(dense.dtype)
    masked_var = (weight**2).sum(dim=1)
    rescale_to_kept_fan_in([weight], [mask])
    dense_var = (dense**2).sum(dim=1)
    ratio = (weight**2).sum(dim=1) / dense_var
    assert float((masked_var / dense_var).mean()) == pytest.approx(0.1, abs=0.01)
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.02)
    assert float(ratio.std()) < 0.1
    factor = torch.sqrt(2000 / kept).unsqueeze(1)
    assert torch.equal(weight == 0, ~mask)
    torch.testing.assert_close(weight[mask], (dense * factor)[mask])
