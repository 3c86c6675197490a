"""The one training loop: every method trains through it, with the same steps and batches.

The loop owns the protocol (docs/protocol.md): it counts steps and images, draws initial weights,
data order, augmentation and method randomness from separate seed-derived generators,
evaluates only the validation split during training, applies the final projection to the
target after ``on_finish``, and reads the test split once, at the very end. It knows no
tracking store: it reports every epoch through one callback (``Progress``) and returns the
final result; recording it is the caller's job (``runner.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.core.budget import Budget, Plan
from benchsuite.core.identity import (
    RunConfig,
    autocast_dtype,
    device_label,
    make_generator,
    numerics,
    preset_budget,
    resolved,
    seed_for,
)
from benchsuite.core.identity import (
    hparam_pairs as hparam_pairs,  # re-exported: a run's interface is here
)
from benchsuite.core.identity import run_key as run_key  # re-exported
from benchsuite.core.method import PruningMethod, TrainState
from benchsuite.core.record import Metrics, Tags
from benchsuite.data.base import Dataset, load_dataset
from benchsuite.models import build_model
from benchsuite.pruning.flops import (
    TrainFlops,
    count_layers,
    flops_dense,
    flops_sparse,
    layer_nonzeros,
    theoretical_speedup,
)
from benchsuite.pruning.masks import (
    achieved_sparsity,
    collapsed_layers,
    count_zeros,
    effective_weights,
    layer_sparsity,
)
from benchsuite.pruning.patterns import CHANNEL, exempt_layers, parse_pattern, project, violations
from benchsuite.training import evaluation
from benchsuite.training.allocator import keep_freed_memory
from benchsuite.training.checkpoints import Checkpoints, prefix_key
from benchsuite.training.evaluation import channels_last_input, recalibrate_bn, unchanged
from benchsuite.training.latency import measure_speedup


class NonFiniteLoss(RuntimeError):
    """A training loss that is NaN or infinite: the run fails instead of recording garbage."""


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """SGD over all parameters in one group, so weight decay reaches thresholds too.

    Multi-tensor (``foreach``) on every device: torch picks it only for accelerators, and on
    the CPU runs a Python loop over the parameters instead; both apply the same kernels in
    the same order (the same values bit for bit, tested), the loop at ~2 µs of dispatch per
    parameter and step more (LeNet-5: 99 → 78 µs a step).
    """
    opt = config.preset.optimizer
    return torch.optim.SGD(
        model.parameters(),
        lr=opt.lr,
        momentum=opt.momentum,
        weight_decay=opt.weight_decay,
        nesterov=opt.use_nesterov,
        foreach=True,
    )


@dataclass
class Progress:
    """What the loop reports after every epoch: the curve point (``metrics`` at ``step``) for
    the run's record, the rest for progress displays and Ray Tune. ``replayed``: an epoch of
    a cached dense prefix (docs/protocol.md, Equal budget), reported again for the curves but
    not trained in this process."""

    epoch: int
    epochs: int
    step: int
    metrics: dict[str, float]
    replayed: bool = False

    @property
    def val_accuracy(self) -> float:
        return self.metrics[Metrics.VAL_ACCURACY]

    @property
    def train_loss(self) -> float:
        return self.metrics[Metrics.TRAIN_LOSS]

    @property
    def sparsity(self) -> float:
        return self.metrics[Metrics.SPARSITY]


EpochCallback = Callable[[Progress], None]


@dataclass
class RunResult:
    """A finished run: final metrics, tags, per-layer sparsity and the finalized model, for
    the caller to record."""

    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = None
    deployed: nn.Module | None = None  # a channel run's smaller model, saved beside ``model``
    input_shape: tuple[int, ...] = ()  # one sample's, to save ``deployed`` with


def setup(
    config: RunConfig,
    data: Dataset,
    budget: Budget,
    device: torch.device,
    train_batches: Callable[[torch.Generator], Any] | None = None,
) -> tuple[nn.Module, PruningMethod, TrainState]:
    """Plan, model from the seed's init stream, method prepared, optimizer built (in that order).

    ``train_batches`` (generator → one epoch of batches) is what ``TrainState.sample_batches``
    reads; default: ``data``'s training split. Also keeps this process's freed memory
    (``allocator``): every training path passes here.
    """
    keep_freed_memory()
    preset = config.preset
    method_cls = config.method_cls()
    hp = config.hp()
    plan = method_cls.plan(budget, hp, config.target, preset.schedule)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(config.seed, "init"))
        model = build_model(preset.model, data.num_classes, data.input_shape)
    model.to(device)
    if preset.channels_last:
        model.to(memory_format=torch.channels_last)
    method = method_cls(hp, config.target, plan)
    state = TrainState(
        model=model,
        budget=budget,
        plan=plan,
        lr=plan.lr.copy(),
        generator=make_generator(config.seed, "method"),
        optimizer_factory=lambda: make_optimizer(model, config),
        train_batches=train_batches
        or (lambda gen: data.train_batches(preset.batch_size, gen, gen, device)),
        pattern=parse_pattern(config.pattern),
        input_shape=tuple(data.input_shape),
    )
    method.on_start(state)
    state.optimizer = make_optimizer(model, config)
    return model, method, state


def train_step(
    state: TrainState,
    method: PruningMethod,
    x: torch.Tensor,
    y: torch.Tensor,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """One counted optimizer step with every method hook in its place; returns the loss."""
    lr = float(state.lr[state.step])
    for group in state.optimizer.param_groups:  # the optimizer may have been replaced
        group["lr"] = lr
    if channels_last:
        x = channels_last_input(x)
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = F.cross_entropy(state.model(x), y)
        reg = method.loss_term(state)
        total = loss if reg is None else loss + reg
    backward_and_step(state, method, total)
    return loss.detach()


def backward_and_step(state: TrainState, method: PruningMethod, total: torch.Tensor) -> None:
    """Backward, the gradient hooks in their order, the optimizer step, the after-step hook."""
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if state.masks is not None:
        state.masks.mask_grads()
    method.on_backward(state)
    state.optimizer.step()
    state.step += 1
    method.on_step_end(state)


@dataclass
class Loop:
    """One run in progress: what its epochs, the dense-phase cache and the finish share."""

    config: RunConfig
    data: Dataset
    device: torch.device
    model: nn.Module
    method: PruningMethod
    state: TrainState
    on_epoch: EpochCallback | None
    evaluation: bool
    amp_dtype: torch.dtype | None
    order: torch.Generator  # the data order stream
    augment: torch.Generator  # the augmentation stream
    images: int = 0  # trained in this process
    cached_images: int = 0  # trained by the cached prefix
    step_time: float = 0.0
    train_flops: TrainFlops = field(default_factory=TrainFlops)  # densities sampled per epoch
    curves: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    @property
    def plan(self) -> Plan:
        return self.state.plan

    def validate(self) -> float:
        preset = self.config.preset
        batches = self.data.val_batches(preset.eval_batch_size, self.device)
        return evaluation.evaluate(self.model, batches, self.amp_dtype, preset.channels_last)[0]

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of training batches, in the order and augmentation of the run's streams."""
        return self.data.train_batches(
            self.config.preset.batch_size, self.order, self.augment, self.device
        )

    def report(self, step: int, metrics: dict[str, float], replayed: bool = False) -> None:
        """One epoch's curve point, to the curves and the caller's callback."""
        self.curves.append((step, metrics))
        if self.on_epoch is not None:
            self.on_epoch(Progress(len(self.curves), self.plan.epochs, step, metrics, replayed))


def start(
    config: RunConfig, dataset: Dataset | None, on_epoch: EpochCallback | None, evaluation: bool
) -> Loop:
    """The run set up (``setup``) with its data order and augmentation streams."""
    device = torch.device(config.device)
    preset = config.preset
    data = dataset or load_dataset(preset.dataset, config.data_dir, split_seed=config.split_seed)
    budget = preset_budget(preset, data)
    model, method, state = setup(config, data, budget, device)
    loop = Loop(
        config,
        data,
        device,
        model,
        method,
        state,
        on_epoch,
        evaluation,
        amp_dtype=autocast_dtype(config, device),
        order=make_generator(config.seed, "order"),
        augment=make_generator(config.seed, "augment"),
    )
    if evaluation:
        state.evaluate_val = loop.validate
    return loop


def train_run(
    config: RunConfig,
    *,
    dataset: Dataset | None = None,
    cache_dir: Path | None = None,
    on_epoch: EpochCallback | None = None,
    evaluation: bool = True,
) -> RunResult:
    """Train, finalize, project and test one run; every epoch is reported to ``on_epoch``.

    ``evaluation=False`` skips every validation and test pass (and the diagnostics that need
    them), so the result has no accuracies: only for measuring the loop itself
    (benchmarks/harness_overhead.py).
    """
    wall_start = time.perf_counter()
    loop = start(config, dataset, on_epoch, evaluation)
    plan, state = loop.plan, loop.state
    ckpt = Checkpoints(cache_dir)
    key = cache_key(config, plan, loop.data.fingerprint)
    restored = ckpt.load(key) if key else None
    if restored is not None:
        resume(loop, restored)
    loop.model.train()
    while state.epoch < plan.epochs:  # a plan's extra steps may end inside its last epoch
        train_loss = train_epoch(loop)
        if key is not None and state.epoch == plan.cache_epoch and restored is None:
            ckpt.save(key, snapshot(loop, train_loss))
        end_epoch(loop, train_loss)
    result = finish(loop, wall_start)
    result.tags[Tags.CACHED_DENSE] = str(restored is not None).lower()
    if ckpt.warning:
        result.tags[Tags.CACHE_WARNING] = ckpt.warning
    if state.step != plan.total_steps:  # the protocol's invariant; never silently violated
        raise RuntimeError(f"ran {state.step} steps, the plan is {plan.total_steps}")
    return result


def cache_key(config: RunConfig, plan: Plan, fingerprint: str) -> str | None:
    """The dense-phase cache entry of the run's prefix, or None where its plan shares none."""
    if plan.cache_epoch is None or plan.cache_key is None:
        return None
    prefix = {**resolved(config), "method": plan.cache_key, "hparams": None, "target": None}
    prefix.pop("pattern", None)  # a dense prefix is the same whatever the pattern
    prefix["data"] = fingerprint
    prefix["numerics"] = numerics(config)  # a prefix trained with other numerics differs
    return prefix_key(prefix)


def snapshot(loop: Loop, train_loss: float) -> dict[str, Any]:
    """The loop's state at the end of the cached prefix, before that epoch's end hooks."""
    state = loop.state
    return {
        "model": loop.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "method": loop.method.state_dict(),
        "order": loop.order.get_state(),
        "augment": loop.augment.get_state(),
        "method_rng": state.generator.get_state(),
        "images": loop.images,
        "curves": list(loop.curves),
        "train_loss": train_loss,
        "train_flops": list(loop.train_flops.epochs),
    }


def resume(loop: Loop, restored: dict[str, Any]) -> None:
    """Continue from a ``snapshot``: its curves replayed, then the prefix's last epoch end."""
    state, plan = loop.state, loop.plan
    loop.model.load_state_dict(restored["model"])
    state.optimizer.load_state_dict(restored["optimizer"])
    loop.method.load_state_dict(restored["method"])
    loop.order.set_state(restored["order"])
    loop.augment.set_state(restored["augment"])
    state.generator.set_state(restored["method_rng"])
    state.epoch = plan.cache_epoch
    state.step = plan.budget.steps(state.epoch)
    loop.cached_images = restored["images"]
    loop.train_flops.epochs.extend(restored["train_flops"])
    for step, metrics in restored["curves"]:
        loop.report(step, metrics, replayed=True)
    end_epoch(loop, restored["train_loss"])


def train_epoch(loop: Loop) -> float:
    """One epoch's counted steps (fewer where the plan ends inside it); its mean loss."""
    state, preset, device = loop.state, loop.config.preset, loop.device
    cuda = device.type == "cuda"
    loss_sum = torch.zeros((), device=device)
    epoch_start = state.step
    nonzeros = layer_nonzeros(loop.model)
    epoch_images, dense_grads = loop.images, state.dense_grad_steps
    for x, y in loop.batches():
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss = train_step(state, loop.method, x, y, loop.amp_dtype, preset.channels_last)
        if cuda:
            torch.cuda.synchronize(device)
        loop.step_time += time.perf_counter() - t0
        loop.images += y.shape[0]
        loss_sum += loss
        if state.step == loop.plan.total_steps:
            break
    state.epoch += 1
    loop.train_flops.add(
        nonzeros,
        loop.images - epoch_images,
        (state.dense_grad_steps - dense_grads) * preset.batch_size,
    )
    train_loss = float(loss_sum) / (state.step - epoch_start)
    if not math.isfinite(train_loss):
        raise NonFiniteLoss(f"training loss is {train_loss} in epoch {state.epoch}")
    return train_loss


def end_epoch(loop: Loop, train_loss: float) -> None:
    """Epoch-end work after the counted steps: the method's hook, validation, the report."""
    state = loop.state
    state.logged.clear()
    loop.method.on_epoch_end(state)
    val_acc = state.evaluate_val() if state.evaluate_val else float("nan")
    metrics = {
        Metrics.TRAIN_LOSS: train_loss,
        Metrics.LR: float(state.lr[state.step - 1]),
        Metrics.SPARSITY: achieved_sparsity(loop.model),
        Metrics.VAL_ACCURACY: val_acc,
        **state.logged,
    }
    loop.report(state.step, metrics)


def finalize_and_project(loop: Loop) -> dict[str, float]:
    """``on_finish``, the projection to the target, the optional BatchNorm recalibration, and
    the validation of the result; the metrics they measure."""
    model, config = loop.model, loop.config
    # The last epoch's validation already measured these weights; if finalize leaves them
    # as they are, it is the validation of the finalized model.
    validated = (
        {k: t.detach().clone() for k, t in model.state_dict().items()} if loop.evaluation else None
    )
    loop.method.on_finish(loop.state)
    zeros_finalized, total = count_zeros(effective_weights(model))
    # what the method reached on its own
    measured = {Metrics.SPARSITY_BEFORE_PROJECTION: zeros_finalized / total}
    val_finalized = None
    if validated is not None:
        if loop.curves and unchanged(validated, model.state_dict()):
            val_finalized = loop.curves[-1][1][Metrics.VAL_ACCURACY]
        else:
            val_finalized = loop.validate()
        del validated
    pattern = loop.state.pattern
    example = torch.zeros(1, *loop.data.input_shape, device=loop.device)
    project(model, config.target, pattern, example)
    if pattern.structured:
        broken = violations(model, pattern, example)
        measured[Metrics.PATTERN_VIOLATIONS] = float(broken)
        measured[Metrics.PATTERN_VALID] = float(broken == 0)
    if val_finalized is not None:
        # The projection only zeroes entries: it changed the model iff it added zeros. A
        # second validation pass (for projection_drop) only then.
        projected = count_zeros(effective_weights(model))[0] != zeros_finalized
        val_projected = loop.validate() if projected else val_finalized
        measured[Metrics.VAL_ACCURACY] = val_projected
        measured[Metrics.PROJECTION_DROP] = val_finalized - val_projected  # in percentage points
    if config.bn_recalibration_batches:
        order, augment = (
            torch.Generator().manual_seed(seed_for(config.seed, stream) ^ 0x5EED)
            for stream in ("order", "augment")
        )
        bn_images = recalibrate_bn(
            model,
            loop.data,
            config.preset.batch_size,
            config.bn_recalibration_batches,
            (order, augment),
            loop.device,
        )
        if bn_images:
            measured[Metrics.BN_RECAL_IMAGES] = float(bn_images)
            if Metrics.VAL_ACCURACY in measured:
                measured[Metrics.VAL_ACCURACY] = loop.validate()
    return measured


def finish(loop: Loop, wall_start: float) -> RunResult:
    """The finished run: finalized, projected, tested once, with every final metric."""
    model, config, state, data = loop.model, loop.config, loop.state, loop.data
    preset = config.preset
    measured = finalize_and_project(loop)
    example = next(iter(data.val_batches(preset.eval_batch_size, loop.device)))[0]
    layers = count_layers(model, example[:1])
    test_acc = test_top5 = None
    if loop.evaluation and config.evaluate_test:
        batches = data.test_batches(preset.eval_batch_size, loop.device)
        test_acc, test_top5 = evaluation.evaluate(
            model, batches, loop.amp_dtype, preset.channels_last
        )
    collapsed = collapsed_layers(model)
    flops_train, flops_dense_train = loop.train_flops.totals(
        {la.name: la.dense_macs for la in layers}
    )
    metrics = {
        **({} if test_acc is None else {Metrics.TEST_ACCURACY: test_acc}),
        **measured,
        Metrics.SPARSITY: achieved_sparsity(model),
        Metrics.FLOPS_DENSE: float(flops_dense(layers)),
        Metrics.FLOPS_SPARSE: float(flops_sparse(layers)),
        # in-trial throughput of the steps this process ran (a cached prefix is excluded)
        Metrics.TRAIN_IMG_PER_S: loop.images / loop.step_time if loop.step_time > 0 else 0.0,
        Metrics.TRAIN_STEPS: float(state.step),
        Metrics.TRAIN_IMAGES: float(loop.images + loop.cached_images),
        Metrics.WALL_TIME_S: time.perf_counter() - wall_start,
        Metrics.COLLAPSED_LAYERS: float(len(collapsed)),
        Metrics.NUM_CLASSES: float(data.num_classes),
        Metrics.TRAIN_FLOPS: flops_train,
        Metrics.TRAIN_COST: flops_train / flops_dense_train if flops_dense_train else 1.0,
        **state.recorded,
    }
    if data.num_classes >= 5 and test_top5 is not None:
        metrics[Metrics.TEST_TOP5] = test_top5
    speedup = theoretical_speedup(layers)
    if speedup is not None:
        metrics[Metrics.THEORETICAL_SPEEDUP] = speedup
    tags = {
        Tags.DEVICE: device_label(loop.device),
        Tags.COLLAPSED: ",".join(collapsed),  # empty when no layer collapsed
        **{f"{Tags.NUMERICS}{k}": str(v) for k, v in numerics(config).items()},
    }
    if state.pattern.structured:
        tags[Tags.PATTERN_EXEMPT] = ",".join(exempt_layers(model, state.pattern))
    deployed = None
    if loop.evaluation and config.evaluate_test:  # benchmark runs: measured beside theoretical
        try:
            speed, speed_tags, form = measure_speedup(
                model, config, data.num_classes, tuple(data.input_shape), loop.device
            )
        except Exception as exc:  # noqa: BLE001 - a timing problem never loses a trained run
            tags[Tags.MEASURED_SPEEDUP_UNAVAILABLE] = f"{type(exc).__name__}: {exc}"
        else:
            metrics.update(speed)
            tags.update(speed_tags)
            if state.pattern.kind == CHANNEL:  # a smaller model of plain modules: saved
                deployed = form.module
    return RunResult(metrics, tags, layer_sparsity(model), model, deployed, tuple(data.input_shape))
