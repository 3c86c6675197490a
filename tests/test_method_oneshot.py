"""The floor row: dense training, then only the harness's projection (docs/leaderboards.md)."""

import copy

import pytest
import torch

from benchsuite.core.method import get_method
from benchsuite.pruning.masks import achieved_sparsity, project_to_sparsity
from benchsuite.training.loop import RunConfig, train_run

pytestmark = pytest.mark.integration  # trains: not in the unit tier


def test_oneshot_is_the_trained_dense_model_projected_once(tiny_preset, tiny_data):
    assert get_method("oneshot").source.startswith("chosen here")
    dense = train_run(RunConfig(tiny_preset, "dense", 0.0, 3), dataset=tiny_data)
    floor = train_run(RunConfig(tiny_preset, "oneshot", 0.8, 3), dataset=tiny_data)
    expected = copy.deepcopy(dense.model)
    project_to_sparsity(expected, 0.8)
    assert achieved_sparsity(floor.model) == achieved_sparsity(expected)
    for (name, a), (_, b) in zip(floor.model.state_dict().items(), expected.state_dict().items()):
        assert torch.equal(a, b), name
    assert floor.metrics["train_steps"] == dense.metrics["train_steps"]
