"""Sparsity patterns: parsing, the N:M grouping, the prune within the pattern, the projection,
validity, and the run's identity (an unstructured run keeps its key)."""

import pytest
import torch
from torch import nn

from benchsuite.core.identity import RunConfig, resolved
from benchsuite.presets import load_preset
from benchsuite.pruning.masks import (
    achieved_sparsity,
    project_to_sparsity,
    prunable_modules,
    prune_remaining,
)
from benchsuite.pruning.patterns import (
    CHANNEL,
    NM,
    UNSTRUCTURED,
    Pattern,
    exempt_layers,
    nm_eligible,
    nm_groups,
    nm_mask,
    nm_prune_remaining,
    nm_violations,
    parse_pattern,
    project,
    violations,
)


def test_parse():
    assert parse_pattern("2:4") == Pattern(NM, 2, 4)
    assert parse_pattern(" Channel ") == Pattern(CHANNEL)
    assert parse_pattern("unstructured") == Pattern(UNSTRUCTURED)
    assert str(Pattern(NM, 1, 4)) == "1:4" and Pattern(NM, 1, 4).sparsity == 0.75
    assert Pattern(CHANNEL).sparsity is None and not Pattern().structured
    for bad, needle in (("3:2", "1 <= N < M"), ("0:4", "1 <= N < M"), ("foo", "choose unst")):
        with pytest.raises(ValueError, match=needle):
            parse_pattern(bad)


def test_groups_run_along_the_input_dimension():
    """A conv weight (out, in, kh, kw) is grouped along ``in`` at each (out, kh, kw)."""
    w = torch.arange(2 * 8 * 3 * 3, dtype=torch.float32).reshape(2, 8, 3, 3)
    groups = nm_groups(w, 4)
    assert groups.shape == (2 * 3 * 3 * 2, 4)
    # the first group: output 0, kernel position (0, 0), inputs 0..3
    assert groups[0].tolist() == [w[0, i, 0, 0].item() for i in range(4)]
    # the same layout stored channels_last gives the same groups
    assert torch.equal(nm_groups(w.contiguous(memory_format=torch.channels_last), 4), groups)
    assert nm_eligible(w, 4) and nm_eligible(w, 8) and not nm_eligible(w, 16)


def test_nm_mask_on_a_hand_made_tensor():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 7.0, 0.0, 0.0, -1.0]])
    assert nm_mask(w, 2, 4).tolist() == [[False, True, True, False, True, False, False, True]]
    assert nm_mask(w, 1, 4).tolist() == [[False, True, False, False, True, False, False, False]]
    # a group with fewer than N non-zeros keeps them, and an already 2:4 weight is unchanged
    valid = w * nm_mask(w, 2, 4)
    assert torch.equal(valid * nm_mask(valid, 2, 4), valid)
    assert nm_violations([w], 2, 4) == 1 and nm_violations([valid], 2, 4) == 0


def test_prune_remaining_within_nm_ends_at_exactly_n_per_group():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    alive = [torch.ones_like(w, dtype=torch.bool)]
    # round(0.2·512) = 102 go; then round(0.3·410) = 123; then 0.5 of the rest, capped at
    # the 256 outside the groups' top 2
    for fraction, pruned in ((0.2, 102), (0.3, 225), (0.5, 256)):
        alive = nm_prune_remaining([w], fraction, alive, 2, 4)
        assert int((~alive[0]).sum()) == pruned
    kept = nm_groups(alive[0], 4).sum(dim=1)
    assert torch.all(kept == 2)
    # the survivors are each group's two largest |w| (the prune never removes a protected one)
    assert torch.equal(alive[0], nm_mask(w, 2, 4))


def test_prune_remaining_is_global_among_the_candidates():
    """Outside each group's top N, the globally smallest go first, whichever layer."""
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # candidates 1, 2
    b = torch.tensor([[10.0, 20.0, 30.0, 0.5]])  # candidates 0.5, 10
    alive = [torch.ones_like(a, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)]
    new = nm_prune_remaining([a, b], 0.25, alive, 2, 4)  # 2 of 8
    assert new[0].tolist() == [[False, True, True, True]]
    assert new[1].tolist() == [[True, True, True, False]]


def test_unstructured_prune_is_the_plain_global_prune():
    torch.manual_seed(1)
    ws = [torch.randn(4, 8), torch.randn(3, 4)]
    alive = [torch.ones_like(w, dtype=torch.bool) for w in ws]
    expected = prune_remaining(ws, 0.6, alive)
    got = Pattern().prune_remaining(ws, 0.6, alive)
    assert all(torch.equal(x, y) for x, y in zip(got, expected))
    with pytest.raises(ValueError, match="no prune of single weights"):
        Pattern(CHANNEL).prune_remaining(ws, 0.6, alive)


class Net(nn.Module):
    """A conv with 1 input channel and a Linear of 6 inputs (neither groups into 4s), and two
    layers that do."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3)
        self.c2 = nn.Conv2d(8, 6, 3)
        self.f1 = nn.Linear(6, 12)
        self.f2 = nn.Linear(12, 3)

    def forward(self, x):
        x = self.c2(self.c1(x)).mean(dim=(2, 3))
        return self.f2(self.f1(x))


def test_projection_within_nm_leaves_exempt_layers_dense():
    torch.manual_seed(2)
    net = Net()
    assert exempt_layers(net, Pattern(NM, 2, 4)) == ["c1", "f1"]
    assert violations(net, Pattern(NM, 2, 4)) > 0
    project(net, 0.5, Pattern(NM, 2, 4))
    assert violations(net, Pattern(NM, 2, 4)) == 0
    assert bool((net.c1.weight != 0).all()) and bool((net.f1.weight != 0).all())
    for layer in (net.c2, net.f2):
        assert torch.all(nm_groups(layer.weight != 0, 4).sum(dim=1) == 2)
    grouped = net.c2.weight.numel() + net.f2.weight.numel()
    total = sum(m.weight.numel() for _, m in prunable_modules(net))
    assert achieved_sparsity(net) == pytest.approx(0.5 * grouped / total)


def test_unstructured_projection_is_unchanged():
    torch.manual_seed(3)
    a, b = Net(), Net()
    b.load_state_dict(a.state_dict())
    project_to_sparsity(a, 0.7)
    project(b, 0.7, Pattern())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert violations(b, Pattern()) == 0


def test_a_structured_pattern_enters_the_key_and_the_variant_only_when_structured():
    preset = load_preset("digits")
    plain = RunConfig(preset, "gmp", 0.5, 0)
    assert "pattern" not in resolved(plain)  # every unstructured run keeps its key
    assert plain.variant() == "default"
    nm = RunConfig(preset, "gmp", 0.5, 0, pattern="2:4")
    assert resolved(nm)["pattern"] == "2:4"
    assert nm.variant() == "2:4" and nm.label() == "gmp[2:4]@0.5/s0"
    tuned = RunConfig(preset, "imp", 0.5, 0, hparams=(("schedule", "ft"),), pattern="2:4")
    assert tuned.variant() == "2:4,schedule=ft"
