"""Isolated training throughput: each method variant's steps timed alone on an idle device.

Trials share cores, so the img/s measured inside a trial reflects its neighbours. The
leaderboard's img/s column comes from here instead: a method's whole plan in miniature
(every phase and hook, a few steps per epoch on real training batches), one variant at a
time, epoch-end hooks amortised over the steps of a real epoch. The variants are timed in
interleaved rounds (a fresh order each round), so a slow spell of a shared machine hits
every variant of that round alike, and the leaderboard compares two variants by a paired
test over the rounds instead of trusting one figure each. The rounds stop once the figures
are precise enough (``enough``): between ``MIN_ROUNDS`` and ``MAX_ROUNDS``, a few seconds per
variant. Other benchsuite commands on the machine wait for the phase, and it for their runs
(``turns``); a phase that could not have the machine to itself is recorded as contended, and
the leaderboard never shows such a figure as isolated. The same functions time the methods in
``benchmarks/step_overhead.py``.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from scipy.stats import t as student_t

from benchsuite import __version__
from benchsuite.core.budget import Budget
from benchsuite.core.identity import RunConfig, autocast_dtype, device_label, make_generator
from benchsuite.core.record import Kinds, Metrics, Params, Tags
from benchsuite.data.base import Dataset
from benchsuite.training import turns
from benchsuite.training.loop import setup, train_step

if TYPE_CHECKING:
    from benchsuite.store.tracking import Tracker


def plan_step_time(
    config: RunConfig,
    data: Any,
    budget: Budget,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    real_steps_per_epoch: int,
    device: torch.device | None = None,
) -> float:
    """Seconds per training step of a miniature plan, epoch-end hooks amortised.

    ``data`` needs only ``num_classes`` and ``input_shape``; ``budget`` is the miniature
    budget (the real number of epochs, few steps each). A method that samples training
    batches in ``on_start`` (SNIP) gets ``batches``.
    """
    device = device or torch.device(config.device)
    model, method, state = setup(config, data, budget, device, lambda _: iter(batches))
    state.evaluate_val = None  # diagnostics evaluation is not training work
    amp = autocast_dtype(config, device)
    cuda = device.type == "cuda"
    model.train()
    step_time = hook_time = 0.0
    for _ in range(budget.epochs):
        for i in range(budget.steps_per_epoch):
            x, y = batches[i % len(batches)]
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            train_step(state, method, x, y, amp, config.preset.channels_last)
            if cuda:
                torch.cuda.synchronize(device)
            step_time += time.perf_counter() - t0
        state.epoch += 1
        t0 = time.perf_counter()
        method.on_epoch_end(state)
        hook_time += time.perf_counter() - t0
    return step_time / budget.total_steps + hook_time / (budget.epochs * real_steps_per_epoch)


# The stopping rule (chosen here): at least 3 rounds (a paired t-test needs n - 1 >= 2 degrees of
# freedom to mean anything), at most 10 (~1 s of steps per variant and round on the small
# presets: a few seconds per variant in all), stopping once every variant's figure is known to
# within +-3 % (95 % interval): neighbours further apart than that are then told apart.
MIN_ROUNDS = 3
MAX_ROUNDS = 10
REL_HALF_WIDTH = 0.03
STEPS_PER_ROUND = 24  # chosen here: steps of one variant's miniature plan per round, at least


def half_widths(per_variant: list[list[float]]) -> list[float]:
    """Each variant's 95 % interval half-width, relative to its mean, over the rounds so far.

    With several variants the interval is the paired one: of each variant's figure divided by
    its round's geometric mean, so a slow spell of the machine (which hits a whole round)
    cancels, as it does in the leaderboard's paired test. One variant: its own interval.
    """
    n = min(len(v) for v in per_variant)
    if n < 2:
        return [math.inf] * len(per_variant)
    if len(per_variant) == 1:
        series = [per_variant[0][:n]]
    else:
        means = [math.exp(statistics.fmean(math.log(v[r]) for v in per_variant)) for r in range(n)]
        series = [[v[r] / means[r] for r in range(n)] for v in per_variant]
    quantile = float(student_t.ppf(0.975, n - 1))
    return [
        quantile * statistics.stdev(x) / math.sqrt(n) / abs(statistics.fmean(x)) for x in series
    ]


def enough(per_variant: list[list[float]]) -> bool:
    """The stopping rule: ``MIN_ROUNDS`` done and every interval within ``REL_HALF_WIDTH``,
    or ``MAX_ROUNDS`` done."""
    n = min((len(v) for v in per_variant), default=0)
    if n >= MAX_ROUNDS or not per_variant:
        return True
    return n >= MIN_ROUNDS and max(half_widths(per_variant)) <= REL_HALF_WIDTH


def interleaved_step_times(
    configs: list[RunConfig],
    data: Any,
    budget: Budget,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    real_steps_per_epoch: int,
    *,
    rounds: int | None = None,
    stop: Callable[[list[list[float]]], bool] = enough,
    device: torch.device | None = None,
    on_round: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """``plan_step_time`` of each config in each round: ``rounds`` rounds, or (None) until
    ``stop`` says the figures suffice (it sees each config's step rates so far).

    A first round (discarded) warms up allocators and caches; every round times each config
    once, in a fresh random order, so a slow spell of the machine hits a whole round.
    """
    result: list[list[float]] = [[] for _ in configs]
    shuffle = random.Random(0)
    r = 0
    while True:
        positions = list(range(len(configs)))
        shuffle.shuffle(positions)
        for i in positions:
            seconds = plan_step_time(
                configs[i], data, budget, batches, real_steps_per_epoch, device
            )
            if r:
                result[i].append(seconds)
        if on_round is not None:
            on_round(r)
        if r and (
            r >= rounds if rounds is not None else stop([[1 / s for s in x] for x in result])
        ):
            return result
        r += 1


def miniature_steps(epochs: int) -> int:
    """Steps per epoch of the miniature plan: ``STEPS_PER_ROUND`` or more steps in all."""
    return max(1, math.ceil(STEPS_PER_ROUND / epochs))


def interleaved_img_per_s(
    configs: list[RunConfig],
    data: Dataset,
    *,
    rounds: int | None = None,
    steps: int | None = None,
) -> list[list[float]]:
    """Images per second of each config's training steps in each round (``rounds``, or as
    many as the stopping rule wants), all on the same ``steps`` real training batches per
    epoch (default ``miniature_steps``)."""
    if not configs:
        return []
    device = torch.device(configs[0].device)
    bs = configs[0].preset.batch_size
    steps = steps or miniature_steps(configs[0].preset.epochs)
    order = make_generator(configs[0].seed, "order")
    augment = make_generator(configs[0].seed, "augment")
    batches = []
    for x, y in data.train_batches(bs, order, augment, device):
        batches.append((x, y))
        if len(batches) == steps:
            break
    budget = Budget(configs[0].preset.epochs, steps)
    real = data.steps_per_epoch(bs)
    times = interleaved_step_times(
        configs, data, budget, batches, real, rounds=rounds, device=device
    )
    return [[bs / seconds for seconds in per_round] for per_round in times]


def contention(alone_: bool, busy_cores: float | None, waited_s: float = turns.WAIT_S) -> str:
    """Why a timing phase's figures are not isolated ("" when they are)."""
    if not alone_:
        return (
            "another benchsuite command kept training or timing on this machine "
            f"(waited {waited_s:g} s for it)"
        )
    if busy_cores is not None and busy_cores > turns.BUSY_CORES_MAX:
        return f"other processes kept {busy_cores:.2f} cores busy meanwhile"
    return ""


def record_isolated(
    configs: list[RunConfig],
    data: Dataset,
    tracker: Tracker,
    *,
    command: str = "",
    rounds: int | None = None,
    wait_s: float | None = None,
) -> int:
    """Measure each (method, variant) of a grid, alone, and record it in the tracking store.

    Called after the grid's trials are done, with their configurations as run (on the CPU it
    times with the trials' own thread count, ``RunConfig.threads``). It waits (up to
    ``wait_s``) until no other benchsuite command trains or times on this machine
    (``turns.alone``). A variant already measured in isolation on this device and thread count
    for this experiment is skipped; one whose record is contended is measured again.
    ``img_per_s`` is the mean over the rounds; the per-round figures are in the tag
    ``benchsuite.img_per_s_rounds`` (JSON), and a phase that could not have the machine to
    itself tags its records ``benchsuite.contended`` with the reason. Returns the number of new
    measurements.
    """

    if not configs:
        return 0
    device = torch.device(configs[0].device)
    threads = torch.get_num_threads()
    if device.type == "cpu":  # the trials' own thread count (--cpus-per-trial)
        torch.set_num_threads(max(1, configs[0].threads))
    try:
        return _record(configs, data, tracker, device, command, rounds, wait_s)
    finally:
        torch.set_num_threads(threads)


def _record(
    configs: list[RunConfig],
    data: Dataset,
    tracker: Tracker,
    device: torch.device,
    command: str,
    rounds: int | None,
    wait_s: float | None,
) -> int:
    label = device_label(device)
    done = set()
    trained = set()
    for r in tracker.runs():
        key = (r.method, r.params.get(Params.VARIANT))
        if r.kind == Kinds.THROUGHPUT and r.finished and not r.tag(Tags.CONTENDED):
            done.add((*key, r.tag(Tags.DEVICE)))
        elif r.kind == Kinds.RUN and r.finished:
            trained.add(key)
    first: dict[tuple[str, str], RunConfig] = {}
    for config in configs:
        first.setdefault((config.method, config.variant()), config)
    todo = {
        key: config for key, config in first.items() if (*key, label) not in done and key in trained
    }  # not measured yet, and trained: a variant whose runs failed has nothing to rank
    if not todo:
        return 0
    wait_s = turns.WAIT_S if wait_s is None else wait_s
    try:
        with turns.alone(wait_s) as got:
            meter = turns.BusyMeter()
            figures = interleaved_img_per_s(list(todo.values()), data, rounds=rounds)
            why = contention(got, meter.others(), wait_s)
    except Exception as exc:  # noqa: BLE001 - a timing problem must not fail the benchmark
        warnings.warn(f"isolated img/s not measured: {exc}", stacklevel=2)
        return 0
    for ((method, variant), config), per_round in zip(todo.items(), figures):
        tags = {
            Tags.KIND: Kinds.THROUGHPUT,
            Tags.DEVICE: label,
            Tags.THREADS: torch.get_num_threads(),
            Tags.VERSION: __version__,
            Tags.COMMAND: command,
            Tags.IMG_PER_S_ROUNDS: json.dumps([round(v, 1) for v in per_round]),
        }
        if why:
            tags[Tags.CONTENDED] = why
        run = tracker.start_run(
            f"throughput {method}[{variant}]",
            {
                Params.METHOD: method,
                Params.VARIANT: variant,
                Params.PRESET: config.preset.name,
                Params.BATCH_SIZE: config.preset.batch_size,
                Params.TARGET_SPARSITY: config.target,
            },
            tags,
        )
        run.log_metrics({Metrics.IMG_PER_S: sum(per_round) / len(per_round)})
        run.end("FINISHED")
    return len(todo)
