"""Calibrate the sparsity-steering hyperparameter of a method that does not target a sparsity.

STR, DST and CS reach a sparsity through a hyperparameter (STR's weight decay, DST's penalty,
CS's mask initialisation), and the harness's final projection can only top a model up to the
target, never take an overshoot back. So a preset stores, per target, the value that lands the
method on the target, found here on **calibration seeds** (never the benchmark's seeds 0..N-1
nor the tuning seeds), judged on the sparsity the method reaches on its own, never on accuracy:
no split is evaluated at all.

What a benchmark cell reports is the sparsity after the projection, max(s, S) per seed, and a
method such as STR spreads ~1.5 pp across seeds at one knob value with a long tail above S. So
the search aims that quantity, mean(max(s_i, S)) over six calibration seeds, at S + 0.25 pp (a
bracketed secant on its logit against the knob, or the knob's log for a log-scale knob), and
accepts a value when it lies in [S, S + 0.5 pp] and the method itself reaches at least S − 1 pp
on average (so the projection only tops up a little).

    benchsuite calibrate --preset fashion-mnist --method str --knob weight_decay \
        --target 0.9 --low 5e-3 --high 8e-3

prints one line per probe and the TOML block for the preset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from benchsuite.core.identity import RunConfig, hparam_pairs
from benchsuite.core.record import Metrics
from benchsuite.presets import load_preset
from benchsuite.training.loop import train_run

# Benchmark seeds are 0..N-1, tuning seeds 1000+. Six, not three: three seeds of STR at one λ
# put the mean after the projection anywhere in ~[S, S + 1 pp] (docs/methods.md, str).
CALIBRATION_SEEDS = (100, 101, 102, 103, 104, 105)
AIM_ABOVE = 0.0025  # aim the mean after the projection at S + 0.25 pp
ACCEPT_ABOVE = 0.005  # the mean after the projection within [S, S + 0.5 pp]
ACCEPT_BELOW = 0.01  # the method's own mean at least S − 1 pp


@dataclass(frozen=True)
class Probe:
    value: float
    sparsities: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.sparsities) / len(self.sparsities)

    def projected_mean(self, target: float) -> float:
        return sum(max(s, target) for s in self.sparsities) / len(self.sparsities)

    def reported(self, target: float) -> float:
        """What the search steers: logit of the mean after the projection, or of the method's
        own mean while every seed is below ``target`` (where the former is flat at ``target``)."""
        if max(self.sparsities) < target:
            return _logit(self.mean)
        return _logit(self.projected_mean(target))

    def accepted(self, target: float) -> bool:
        return (
            self.projected_mean(target) <= target + ACCEPT_ABOVE
            and self.mean >= target - ACCEPT_BELOW
        )


def _train(args: tuple[str, str, str, float, float, int, tuple[tuple[str, str], ...]]) -> float:
    """One calibration run (in a worker process, one thread): the sparsity before projection."""
    preset_name, method, knob, value, target, seed, fixed = args
    torch.set_num_threads(1)
    config = RunConfig(
        preset=load_preset(preset_name),
        method=method,
        target=target,
        seed=seed,
        hparams=hparam_pairs({**dict(fixed), knob: value}),
    )
    return train_run(config, evaluation=False).metrics[Metrics.SPARSITY_BEFORE_PROJECTION]


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def calibrate(
    preset: str,
    method: str,
    knob: str,
    target: float,
    low: float,
    high: float,
    *,
    log_scale: bool = True,
    increasing: bool = True,
    fixed: tuple[tuple[str, str], ...] = (),
    max_probes: int = 7,
    workers: int = 2,
    train: Callable[[tuple], float] | None = None,
) -> list[Probe]:
    """Probe the knob until a value is accepted (or ``max_probes``); returns every probe.

    ``train`` replaces the real runs (in this process), e.g. by a known function in a test.
    """
    aim = _logit(target + AIM_ABOVE)

    def x(v: float) -> float:
        return math.log(v) if log_scale else v

    def v_of(xx: float) -> float:
        return math.exp(xx) if log_scale else xx

    probes: list[Probe] = []
    with ProcessPoolExecutor(workers) as pool:
        run_all = (lambda jobs: map(train, jobs)) if train else (lambda j: pool.map(_train, j))

        def probe(value: float) -> Probe:
            jobs = [(preset, method, knob, value, target, s, fixed) for s in CALIBRATION_SEEDS]
            p = Probe(value, tuple(run_all(jobs)))
            probes.append(p)
            print(
                f"{method} {target:g} {knob}={value:.6g}: "
                + ", ".join(f"{s:.2%}" for s in p.sparsities)
                + f" → mean {p.mean:.2%}, after projection {p.projected_mean(target):.2%}"
                + ("  ✓" if p.accepted(target) else ""),
                flush=True,
            )
            return p

        a, b = probe(low), probe(high)
        sign = 1.0 if increasing else -1.0
        for _ in range(max_probes - 2):
            if a.accepted(target) or b.accepted(target):
                break
            fa, fb = sign * (a.reported(target) - aim), sign * (b.reported(target) - aim)
            if fa > 0 and fb > 0:  # both above: extend below
                a, b = probe(v_of(2 * x(a.value) - x(b.value))), a
                continue
            if fa < 0 and fb < 0:  # both below: extend above
                a, b = b, probe(v_of(2 * x(b.value) - x(a.value)))
                continue
            t = fa / (fa - fb)  # secant on the logit, kept inside the bracket
            t = min(max(t, 0.15), 0.85)
            c = probe(v_of(x(a.value) + t * (x(b.value) - x(a.value))))
            fc = sign * (c.reported(target) - aim)
            if (fc < 0) == (fa < 0):
                a = c
            else:
                b = c
    return probes


def toml_block(method: str, target: float, knob: str, probes: list[Probe]) -> str:
    best = min(
        probes,
        key=lambda p: (not p.accepted(target), abs(p.projected_mean(target) - target - AIM_ABOVE)),
    )
    lines = [
        f"# {method} {target:g}: {knob} on calibration seeds {list(CALIBRATION_SEEDS)} "
        "(sparsity before projection per seed → mean):"
    ]
    for p in probes:
        lines.append(
            f"#   {p.value:.6g} → "
            + ", ".join(f"{s:.2%}" for s in p.sparsities)
            + f" → {p.mean:.2%}"
            + (" ✓" if p.accepted(target) else "")
        )
    lines.append(f'[calibration.{method}."{target:g}"]')
    lines.append(f"{knob} = {best.value:.6g}")
    return "\n".join(lines)
