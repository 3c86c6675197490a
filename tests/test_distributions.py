"""Layer-wise distributions: ERK by hand (with the cap), exact totals, uniform and global."""

import pytest
import torch

from benchsuite.pruning.distributions import (
    apportion,
    distribution_masks,
    erk_densities,
    layer_keep_counts,
)
from benchsuite.pruning.masks import keep_count

# A conv (4, 1, 3, 3) and two linears (10, 16), (2, 10): 36 + 160 + 20 = 216 weights.
SHAPES = [(4, 1, 3, 3), (10, 16), (2, 10)]


def test_erk_without_cap_by_hand():
    # raw densities Σdims/Πdims: 11/36, 26/160, 12/20; Σ raw·n = 11 + 26 + 12 = 49.
    # S = 0.8: keep 0.2·216 = 43.2, ε = 43.2/49; the small linear's ε·12/20 = 0.529 < 1.
    dens = erk_densities(SHAPES, 0.8)
    eps = 43.2 / 49
    assert dens == pytest.approx([eps * 11 / 36, eps * 26 / 160, eps * 12 / 20])
    # ideal counts 9.698, 22.922, 10.580 (sum 43.2); keep_count = 216 − 173 = 43:
    # floors 9 + 22 + 10 = 41, the two largest fractions (.922, .698) get one each.
    assert keep_count(216, 0.8) == 43
    assert layer_keep_counts("erk", SHAPES, 0.8) == [10, 23, 10]


def test_erk_cap_by_hand():
    # S = 0.5: keep 108, ε = 108/49 makes the (2, 10) layer 12/20·ε = 1.32 > 1: it is kept
    # dense (20) and the rest share 88: ε' = 88/37, conv 88·11/37 = 26.16, linear 61.84.
    dens = erk_densities(SHAPES, 0.5)
    assert dens == pytest.approx([88 / 37 * 11 / 36, 88 / 37 * 26 / 160, 1.0])
    assert layer_keep_counts("erk", SHAPES, 0.5) == [26, 62, 20]


def test_erk_cap_cascades():
    # S = 0.1 keeps 194.4: ε = 194.4/49 = 3.97 puts the (2,10) layer at 2.38 and the conv at
    # 1.21: both capped (ε only grows as layers are capped, so capping every layer above 1 at
    # once reaches the same fixed point), and the big linear keeps the rest: 194.4 − 56.
    dens = erk_densities(SHAPES, 0.1)
    assert dens == pytest.approx([1.0, 138.4 / 160, 1.0])
    assert layer_keep_counts("erk", SHAPES, 0.1) == [36, 138, 20]


def test_uniform_counts_sum_exactly():
    counts = layer_keep_counts("uniform", SHAPES, 0.9)
    # ideal 3.6, 16, 2 (sum 21.6); keep_count(216, 0.9) = 216 − 194 = 22: floors 3+16+2,
    # one more to the conv (fraction .6).
    assert counts == [4, 16, 2]


@pytest.mark.parametrize("dist", ["uniform", "erk", "global"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.98, 0.999])
def test_exact_total(dist, sparsity):
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 1, 5, 5), (16, 6, 5, 5), (120, 256), (84, 120), (10, 84)]
    scores = [torch.rand(s, generator=g) for s in shapes]
    masks = distribution_masks(dist, scores, sparsity)
    n = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == keep_count(n, sparsity)
    if dist != "global":
        assert [int(m.sum()) for m in masks] == layer_keep_counts(dist, shapes, sparsity)


def test_masks_keep_the_top_scores_per_layer():
    scores = [torch.tensor([[0.1, 0.9], [0.5, 0.3]]), torch.tensor([[0.2, 0.8, 0.4, 0.6]])]
    masks = distribution_masks("uniform", scores, 0.5)
    assert masks[0].tolist() == [[False, True], [True, False]]
    assert masks[1].tolist() == [[False, True, False, True]]
    glob = distribution_masks("global", scores, 0.5)  # top 4 of 8 overall: .9 .8 .6 .5
    assert glob[0].tolist() == [[False, True], [True, False]]
    assert glob[1].tolist() == [[False, True, False, True]]


def test_apportion_respects_sizes():
    assert apportion([2.9, 0.4, 5.0], [3, 1, 5], 9) == [3, 1, 5]


def test_bad_distribution():
    with pytest.raises(ValueError, match="choose from uniform, erk, global"):
        layer_keep_counts("nope", SHAPES, 0.5)
