"""The calibration search: it lands a knob on the target on the calibration seeds, judged on
sparsity only, and never uses a benchmark seed."""

import json
import math
import tomllib
from pathlib import Path

import pytest

from benchsuite.core.identity import RunConfig, hparam_pairs
from benchsuite.core.record import Metrics
from benchsuite.training.loop import train_run
from benchsuite.tuning.calibrate import (
    CALIBRATION_SEEDS,
    Probe,
    RunCache,
    calibrate,
    calibrate_targets,
    toml_block,
)


def fake_sparsity(job: tuple) -> float:
    """A smooth, seed-dependent response: logit(s) = 2·log10(value/1e-3) + 2.2 + seed offset."""
    _, _, _, value, _, seed, _ = job
    assert seed in CALIBRATION_SEEDS  # never a benchmark seed (0..N-1) or a tuning seed
    z = 2.0 * math.log10(value / 1e-3) + 2.2 + 0.05 * (seed - 101)
    return 1.0 / (1.0 + math.exp(-z))


def test_the_search_lands_the_mean_on_the_target() -> None:
    probes = calibrate(
        "fashion-mnist",
        "str",
        "weight_decay",
        0.9,
        1e-4,
        1e-3,
        train=fake_sparsity,
        workers=1,
        cache=None,
        key=repr,
    )
    best = probes[-1]
    assert best.accepted(0.9)
    assert 0.89 <= best.mean and 0.9 <= best.projected_mean(0.9) <= 0.905
    assert all(p.accepted(0.9) is False for p in probes[:-1])
    block = toml_block("str", 0.9, "weight_decay", probes)
    assert '[calibration.str."0.9"]' in block and f"weight_decay = {best.value:.6g}" in block
    fixed = toml_block("str", 0.9, "weight_decay", probes, (("s_initial", "-5"), ("note", 'a"b')))
    table = tomllib.loads(fixed)["calibration"]["str"]["0.9"]  # the value holds only with them
    assert table == {"s_initial": -5.0, "note": 'a"b', "weight_decay": float(f"{best.value:.6g}")}


@pytest.mark.parametrize(("target", "low", "high"), [(0.9, 1e-2, 1.2e-2), (0.95, 5e-5, 6e-5)])
def test_a_target_far_outside_a_narrow_bracket_is_reached(target, low, high) -> None:
    """The first extension follows the secant past the bracket (here capped at 8 widths)
    instead of one width at a time, which would need 13 (0.9) or 21 (0.95) probes, over the
    limit of 7."""
    probes = calibrate(
        "fashion-mnist", "str", "weight_decay", target, low, high,
        train=fake_sparsity, workers=1, cache=None, key=repr,
    )  # fmt: skip
    assert probes[-1].accepted(target) and len(probes) <= 7
    past = min(abs(math.log(probes[2].value / end)) for end in (low, high))
    assert past == pytest.approx(8 * math.log(high / low))


def test_an_accepted_low_end_is_the_only_run() -> None:
    args = ("fashion-mnist", "str", "weight_decay", 0.9)
    best = calibrate(*args, 1e-4, 1e-3, train=fake_sparsity, workers=1, cache=None, key=repr)[-1]
    calls: list[tuple] = []

    def train(job: tuple) -> float:
        calls.append(job)
        return fake_sparsity(job)

    again = calibrate(*args, best.value, 1e-3, train=train, workers=1, cache=None, key=repr)
    assert again == [best] and len(calls) == len(CALIBRATION_SEEDS)


def test_acceptance_counts_the_projection_and_the_methods_own_mean() -> None:
    assert Probe(0.5, (0.899, 0.901, 0.902)).accepted(0.9)  # own mean 0.9007
    assert not Probe(0.5, (0.90, 0.90, 0.92)).accepted(0.9)  # after the projection 0.9067
    assert not Probe(0.5, (0.88, 0.88, 0.90)).accepted(0.9)  # own mean 0.8867: mostly top-up
    assert Probe(0.5, (0.89, 0.89, 0.905)).accepted(0.9)  # own mean 0.895, projected 0.9017
    assert Probe(0.5, (0.89, 0.90, 0.91)).projected_mean(0.9) == pytest.approx(0.9033, abs=1e-4)


def test_a_stopped_calibration_resumes_from_its_finished_runs(tmp_path: Path) -> None:
    """The first attempt is stopped in its third probe after two of its six runs; the same
    command then trains only what is missing and ends with the same probes as an unbroken one."""
    cache = tmp_path / "runs.jsonl"
    calls: list[tuple] = []

    def stopped_after(n: int):
        def train(job: tuple) -> float:
            if len(calls) == n:
                raise KeyboardInterrupt
            calls.append(job)
            return fake_sparsity(job)

        return train

    args = ("fashion-mnist", "str", "weight_decay", 0.9, 1e-4, 1e-3)
    with pytest.raises(KeyboardInterrupt):
        calibrate(*args, train=stopped_after(14), workers=1, cache=cache, key=repr)
    assert len(cache.read_text().splitlines()) == 14  # two probes and two runs of the third
    with cache.open("a") as f:
        f.write('{"key": "cut short by the kill", "spars')  # a torn last line is skipped
    first = len(calls)
    resumed = calibrate(*args, train=stopped_after(10**6), workers=1, cache=cache, key=repr)
    whole = calibrate(*args, train=fake_sparsity, workers=1, cache=None, key=repr)
    assert resumed == whole
    assert len(calls) - first == 6 * len(whole) - 14  # only the runs not yet finished
    assert len(RunCache(cache).done) == 6 * len(whole)
    row = json.loads(cache.read_text().splitlines()[0])
    assert row["sparsity"] == pytest.approx(fake_sparsity(tuple(row["job"][:-1]) + ((),)))


def test_the_cache_key_is_the_runs_own_key() -> None:
    """A calibration run is kept under the key the runner gives the same configuration: one per
    (value, seed, target, fixed), the same in a later process."""
    from benchsuite.tuning.calibrate import _config, run_key_of

    key = run_key_of("digits")
    job = ("digits", "str", "weight_decay", 5e-3, 0.9, 100, ())
    other = [
        ("digits", "str", "weight_decay", 6e-3, 0.9, 100, ()),
        ("digits", "str", "weight_decay", 5e-3, 0.9, 101, ()),
        ("digits", "str", "weight_decay", 5e-3, 0.95, 100, ()),
        ("digits", "str", "weight_decay", 5e-3, 0.9, 100, (("s_initial", "-3.0"),)),
    ]
    assert key(job) == run_key_of("digits")(job)
    assert len({key(job), *map(key, other)}) == 5
    assert _config(job).seed == 100 and dict(_config(job).hparams)["weight_decay"] == "0.005"


def test_targets_calibrated_together_share_their_probes() -> None:
    """Each target lands as alone, on the same probes, and the three cost fewer runs."""
    calls: list[tuple] = []

    def train(job: tuple) -> float:
        calls.append(job)
        return fake_sparsity(job)

    args = ("fashion-mnist", "str", "weight_decay")
    together = calibrate_targets(
        *args, [0.8, 0.85, 0.9], 1e-4, 1e-3, train=train, workers=1, cache=None, key=repr
    )
    joint = len(calls)
    alone = {}
    for target in (0.8, 0.85, 0.9):
        alone[target] = calibrate(
            *args, target, 1e-4, 1e-3, train=fake_sparsity, workers=1, cache=None, key=repr
        )
        assert together[target][-1].accepted(target) and alone[target][-1].accepted(target)
    separate = 6 * sum(len(p) for p in alone.values())
    assert joint == 6 * len({p.value for ps in together.values() for p in ps}) < separate
    assert together[0.8] == alone[0.8]  # the first target searches exactly as alone
    assert len(together[0.9]) < len(alone[0.9])  # the later ones start from a tight bracket


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "knob", "value"),
    [("str", "weight_decay", 5e-3), ("dst", "penalty", 5e-3), ("cs", "beta_final", 200.0)],
)
def test_a_calibrated_method_trains_the_same_whatever_its_target(
    tiny_preset, tiny_data, method, knob, value
) -> None:
    """What lets targets share their probes: the target only sets the final projection."""
    reached = {
        target: train_run(
            RunConfig(tiny_preset, method, target, 100, hparams=hparam_pairs({knob: value})),
            dataset=tiny_data,
            evaluation=False,
        ).metrics[Metrics.SPARSITY_BEFORE_PROJECTION]
        for target in (0.5, 0.9)
    }
    assert reached[0.5] == reached[0.9]
