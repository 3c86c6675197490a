"""The fairness protocol enforced by the one training loop."""

import copy

import pytest
import torch
from torch import nn

from benchsuite.core.method import PruningMethod, method_registry
from benchsuite.models import build_model
from benchsuite.training.loop import RunConfig, make_generator, make_optimizer, seed_for, train_run


class Recorder(PruningMethod):
    """Records what the loop hands a method: initial weights and the first batches."""

    name = "recorder"
    log: dict = {}

    def on_start(self, state):
        Recorder.log["init"] = {k: v.clone() for k, v in state.model.state_dict().items()}
        Recorder.log["batches"] = []

    def on_step_end(self, state):
        if state.step <= 3:
            Recorder.log["batches"].append(state.model.training)


@pytest.fixture
def with_recorder(monkeypatch):
    monkeypatch.setitem(method_registry().entries, "recorder", Recorder)
    return Recorder


def test_seed_streams_are_independent_and_deterministic():
    seeds = {seed_for(0, s) for s in ("init", "order", "augment", "method")}
    assert len(seeds) == 4
    assert seed_for(3, "order") == seed_for(3, "order") != seed_for(4, "order")


@pytest.mark.integration
def test_two_methods_start_from_the_same_weights_and_batches(
    tiny_preset, tiny_data, monkeypatch, with_recorder
):
    batches = []
    original = type(tiny_data).train_batches

    def spy(self, *args, **kwargs):
        for i, (x, y) in enumerate(original(self, *args, **kwargs)):
            if i < 2:
                batches.append((x.clone(), y.clone()))
            yield x, y

    monkeypatch.setattr(type(tiny_data), "train_batches", spy)
    preset = tiny_preset.replace(epochs=1)
    train_run(RunConfig(preset, "recorder", 0.5, seed=7), dataset=tiny_data)
    init_a, batches_a = Recorder.log["init"], batches[:]
    batches.clear()
    train_run(RunConfig(preset, "recorder", 0.9, seed=7), dataset=tiny_data)
    for k in init_a:
        assert torch.equal(init_a[k], Recorder.log["init"][k])
    for (xa, ya), (xb, yb) in zip(batches_a, batches):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    batches.clear()
    train_run(RunConfig(preset, "recorder", 0.5, seed=8), dataset=tiny_data)
    assert not torch.equal(
        init_a["conv1.weight" if "conv1.weight" in init_a else next(iter(init_a))],
        Recorder.log["init"][
            next(iter(init_a)) if "conv1.weight" not in init_a else "conv1.weight"
        ],
    )
    assert not torch.equal(batches_a[0][1], batches[0][1])


@pytest.mark.integration
def test_test_split_is_read_once_and_only_after_finalize(tiny_preset, tiny_data, monkeypatch):
    reads_at_finalize = []

    class Probe(PruningMethod):
        name = "probe"

        def on_epoch_end(self, state):
            reads_at_finalize.append(tiny_data.test_reads)

        def on_finish(self, state):
            reads_at_finalize.append(tiny_data.test_reads)

    monkeypatch.setitem(method_registry().entries, "probe", Probe)
    before = tiny_data.test_reads
    train_run(RunConfig(tiny_preset, "probe", 0.5, 0), dataset=tiny_data)
    assert reads_at_finalize == [before] * (tiny_preset.epochs + 1)
    assert tiny_data.test_reads == before + 1


@pytest.mark.integration
def test_budget_is_exact_for_every_method(tiny_preset, tiny_data):
    steps = {
        m: train_run(
            RunConfig(tiny_preset, m, 0.0 if m == "dense" else 0.9, 0, hparams=hp),
            dataset=tiny_data,
        ).metrics
        for m, hp in [
            ("dense", ()),
            ("imp", (("retrain_fraction", "0.25"),)),
            ("bimp", (("cycles", "2"),)),
        ]
    }
    assert {int(s["train_steps"]) for s in steps.values()} == {tiny_preset.epochs * 14}
    assert {int(s["train_images"]) for s in steps.values()} == {tiny_preset.epochs * 14 * 32}


@pytest.mark.integration
def test_cached_dense_phase_gives_the_same_run(tiny_preset, tiny_data, tmp_path):
    cfg = RunConfig(tiny_preset, "imp", 0.9, 0, hparams=(("retrain_fraction", "0.25"),))
    straight = train_run(cfg, dataset=tiny_data)
    first = train_run(cfg, dataset=tiny_data, cache_dir=tmp_path)
    assert first.tags["cached_dense"] == "false"
    assert len(list(tmp_path.glob("*.pt"))) == 1
    ft = RunConfig(
        tiny_preset, "imp", 0.9, 0, hparams=(("retrain_fraction", "0.25"), ("schedule", "ft"))
    )
    again = train_run(cfg, dataset=tiny_data, cache_dir=tmp_path)
    assert again.tags["cached_dense"] == "true"
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    assert again.metrics["train_steps"] == straight.metrics["train_steps"]
    assert again.metrics["train_images"] == straight.metrics["train_images"]
    # another schedule after the same dense phase reuses it; a different seed does not
    assert train_run(ft, dataset=tiny_data, cache_dir=tmp_path).tags["cached_dense"] == "true"
    other_seed = RunConfig(tiny_preset, "imp", 0.9, 1, hparams=(("retrain_fraction", "0.25"),))
    assert (
        train_run(other_seed, dataset=tiny_data, cache_dir=tmp_path).tags["cached_dense"] == "false"
    )


def test_generators_are_cpu_generators():
    assert make_generator(0, "order").device.type == "cpu"


@pytest.mark.integration
def test_final_validation_reuses_the_last_epoch_only_for_unchanged_weights(
    tiny_preset, tiny_data, monkeypatch
):
    """Dense weights are final after the last epoch: its validation is the final one (E
    validation passes and one test pass). A finalize that changes weights gets a new pass,
    and either way the recorded accuracy is that of the finalized model."""
    import benchsuite.training.evaluation as evaluation

    passes = []
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: passes.append(1) or real(*a, **k))

    class Shrink(PruningMethod):
        name = "shrink"

        def on_finish(self, state):
            with torch.no_grad():
                for p in state.model.parameters():
                    p.mul_(0.5)

    monkeypatch.setitem(method_registry().entries, "shrink", Shrink)
    val = lambda r: real(r.model, tiny_data.val_batches(256, "cpu"))[0]  # noqa: E731
    epochs = tiny_preset.epochs
    dense = train_run(RunConfig(tiny_preset, "dense", 0.0, 0), dataset=tiny_data)
    assert len(passes) == epochs + 1
    assert dense.metrics["val_accuracy"] == val(dense)
    passes.clear()
    shrunk = train_run(RunConfig(tiny_preset, "shrink", 0.0, 0), dataset=tiny_data)
    assert len(passes) == epochs + 2
    assert shrunk.metrics["val_accuracy"] == val(shrunk)
    passes.clear()
    quiet = train_run(RunConfig(tiny_preset, "dense", 0.0, 0), dataset=tiny_data, evaluation=False)
    assert passes == [] and "val_accuracy" not in quiet.metrics
    assert "test_accuracy" not in quiet.metrics


class Keep(PruningMethod):
    """Finalize scales the weights (or not) and keeps a copy of the finalized model."""

    name = "keep"
    scale = 1.0
    kept: nn.Module | None = None

    def on_finish(self, state):
        with torch.no_grad():
            for p in state.model.parameters():
                p.mul_(Keep.scale)
        Keep.kept = copy.deepcopy(state.model)


@pytest.mark.parametrize("scale, passes_after_training", [(1.0, 2), (0.5, 3)])
@pytest.mark.integration
def test_projection_drop_is_validation_before_minus_after_the_projection(
    tiny_preset, tiny_data, monkeypatch, scale, passes_after_training
):
    """Known value: the finalized model's validation accuracy (a copy, measured here) minus
    the projected model's. One extra pass only when the projection changed weights: an
    unchanged finalize reuses the last epoch's validation (val after + test), a changing one
    pays val before + val after + test."""
    import benchsuite.training.evaluation as evaluation

    passes = []
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: passes.append(1) or real(*a, **k))
    monkeypatch.setitem(method_registry().entries, "keep", Keep)
    monkeypatch.setattr(Keep, "scale", scale)
    val = lambda m: real(m, tiny_data.val_batches(256, "cpu"))[0]  # noqa: E731
    result = train_run(RunConfig(tiny_preset, "keep", 0.95, 0), dataset=tiny_data)
    assert len(passes) == tiny_preset.epochs + passes_after_training
    before, after = val(Keep.kept), val(result.model)
    assert result.metrics["val_accuracy"] == after
    assert result.metrics["projection_drop"] == before - after
    assert before != after  # 95 % of a trained model's weights: the projection mattered


@pytest.mark.integration
def test_an_unchanging_projection_costs_no_pass_and_drops_nothing(
    tiny_preset, tiny_data, monkeypatch
):
    import benchsuite.training.evaluation as evaluation

    passes = []
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: passes.append(1) or real(*a, **k))
    result = train_run(RunConfig(tiny_preset, "dense", 0.0, 0), dataset=tiny_data)
    assert len(passes) == tiny_preset.epochs + 1  # the epochs' validations and the test
    assert result.metrics["projection_drop"] == 0.0
    assert result.metrics["collapsed_layers"] == 0.0 and result.tags["collapsed"] == ""
    quiet = train_run(RunConfig(tiny_preset, "dense", 0.0, 0), dataset=tiny_data, evaluation=False)
    assert "projection_drop" not in quiet.metrics


@pytest.mark.integration
def test_a_run_records_its_collapsed_layers(tiny_preset, tiny_data, monkeypatch):
    class Wipe(PruningMethod):
        name = "wipe"

        def on_finish(self, state):
            with torch.no_grad():
                state.model.features[2].weight.zero_()
                state.model.classifier[1].weight.zero_()

    monkeypatch.setitem(method_registry().entries, "wipe", Wipe)
    result = train_run(RunConfig(tiny_preset, "wipe", 0.5, 0), dataset=tiny_data)
    assert result.metrics["collapsed_layers"] == 2.0
    assert result.tags["collapsed"] == "features.2,classifier.1"
    assert result.layer_sparsity["features.2"] == 1.0


def test_channels_last_input_decides_the_layout_of_a_one_channel_batch():
    """A (B, 1, H, W) batch counts as contiguous in both layouts; the loop gives it
    channels_last strides, so the first convolution runs channels_last even when a method
    recomputed its weight with NCHW strides."""
    from benchsuite.training.evaluation import channels_last_input

    x = torch.randn(4, 1, 6, 6)
    assert x.contiguous(memory_format=torch.channels_last).stride(1) != 1  # PyTorch keeps NCHW
    y = channels_last_input(x)
    assert y.stride() == (36, 1, 6, 1) and torch.equal(x, y)
    assert y.data_ptr() == x.data_ptr()  # the same memory, restrided: no copy per step
    three = torch.randn(2, 3, 4, 4)
    moved = channels_last_input(three)  # several channels: a real relayout
    assert moved.is_contiguous(memory_format=torch.channels_last) and torch.equal(moved, three)
    conv = torch.nn.Conv2d(1, 3, 3)  # weight strides (9, 9, 3, 1): NCHW
    # the layouts run different kernels: equal up to float rounding, not bit for bit
    assert conv(y).stride(1) == 1 and torch.allclose(conv(y), conv(x), atol=1e-6)
    assert channels_last_input(y) is y


def test_the_multi_tensor_sgd_gives_the_per_parameter_loops_values(tiny_preset):
    """The harness's SGD (``foreach``, one dispatch per op for all parameters) against torch's
    CPU default (a loop over the parameters): the same weights bit for bit after steps with
    momentum, Nesterov and weight decay, a parameter without gradient included."""
    config = RunConfig(tiny_preset, "dense", 0.0, 0)
    spec = config.preset.optimizer
    assert spec.momentum and spec.weight_decay and spec.use_nesterov
    models = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = build_model(tiny_preset.model, 10, (1, 8, 8))
        opt = make_optimizer(model, config)
        assert opt.defaults["foreach"] is True
        if not foreach:
            opt.defaults["foreach"] = opt.param_groups[0]["foreach"] = False
        frozen = next(model.parameters())
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            opt.zero_grad(set_to_none=True)
            model(torch.randn(16, 1, 8, 8, generator=gen)).square().mean().backward()
            frozen.grad = None
            opt.step()
        models.append(model)
    for a, b in zip(*(m.state_dict().values() for m in models)):
        assert torch.equal(a, b)
