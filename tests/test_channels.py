"""The channel pattern: groups from Torch-Pruning's dependency graph, masks with the dependants,
the projection, validity, and the export: a smaller model of plain torch modules that computes
what the masked model computes and loads without benchsuite."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from benchsuite.models import LeNet5
from benchsuite.pruning.channels import ChannelGroups, parameter_count
from benchsuite.pruning.deploy import save_program
from benchsuite.pruning.masks import achieved_sparsity

EXAMPLE = torch.zeros(1, 1, 28, 28)


@pytest.fixture
def lenet():
    torch.manual_seed(0)
    return LeNet5(10, (1, 28, 28))


def test_lenet_groups_and_their_dependants(lenet):
    groups = {g.name: g for g in ChannelGroups(lenet, EXAMPLE).groups}
    # every layer's outputs but the classifier's; each with the layer that reads them
    assert {n: g.size for n, g in groups.items()} == {
        "features.0": 6,
        "features.3": 16,
        "classifier.1": 120,
        "classifier.3": 84,
    }
    conv2 = groups["features.3"]
    dims = sorted((e.layer, e.dim, len(e.index)) for e in conv2.entries)
    assert dims == [(1, 0, 16), (2, 1, 400)]  # conv2's rows; fc1's 400 inputs, 25 per channel
    fc1_inputs = next(e for e in conv2.entries if e.dim == 1)
    assert fc1_inputs.channel[:26].tolist() == [0] * 25 + [1]


def test_masks_remove_a_channel_with_everything_that_reads_it(lenet):
    groups = ChannelGroups(lenet, EXAMPLE)
    removed = [torch.zeros(g.size, dtype=torch.bool) for g in groups.groups]
    k = [g.name for g in groups.groups].index("features.3")
    removed[k][2] = True  # conv2's third channel
    masks = dict(zip(groups.names, groups.masks(removed)))
    assert not masks["features.3"][2].any() and masks["features.3"][[0, 1, 3]].all()
    fc1 = masks["classifier.1"]
    assert not fc1[:, 50:75].any() and fc1[:, :50].all() and fc1[:, 75:].all()
    assert all(masks[n].all() for n in ("features.0", "classifier.3", "classifier.5"))
    assert groups.sparsity_of([1 if i == k else 0 for i in range(4)]) == pytest.approx(
        (150 + 25 * 120) / 61470
    )


def test_counts_reach_the_nearest_uniform_ratio(lenet):
    groups = ChannelGroups(lenet, EXAMPLE)
    order = [g.name for g in groups.groups]
    counts = dict(zip(order, groups.counts_for(0.9)))
    # 4 of 6, 11 of 16, 83 of 120, 58 of 84: r ≈ 0.69 everywhere, sparsity 0.9 exactly
    assert counts == {"features.0": 4, "features.3": 11, "classifier.1": 83, "classifier.3": 58}
    assert groups.sparsity_of(groups.counts_for(0.9)) == pytest.approx(0.9, abs=1e-4)
    assert all(c <= g.size - 1 for c, g in zip(groups.counts_for(0.999), groups.groups))


def test_projection_removes_the_lowest_l1_filters_and_validates(lenet):
    groups = ChannelGroups(lenet, EXAMPLE)
    with torch.no_grad():
        lenet.features[0].weight[3].mul_(1e-3)  # the first conv's weakest filter
    groups.project(0.5)
    assert achieved_sparsity(lenet) == pytest.approx(groups.sparsity_of(groups.counts_for(0.5)))
    assert not lenet.features[0].weight[3].any()
    assert not lenet.features[3].weight[:, 3].any()  # and conv2's inputs from it
    assert groups.violations() == 0
    row, col = lenet.classifier[1].weight.nonzero()[0].tolist()
    with torch.no_grad():
        lenet.classifier[1].weight[row, col] = 0.0  # a stray zero breaks the pattern
    assert groups.violations() == 1


def test_projection_keeps_a_sparser_model_and_completes_half_removed_channels(lenet):
    groups = ChannelGroups(lenet, EXAMPLE)
    groups.project(0.75)
    before = achieved_sparsity(lenet)
    groups.project(0.5)  # already beyond: nothing more
    assert achieved_sparsity(lenet) == before
    fresh = LeNet5(10, (1, 28, 28))
    g = ChannelGroups(fresh, EXAMPLE)
    with torch.no_grad():
        fresh.classifier[1].weight[7].zero_()  # a filter zeroed, its readers not (SFP's soft zero)
    g.project(0.01)
    assert not fresh.classifier[3].weight[:, 7].any() and g.violations() == 0


def test_export_is_smaller_and_computes_the_same(lenet, tmp_path):
    groups = ChannelGroups(lenet, EXAMPLE)
    groups.project(0.9)
    small = groups.export()
    assert parameter_count(small) < parameter_count(lenet) // 5
    assert small.features[0].out_channels == 2 and small.classifier[1].in_features == 5 * 25
    lenet.eval()
    small.eval()
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(small(x), lenet(x), atol=1e-5)
    path = tmp_path / "deployed.pt2"
    save_program(small, (1, 28, 28), path)
    torch.save(x, tmp_path / "x.pt")
    # a fresh interpreter that imports torch only: the program loads without benchsuite
    code = (
        "import json, sys, torch\n"
        f"m = torch.export.load({str(path)!r}).module()\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "y = m(x)\n"
        "print(json.dumps({'shape': list(y.shape), 'sum': float(y.sum()), "
        "'benchsuite': any(k.startswith('benchsuite') for k in sys.modules)}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)  # fmt: skip
    assert out["shape"] == [16, 10] and not out["benchsuite"]
    with torch.no_grad():
        assert out["sum"] == pytest.approx(float(small(x).sum()), rel=1e-5, abs=1e-4)


class Residual(nn.Module):
    """conv-BN-ReLU, then two blocks whose outputs are added to their inputs: every channel
    of the trunk is shared by four layers, which Torch-Pruning couples into one group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(8, 12, 3, padding=1),
                nn.BatchNorm2d(12),
                nn.ReLU(),
                nn.Conv2d(12, 8, 3, padding=1),
                nn.BatchNorm2d(8),
            )
            for _ in range(2)
        )
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.head(x.mean(dim=(2, 3)))


def test_residual_channels_are_coupled_and_export_matches():
    torch.manual_seed(4)
    net = Residual()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    example = torch.zeros(1, 3, 12, 12)
    groups = ChannelGroups(net, example)
    groups.check()
    producers = [
        sorted(groups.names[e.layer] for e in g.entries if e.dim == 0) for g in groups.groups
    ]
    assert sorted(producers) == [
        ["blocks.0.0"],
        ["blocks.0.3", "blocks.1.3", "stem.0"],
        ["blocks.1.0"],
    ]
    groups.project(0.5)
    assert groups.violations() == 0
    small = groups.export()
    assert parameter_count(small) < parameter_count(net)
    net.eval()
    small.eval()
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(small(x), net(x), atol=1e-5)


def test_a_model_the_graph_misreads_is_refused():
    """Option-A shortcuts zero-pad channels: Torch-Pruning couples the stages wrongly."""
    from benchsuite.models import build_model

    net = build_model("resnet20", 10, (3, 32, 32))
    with pytest.raises(ValueError, match="removing channels breaks it"):
        ChannelGroups(net, torch.zeros(1, 3, 32, 32)).check()
