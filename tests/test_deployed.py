"""The deployable forms and the measured speedup: what is timed, how the rounds become a figure,
and an N:M model on a device without a semi-structured kernel recorded as unavailable."""

import json

import pytest
import torch
from torch import nn

from benchsuite.core.identity import RunConfig
from benchsuite.core.record import Metrics, Tags
from benchsuite.models import LeNet5
from benchsuite.presets import load_preset
from benchsuite.pruning.deploy import (
    SemiStructuredLinear,
    deployable,
    semi_structured,
    semi_structured_unavailable,
)
from benchsuite.pruning.patterns import Pattern, parse_pattern, project
from benchsuite.training import latency

CPU = torch.device("cpu")


@pytest.mark.parametrize(("rows", "cols"), [(10, 84), (120, 400), (64, 64)])
def test_semi_structured_linear_pads_to_whole_tiles_and_computes_the_same(rows, cols):
    torch.manual_seed(rows)
    linear = nn.Linear(cols, rows)
    shapes = []

    def convert(w):  # stands in for torch's converter, which needs a CUDA GPU
        shapes.append(tuple(w.shape))
        return w.clone()

    layer = SemiStructuredLinear(linear, convert)
    assert shapes[0][0] % 32 == 0 and shapes[0][1] % 64 == 0
    x = torch.randn(5, cols)
    with torch.no_grad():
        assert torch.allclose(layer(x), linear(x), atol=1e-6)
        assert torch.allclose(layer(x[:1]), linear(x[:1]), atol=1e-6)


def test_only_linear_layers_that_are_two_of_four_are_converted():
    torch.manual_seed(0)
    net = LeNet5(10, (1, 28, 28))
    project(net, 0.5, parse_pattern("2:4"))
    with torch.no_grad():
        net.classifier[3].weight.fill_(1.0)  # made dense again: not 2:4
    _, layers = semi_structured(net, convert=lambda w: w.clone())
    assert layers == ["classifier.1", "classifier.5"]
    assert isinstance(net.classifier[1], SemiStructuredLinear)
    assert isinstance(net.features[0], nn.Conv2d)  # convolutions have no kernel: dense


def test_on_the_cpu_the_nm_form_is_unavailable_never_the_masked_model():
    torch.manual_seed(0)
    net = LeNet5(10, (1, 28, 28))
    project(net, 0.5, parse_pattern("2:4"))
    form = deployable(net, parse_pattern("2:4"), CPU, torch.zeros(1, 1, 28, 28))
    assert form.module is None
    assert form.unavailable == semi_structured_unavailable(CPU)
    assert "needs CUDA with compute capability >= 8.0" in form.unavailable
    assert deployable(net, Pattern(), CPU, torch.zeros(1, 1, 28, 28)).module is net


def test_the_speedup_is_the_median_of_the_paired_rounds(monkeypatch):
    """Each round times both models back to back at each batch; the figure is the median of
    dense ÷ deployed over the rounds (a disturbed round does not move it)."""
    dense, model = nn.Identity(), nn.Identity()
    times = {
        (id(dense), 1): iter([1.0, 1.0, 5.0, 1.0, 1.0]),
        (id(model), 1): iter([0.5, 0.5, 0.5, 0.5, 0.5]),
        (id(dense), 8): iter([4.0] * 5),
        (id(model), 8): iter([1.0, 2.0, 1.0, 2.0, 2.0]),
    }
    calls = []

    def fake(m, x, reps, device, best_of=1):
        if best_of == 3 and reps == 1:  # the warm-up's calibration
            return 0.001
        calls.append(id(m))
        return next(times[(id(m), int(x.shape[0]))])

    monkeypatch.setattr(latency, "time_forward", fake)
    one, many = latency.interleaved_latency(
        dense, model, [torch.zeros(1, 2), torch.zeros(8, 2)], CPU, rounds=5
    )
    assert one.speedup == 2.0 and many.speedup == 2.0
    assert one.ratios == [2.0, 2.0, 10.0, 2.0, 2.0]
    assert len(calls) == 20 and calls.count(id(dense)) == 10


def config(pattern: str) -> RunConfig:
    preset = load_preset("fashion-mnist").replace(eval_batch_size=64)
    return RunConfig(preset, "oneshot", 0.5, 0, pattern=pattern)


def test_measured_speedup_of_a_channel_model_and_an_unavailable_nm_one():
    torch.manual_seed(0)
    net = LeNet5(10, (1, 28, 28)).to(memory_format=torch.channels_last)
    project(net, 0.5, Pattern("channel"), torch.zeros(1, 1, 28, 28))
    metrics, tags, form = latency.measure_speedup(net, config("channel"), 10, (1, 28, 28), CPU)
    assert form.form == "channels removed" and tags[Tags.DEPLOYED_FORM] == "channels removed"
    assert metrics[Metrics.PARAMS_DEPLOYED] < metrics[Metrics.PARAMS_DENSE] / 2
    assert metrics[Metrics.DEPLOYED_MAX_ABS_DIFF] < 1e-5
    assert metrics[Metrics.MEASURED_SPEEDUP] > 0 and metrics[Metrics.MEASURED_SPEEDUP_B1] > 0
    rounds = json.loads(tags[Tags.LATENCY_ROUNDS])
    assert set(rounds) == {"dense_ms_b1", "model_ms_b1", "dense_ms_b64", "model_ms_b64"}
    assert tags[Tags.LATENCY_BATCH] == "64" and tags[Tags.LATENCY_DTYPE] == "float32"

    nm = LeNet5(10, (1, 28, 28))
    project(nm, 0.5, parse_pattern("2:4"))
    metrics, tags, _ = latency.measure_speedup(nm, config("2:4"), 10, (1, 28, 28), CPU)
    assert Metrics.MEASURED_SPEEDUP not in metrics and Metrics.MEASURED_SPEEDUP_B1 not in metrics
    assert "no 2:4 sparse kernel on cpu" in tags[Tags.MEASURED_SPEEDUP_UNAVAILABLE]


@pytest.mark.skipif(
    semi_structured_unavailable(torch.device("cuda")) is not None,
    reason="needs a CUDA GPU of compute capability >= 8.0",
)
def test_on_an_ampere_gpu_the_nm_form_runs_semi_structured():
    device = torch.device("cuda")
    torch.manual_seed(0)
    net = LeNet5(10, (1, 28, 28)).to(device)
    project(net, 0.5, parse_pattern("2:4"))
    form = deployable(net, parse_pattern("2:4"), device, torch.zeros(1, 1, 28, 28, device=device))
    assert form.module is not None and "classifier.1" in form.form
    x = torch.randn(32, 1, 28, 28, device=device)
    with torch.no_grad():
        ref = net.eval()(x)
        out = form.module.eval()(x.half()).float()
    assert torch.allclose(out, ref, atol=5e-2, rtol=5e-2)
