"""Pinned numbers: run keys and short runs' results, recorded once. Published boards resume by run
key and their runs must reproduce bit for bit, so a change of the loop or a method that moves
any of these is a bug, not a new baseline.

Recorded on CPU with one torch thread (the suite's setting, tests/conftest.py); the run key
names torch's version and the CPU's vector capability, so another machine gives other keys.
"""

import hashlib
import json

import pytest
import torch

from benchsuite.core.identity import numerics
from benchsuite.data.base import load_dataset
from benchsuite.presets import load_preset
from benchsuite.training.loop import Progress, RunConfig, train_run
from benchsuite.training.runner import key_for

TIMING = {"wall_time_s", "train_img_per_s", "measured_speedup", "measured_speedup_b1"}  # measured
CONSTANT = {"num_classes"}  # the dataset's, not a result
# The numerics the pins were recorded with: elsewhere (another torch, another CPU vector unit)
# keys differ by design and float results may, so the pins are checked only where these match.
PINNED_ON = {"torch": "2.14.1+cu130", "device": "cpu:AVX2", "threads": 1, "amp": None}

# method -> (epochs, digest of the per-epoch curves, final metrics and state_dict)
PINNED = {
    "bimp": (6, "91202cdca7eef9df"),
    "cs": (2, "35ad48cf86c7caa3"),
    "dense": (2, "3c5bf91903abb1d1"),
    "dnw": (2, "71c8014b569fbd92"),
    "dpf": (2, "8bb8f9d157918e79"),
    "dst": (2, "7a124e054942d579"),
    "gmp": (2, "08235606b586d0ad"),
    "gsm": (2, "3ad10a68192a81c6"),
    "imp": (6, "39d0b513f613c87b"),
    "imp-retrain": (2, "f2e39f7b5ea27819"),
    "lc": (2, "cd282084a27e8723"),
    "oneshot": (2, "3c5bf91903abb1d1"),
    "random": (2, "8d8b8526eb147956"),
    "rigl": (2, "f68f3cdc497a56ed"),
    "set": (2, "b88b4f3dd7fafcff"),
    "snip": (2, "2980536dbb9c6ab1"),
    "str": (2, "f0bc575586d1f1bd"),
}
FAST = {"gmp", "imp"}  # the rest run with the slow tests


@pytest.fixture(scope="module")
def digits():
    here = numerics(RunConfig(load_preset("digits"), "gmp", 0.9, 0))
    if here != PINNED_ON:
        pytest.skip(f"pins recorded with numerics {PINNED_ON}; this machine has {here}")
    return load_dataset("digits")


def digest(curves: list, metrics: dict[str, float], model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [curves, {k: v for k, v in metrics.items() if k not in TIMING | CONSTANT}],
            sort_keys=True,
        ).encode()
    )
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def test_run_keys_are_pinned(digits):
    preset = load_preset("digits")
    keys = {m: key_for(RunConfig(preset, m, 0.9, 0), digits) for m in ("gmp", "str")}
    assert keys == {"gmp": "28cdfeaa1bf26999014dfdb4", "str": "7512f6c09c6411e3a56bdcd0"}


class Curves:
    """What a tracker records of every epoch: its metrics at its step."""

    def __init__(self) -> None:
        self.rows: list = []

    def __call__(self, progress: Progress) -> None:
        self.rows.append([progress.step, progress.metrics])


@pytest.mark.parametrize(
    "method", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in sorted(PINNED)]
)
@pytest.mark.integration
def test_every_method_reproduces_its_pinned_run(method, digits, tmp_path):
    """Curves, final metrics and weights; a second run from the dense-phase cache (IMP's
    prefix) gives the same."""
    epochs, expected = PINNED[method]
    config = RunConfig(load_preset("digits").replace(epochs=epochs), method, 0.9, 0)
    curves = Curves()
    result = train_run(config, dataset=digits, cache_dir=tmp_path, on_epoch=curves)
    assert digest(curves.rows, result.metrics, result.model) == expected
    if result.tags["cached_dense"] == "false" and any(tmp_path.iterdir()):
        curves = Curves()
        again = train_run(config, dataset=digits, cache_dir=tmp_path, on_epoch=curves)
        assert again.tags["cached_dense"] == "true"
        assert digest(curves.rows, again.metrics, again.model) == expected
