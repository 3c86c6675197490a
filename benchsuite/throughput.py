"""Isolated training throughput: each method variant's steps timed alone on an idle device.

Trials share cores, so the img/s measured inside a trial reflects its neighbours. The
leaderboard's img/s column comes from here instead: a method's whole plan in miniature
(every phase and hook, ``steps`` steps per epoch on real training batches), one variant at a
time, epoch-end hooks amortised over the steps of a real epoch. The same function times the
methods in ``benchmarks/step_overhead.py``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from .budget import Budget
from .data import Dataset
from .train import RunConfig, autocast_dtype, make_generator, setup, train_step


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
    budget (the real number of epochs, few steps each).
    """
    device = device or torch.device(config.device)
    model, method, state = setup(config, data, budget, device)
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


def isolated_img_per_s(config: RunConfig, data: Dataset, steps: int = 8, repeats: int = 3) -> float:
    """Images per second of ``config``'s training steps, best of ``repeats`` after a warm-up."""
    device = torch.device(config.device)
    bs = config.preset.batch_size
    order = make_generator(config.seed, "order")
    augment = make_generator(config.seed, "augment")
    batches = []
    for x, y in data.train_batches(bs, order, augment, device):
        batches.append((x, y))
        if len(batches) == steps:
            break
    budget = Budget(config.preset.epochs, steps)
    real = data.steps_per_epoch(bs)
    # the first pass warms up allocators and caches; the best of the rest is the least disturbed
    times = [
        plan_step_time(config, data, budget, batches, real, device) for _ in range(repeats + 1)
    ]
    best = min(times[1:])
    return bs / best


def record_isolated(
    configs: list[RunConfig], data: Dataset, tracker: Any, *, command: str = ""
) -> int:
    """Measure each (method, variant) of a grid once, alone, and record it in MLflow.

    Called after the grid's trials are done, so the device is otherwise idle. A variant
    already measured on this device and thread count for this experiment is skipped.
    Returns the number of new measurements.
    """
    from . import __version__
    from .train import device_label

    device = torch.device(configs[0].device) if configs else torch.device("cpu")
    label = device_label(device)
    runs = tracker.runs()
    done = set()
    trained = set()
    for r in runs:
        kind, finished = r.data.tags.get("benchsuite.kind"), r.info.status == "FINISHED"
        key = (r.data.params.get("method"), r.data.params.get("variant"))
        if kind == "throughput" and finished:
            done.add((*key, r.data.tags.get("benchsuite.device")))
        elif kind == "run" and finished:
            trained.add(key)
    first: dict[tuple[str, str], RunConfig] = {}
    for config in configs:
        first.setdefault((config.method, config.variant()), config)
    measured = 0
    for (method, variant), config in first.items():
        if (method, variant, label) in done or (method, variant) not in trained:
            continue  # measured already, or a variant whose runs failed: nothing to rank
        try:
            ips = isolated_img_per_s(config, data)
        except Exception as exc:  # noqa: BLE001 - a timing problem must not fail the benchmark
            warnings.warn(
                f"isolated img/s of {method}[{variant}] not measured: {exc}", stacklevel=2
            )
            continue
        run = tracker.start_run(
            f"throughput {method}[{variant}]",
            {"method": method, "variant": variant, "preset": config.preset.name,
             "batch_size": config.preset.batch_size, "target_sparsity": config.target},
            {"kind": "throughput", "device": label, "threads": torch.get_num_threads(),
             "version": __version__, "command": command},
        )  # fmt: skip
        run.log_metrics({"img_per_s": ips})
        run.end("FINISHED")
        measured += 1
    return measured
