"""The structured methods and the magnitude methods under a pattern: SR-STE's estimator by hand,
SFP's soft zeros, and whole runs whose masks are exactly N:M or whole channels, recorded."""

import json

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from benchsuite.core.identity import preset_budget
from benchsuite.core.record import Artifacts, Metrics, Tags
from benchsuite.pruning.batched import BatchedWeight, register_batched
from benchsuite.pruning.patterns import nm_groups, nm_mask
from benchsuite.store.tracking import Tracker
from benchsuite.training.loop import RunConfig, setup, train_run, train_step
from benchsuite.training.runner import execute, key_for
from benchsuite_methods.srste import SparseRefined


def test_srste_forward_is_nm_and_its_gradient_is_straight_through_plus_the_decay():
    torch.manual_seed(0)
    layer = nn.Linear(8, 3, bias=False)
    w0 = layer.weight.detach().clone()
    p = BatchedWeight(None, 0)
    (latent,) = register_batched([layer], [p])
    batch = SparseRefined([latent], 2, 4, decay=0.1)
    p.batch = batch
    mask = nm_mask(w0, 2, 4)
    assert torch.equal(layer.weight, w0 * mask)
    x = torch.randn(5, 8)
    layer(x).sum().backward()
    batch.backward()
    g = x.sum(dim=0).expand(3, 8)  # ∂(Σ W̃x)/∂W̃ for every row
    assert torch.allclose(latent.grad, g + 0.1 * (~mask) * w0, atol=1e-6)


def run(preset, data, method, target, pattern, **hp):
    config = RunConfig(preset, method, target, 0, hparams=tuple(hp.items()), pattern=pattern)
    return train_run(config, dataset=data)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "pattern", "hp"),
    [
        ("gmp", "2:4", {}),
        ("srste", "2:4", {}),
        ("srste", "1:4", {}),
        ("imp", "2:4", {"retrain_fraction": "0.25"}),
        ("oneshot", "2:4", {}),
    ],
)
def test_every_nm_run_ends_exactly_nm(tiny_preset, tiny_data, method, pattern, hp):
    n, m = (int(v) for v in pattern.split(":"))
    result = run(tiny_preset, tiny_data, method, 1 - n / m, pattern, **hp)
    assert result.metrics[Metrics.PATTERN_VALID] == 1.0
    assert result.metrics[Metrics.PATTERN_VIOLATIONS] == 0.0
    assert result.tags[Tags.PATTERN_EXEMPT] == "features.0"  # the 1-channel input conv
    model = result.model
    for layer in (model.features[2], model.classifier[1], model.classifier[3]):
        assert torch.all(nm_groups(layer.weight != 0, m).sum(dim=1) == n)
    assert bool((model.features[0].weight != 0).all())
    if method in ("gmp", "srste", "imp"):  # the method reached it itself: nothing projected
        before = result.metrics[Metrics.SPARSITY_BEFORE_PROJECTION]
        assert before == pytest.approx(result.metrics[Metrics.SPARSITY])
    assert "no 2:4 sparse kernel on cpu" in result.tags[Tags.MEASURED_SPEEDUP_UNAVAILABLE]
    assert Metrics.MEASURED_SPEEDUP not in result.metrics


@pytest.mark.integration
def test_sfp_zeroes_filters_softly_and_they_can_return(tiny_preset, tiny_data):
    config = RunConfig(tiny_preset, "sfp", 0.5, 0, pattern="channel")
    batches = list(tiny_data.train_batches(32, torch.Generator(), torch.Generator(), "cpu"))
    model, method, state = setup(
        config, tiny_data, preset_budget(tiny_preset, tiny_data), torch.device("cpu")
    )
    state.epoch = 1
    method.on_epoch_end(state)
    conv2, fc1 = model.features[2].weight, model.classifier[1].weight
    zeroed = [i for i in range(conv2.shape[0]) if not conv2[i].any()]
    assert zeroed  # some of conv2's filters ...
    per = fc1.shape[1] // conv2.shape[0]  # fc1 inputs per conv2 channel (4×4)
    assert all(fc1[:, i * per : (i + 1) * per].any() for i in zeroed)  # not their readers: soft
    for x, y in batches[:2]:
        train_step(state, method, x, y)
    assert any(conv2[i].any() for i in zeroed)  # gradient reaches them: they may come back


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "hp"), [("l1-filter", {"retrain_fraction": "0.25"}), ("sfp", {})]
)
def test_a_channel_run_exports_a_smaller_model_that_computes_the_same(
    tmp_path, tiny_preset, tiny_data, method, hp
):
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "exp")
    config = RunConfig(tiny_preset, method, 0.5, 0, hparams=tuple(hp.items()), pattern="channel")
    status, result, error = execute(config, tracker, dataset=tiny_data)
    assert status == "FINISHED", error
    metrics = result.metrics
    assert metrics[Metrics.PATTERN_VALID] == 1.0
    assert metrics[Metrics.PARAMS_DEPLOYED] < 0.6 * metrics[Metrics.PARAMS_DENSE]
    assert metrics[Metrics.DEPLOYED_MAX_ABS_DIFF] < 1e-5
    assert abs(metrics[Metrics.SPARSITY] - 0.5) < 0.02
    assert result.deployed is not None
    assert sum(p.numel() for p in result.deployed.parameters()) == metrics[Metrics.PARAMS_DEPLOYED]
    (run_record,) = tracker.runs_of(key_for(config, tiny_data))
    assert run_record.params["pattern"] == "channel"
    assert run_record.params["variant"] == ",".join(
        ["channel", *(f"{k}={v}" for k, v in hp.items())]
    )
    client = MlflowClient(uri)
    names = {a.path for a in client.list_artifacts(run_record.run_id)}
    assert {Artifacts.MODEL, Artifacts.DEPLOYED} <= names
    path = client.download_artifacts(run_record.run_id, Artifacts.DEPLOYED, str(tmp_path))
    loaded = torch.export.load(path).module()
    x = torch.randn(3, *tiny_data.input_shape)
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x), atol=1e-5)
    assert len(json.loads(run_record.tag(Tags.LATENCY_ROUNDS))["dense_ms_b1"]) >= 1
