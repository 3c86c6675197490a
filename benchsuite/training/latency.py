"""Measured speedup: the deployable model's inference latency against the dense model's, on the
device the run trained on (docs/performance.md, Measured speedup).

At the end of every benchmark run, after its test pass, the run's deployable form
(``pruning/deploy.py``) and a dense model of the same architecture are timed at batch 1 and at
the preset's evaluation batch, in interleaved rounds like the isolated img/s: each round times
the two models back to back at each batch, in a fresh random order, so a slow spell of a
shared machine hits dense and pruned alike. A timing is the fastest of ``BEST_OF`` runs of
forwards lasting ``MIN_TIMING_S`` each. The speedup is the median over the rounds of the
dense ÷ deployable latency; the per-round figures are kept with the run.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from benchsuite.core.identity import RunConfig, seed_for
from benchsuite.core.record import Metrics, Tags
from benchsuite.models import build_model
from benchsuite.pruning.channels import parameter_count
from benchsuite.pruning.deploy import Deployable, deployable
from benchsuite.pruning.patterns import CHANNEL, NM, parse_pattern

ROUNDS = 7  # chosen here: an odd count for the median; ~2 s a run on LeNet-5 (1 thread)
MIN_TIMING_S = 0.01  # chosen here: one timing's forwards last at least this long
BEST_OF = 3  # chosen here: a timing is the fastest of 3 (timeit's rule: slower ones were disturbed)


@dataclass
class Latency:
    """Seconds per forward of the dense and the deployable model at one batch size, per round."""

    batch: int
    dense: list[float] = field(default_factory=list)
    model: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [d / m for d, m in zip(self.dense, self.model)]

    @property
    def speedup(self) -> float:
        """The median over the rounds of dense ÷ deployable, each pair timed back to back."""
        return statistics.median(self.ratios)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    model: nn.Module, x: Tensor, reps: int, device: torch.device, best_of: int = 1
) -> float:
    """Seconds per forward of ``model`` on ``x``: the fastest of ``best_of`` runs of ``reps``."""
    fastest = float("inf")
    for _ in range(best_of):
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            model(x)
        _sync(device)
        fastest = min(fastest, (time.perf_counter() - start) / reps)
    return fastest


def interleaved_latency(
    dense: nn.Module,
    model: nn.Module,
    inputs: list[Tensor],
    device: torch.device,
    rounds: int | None = None,
) -> list[Latency]:
    """Per input batch, the two models timed back to back once per round, in a random order
    (batches too), after a warm-up that fixes each batch's repetitions from the dense model's
    time (the same for both: equal work per timing)."""
    for m in (dense, model):
        m.eval()
    out = [Latency(int(x.shape[0])) for x in inputs]
    reps = [1] * len(inputs)
    order = random.Random(0)
    with torch.inference_mode():
        for i, x in enumerate(inputs):  # first calls: lazy initialisation, kernel selection
            for m in (dense, model, dense, model):
                m(x)
            single = time_forward(dense, x, 1, device, best_of=3)
            reps[i] = max(1, math.ceil(MIN_TIMING_S / max(single, 1e-7)))
        for _ in range(ROUNDS if rounds is None else rounds):
            batches = list(range(len(inputs)))
            order.shuffle(batches)
            for i in batches:
                pair = [("dense", dense), ("model", model)]
                order.shuffle(pair)
                for which, m in pair:
                    seconds = time_forward(m, inputs[i], reps[i], device, best_of=BEST_OF)
                    getattr(out[i], which).append(seconds)
    return out


def measure_speedup(
    model: nn.Module,
    config: RunConfig,
    num_classes: int,
    input_shape: tuple[int, ...],
    device: torch.device,
    rounds: int | None = None,
) -> tuple[dict[str, float], dict[str, str], Deployable]:
    """The run's deployable form, timed against a dense model: (metrics, tags, the form).

    Inputs are random (from a fixed generator; values do not change a dense kernel's time),
    batch 1 and the preset's evaluation batch, in the run's memory format.
    """
    preset = config.preset
    pattern = parse_pattern(config.pattern)
    gen = torch.Generator().manual_seed(seed_for(config.seed, "method") ^ 0x1A7E)
    big = preset.eval_batch_size
    xs = torch.randn(big, *input_shape, generator=gen)
    fmt = torch.channels_last if preset.channels_last and xs.dim() == 4 else torch.preserve_format
    example = xs[:1].to(device).contiguous(memory_format=fmt)
    deploy = deployable(model, pattern, device, example)
    tags = {Tags.DEPLOYED_FORM: deploy.form, Tags.LATENCY_DTYPE: str(deploy.dtype).split(".")[-1]}
    metrics: dict[str, float] = {}
    if pattern.kind == CHANNEL and deploy.module is not None:
        metrics[Metrics.PARAMS_DEPLOYED] = float(parameter_count(deploy.module))
        metrics[Metrics.PARAMS_DENSE] = float(parameter_count(model))
    if deploy.module is None:
        tags[Tags.MEASURED_SPEEDUP_UNAVAILABLE] = deploy.unavailable or "no deployable form"
        return metrics, tags, deploy
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(config.seed, "init"))
        dense = build_model(preset.model, num_classes, input_shape)
    deployed = deploy.module
    # the semi-structured form is built on the device in its dtype; its weights' tensor
    # subclass is left alone
    for m in (dense,) if pattern.kind == NM else (dense, deployed):
        m.to(device=device, dtype=deploy.dtype)
        if fmt is torch.channels_last:
            m.to(memory_format=torch.channels_last)
    inputs = [
        t.to(device=device, dtype=deploy.dtype).contiguous(memory_format=fmt) for t in (xs[:1], xs)
    ]
    if deployed is not model:  # how far the deployed form is from the model it came from
        with torch.inference_mode():
            flags = {m: m.training for m in model.modules()}
            model.eval()
            ref = model(inputs[1].to(next(model.parameters()).dtype))
            for m, flag in flags.items():
                m.training = flag
            diff = (deployed.eval()(inputs[1]).float() - ref.float()).abs().max()
        metrics[Metrics.DEPLOYED_MAX_ABS_DIFF] = float(diff)
    one, many = interleaved_latency(dense, deployed, inputs, device, rounds)
    metrics[Metrics.MEASURED_SPEEDUP_B1] = one.speedup
    metrics[Metrics.MEASURED_SPEEDUP] = many.speedup
    tags[Tags.LATENCY_BATCH] = str(many.batch)
    tags[Tags.LATENCY_ROUNDS] = json.dumps(
        {
            f"{which}_ms_b{lat.batch}": [round(v * 1e3, 4) for v in getattr(lat, which)]
            for lat in (one, many)
            for which in ("dense", "model")
        }
    )
    return metrics, tags, deploy
