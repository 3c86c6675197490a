"""``amp`` in a preset means bfloat16 autocast wherever torch autocasts, the CPU included
(docs/protocol.md, Run identity): activations in bfloat16, weights and optimizer in float32."""

import pytest
import torch
from torch import nn

from benchsuite.core.budget import Budget
from benchsuite.core.identity import numerics
from benchsuite.training.loop import RunConfig, autocast_dtype, setup, train_run, train_step

pytestmark = pytest.mark.integration  # trains: not in the unit tier


@pytest.mark.parametrize("amp, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_a_step_runs_in_the_presets_precision(tiny_preset, tiny_data, amp, expected):
    config = RunConfig(tiny_preset.replace(amp=amp), "gmp", 0.5, 0)
    device = torch.device("cpu")
    budget = Budget(config.preset.epochs, tiny_data.steps_per_epoch(config.preset.batch_size))
    model, method, state = setup(config, tiny_data, budget, device)
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    outputs = []
    linear.register_forward_hook(lambda _m, _i, out: outputs.append(out.dtype))
    x, y = next(
        iter(
            tiny_data.train_batches(
                config.preset.batch_size, torch.Generator(), torch.Generator(), device
            )
        )
    )
    train_step(state, method, x, y, autocast_dtype(config, device))
    assert outputs == [expected]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert numerics(config)["amp"] == (None if expected == torch.float32 else "bfloat16")


def test_an_amp_run_trains_and_records_float32_weights(tiny_preset, tiny_data):
    result = train_run(
        RunConfig(tiny_preset.replace(amp=True, epochs=2), "gmp", 0.5, 0), dataset=tiny_data
    )
    assert result.tags["numerics.amp"] == "bfloat16"
    assert result.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0 <= result.metrics["test_accuracy"] <= 100
    assert all(
        t.dtype == torch.float32
        for t in result.model.state_dict().values()
        if t.is_floating_point()
    )
