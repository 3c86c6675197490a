"""Isolated training throughput: each method variant's steps timed alone on an idle device.

Trials share cores, so the img/s measured inside a trial reflects its neighbours. The
leaderboard's img/s column comes from here instead: a method's whole plan in miniature
(every phase and hook, ``steps`` steps per epoch on real training batches), one variant at a
time, epoch-end hooks amortised over the steps of a real epoch. The variants are timed in
interleaved rounds (a fresh order each round), so a slow spell of a shared machine hits
every variant of that round alike, and the leaderboard compares two variants by a paired
test over the rounds instead of trusting one figure each. The same function times the
methods in ``benchmarks/step_overhead.py``.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from benchsuite import __version__
from benchsuite.core.budget import Budget
from benchsuite.core.identity import RunConfig, autocast_dtype, device_label, make_generator
from benchsuite.core.record import Kinds, Metrics, Params, Tags
from benchsuite.data.base import Dataset
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


ROUNDS = 5  # chosen here: ~1 s per variant and round on LeNet-5; enough for a paired test


def interleaved_step_times(
    configs: list[RunConfig],
    data: Any,
    budget: Budget,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    real_steps_per_epoch: int,
    *,
    rounds: int = ROUNDS,
    device: torch.device | None = None,
    on_round: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """``plan_step_time`` of each config in each of ``rounds`` rounds.

    A first round (discarded) warms up allocators and caches; every round times each config
    once, in a fresh random order, so a slow spell of the machine hits a whole round.
    """
    result: list[list[float]] = [[] for _ in configs]
    shuffle = random.Random(0)
    for r in range(rounds + 1):
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
    return result


def interleaved_img_per_s(
    configs: list[RunConfig], data: Dataset, *, rounds: int = ROUNDS, steps: int = 8
) -> list[list[float]]:
    """Images per second of each config's training steps in each of ``rounds`` rounds, all on
    the same ``steps`` real training batches."""
    if not configs:
        return []
    device = torch.device(configs[0].device)
    bs = configs[0].preset.batch_size
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


def record_isolated(
    configs: list[RunConfig],
    data: Dataset,
    tracker: Tracker,
    *,
    command: str = "",
    rounds: int = ROUNDS,
) -> int:
    """Measure each (method, variant) of a grid, alone, and record it in the tracking store.

    Called after the grid's trials are done, so the device is otherwise idle. A variant
    already measured on this device and thread count for this experiment is skipped.
    ``img_per_s`` is the mean over the rounds; the per-round figures are in the tag
    ``benchsuite.img_per_s_rounds`` (JSON). Returns the number of new measurements.
    """

    device = torch.device(configs[0].device) if configs else torch.device("cpu")
    label = device_label(device)
    done = set()
    trained = set()
    for r in tracker.runs():
        key = (r.method, r.params.get(Params.VARIANT))
        if r.kind == Kinds.THROUGHPUT and r.finished:
            done.add((*key, r.tag(Tags.DEVICE)))
        elif r.kind == Kinds.RUN and r.finished:
            trained.add(key)
    first: dict[tuple[str, str], RunConfig] = {}
    for config in configs:
        first.setdefault((config.method, config.variant()), config)
    todo = {
        key: config for key, config in first.items() if (*key, label) not in done and key in trained
    }  # not measured yet, and trained: a variant whose runs failed has nothing to rank
    try:
        figures = interleaved_img_per_s(list(todo.values()), data, rounds=rounds)
    except Exception as exc:  # noqa: BLE001 - a timing problem must not fail the benchmark
        warnings.warn(f"isolated img/s not measured: {exc}", stacklevel=2)
        return 0
    for ((method, variant), config), per_round in zip(todo.items(), figures):
        run = tracker.start_run(
            f"throughput {method}[{variant}]",
            {
                Params.METHOD: method,
                Params.VARIANT: variant,
                Params.PRESET: config.preset.name,
                Params.BATCH_SIZE: config.preset.batch_size,
                Params.TARGET_SPARSITY: config.target,
            },
            {
                Tags.KIND: Kinds.THROUGHPUT,
                Tags.DEVICE: label,
                Tags.THREADS: torch.get_num_threads(),
                Tags.VERSION: __version__,
                Tags.COMMAND: command,
                Tags.IMG_PER_S_ROUNDS: json.dumps([round(v, 1) for v in per_round]),
            },
        )
        run.log_metrics({Metrics.IMG_PER_S: sum(per_round) / len(per_round)})
        run.end("FINISHED")
    return len(todo)
