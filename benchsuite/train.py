"""The one training loop: every method trains through it, with the same steps and batches.

The loop owns the protocol (docs/protocol.md): it counts steps and images, draws initial weights,
data order, augmentation and method randomness from separate seed-derived generators,
evaluates only the validation split during training, applies the final projection to the
target after ``finalize``, and reads the test split once, at the very end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .allocator import keep_freed_memory
from .budget import Budget
from .data import Dataset, load_dataset
from .flops import (
    TrainFlops,
    count_layers,
    flops_dense,
    flops_sparse,
    layer_nonzeros,
    theoretical_speedup,
)
from .method import PruningMethod, TrainState, parse_hparams, variant_name
from .models import build_model
from .presets import Preset
from .registry import get_method
from .sparsity import (
    achieved_sparsity,
    collapsed_layers,
    count_zeros,
    effective_weights,
    layer_sparsity,
    project_to_sparsity,
)
from .tracking import TrackedRun

SEED_STREAMS = ("init", "order", "augment", "method")


class NonFiniteLoss(RuntimeError):
    pass


@dataclass(frozen=True)
class RunConfig:
    """One run: (method, hyperparameter variant, target sparsity, seed) on one preset."""

    preset: Preset
    method: str
    target: float
    seed: int
    hparams: tuple[tuple[str, str], ...] = ()  # the user's overrides (--hp, --tuned): the variant
    calibrated: tuple[tuple[str, str], ...] = ()  # the preset's per-target calibration (STR, DST)
    data_dir: str | None = None
    device: str = "cpu"
    split_seed: int = 42
    tuned: bool = False
    bn_recalibration_batches: int = 0  # optional, for every method alike (off by default)
    evaluate_test: bool = True  # False while tuning: the test split is never read (not in run_key)
    threads: int = 1  # torch threads of the trial (--cpus-per-trial): part of the numerics

    def method_cls(self) -> type[PruningMethod]:
        return get_method(self.method)

    def hp(self) -> Any:
        return parse_hparams(
            self.method_cls().Hparams, {**dict(self.calibrated), **dict(self.hparams)}
        )

    def variant(self) -> str:
        """The leaderboard row: the user's non-default hyperparameters (not the calibration)."""
        return variant_name(parse_hparams(self.method_cls().Hparams, dict(self.hparams)))

    def label(self) -> str:
        v = self.variant()
        return (
            f"{self.method}"
            + ("" if v == "default" else f"[{v}]")
            + f"@{self.target:g}/s{self.seed}"
        )


def hparam_pairs(values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Hyperparameter overrides as ``RunConfig`` holds them: sorted (name, text) pairs."""
    return tuple(sorted((k, str(v)) for k, v in values.items()))


def seed_for(seed: int, stream: str) -> int:
    """Independent generator seeds per stream, derived from the run seed."""
    index = SEED_STREAMS.index(stream)
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def make_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed_for(seed, stream))


# Preset fields that never change a run's numbers: prose, and the per-target calibration of
# every method (a run's own calibrated values are in its resolved hyperparameters).
NOT_IN_RUN_KEY = ("description", "sources", "calibration")


def resolved(config: RunConfig) -> dict[str, Any]:
    """The fully resolved configuration that defines a run (without data fingerprint).

    Recalibrating STR in a preset, or rewording a source, leaves every other run's key alone.
    """
    preset = {k: v for k, v in config.preset.to_dict().items() if k not in NOT_IN_RUN_KEY}
    return {
        "preset": preset,
        "split_seed": config.split_seed,
        "method": config.method,
        "hparams": dataclasses.asdict(config.hp()),
        "target": config.target,
        "seed": config.seed,
        "bn_recalibration_batches": config.bn_recalibration_batches,
        "version": __version__,
    }


def numerics(config: RunConfig) -> dict[str, Any]:
    """What changes the numbers without changing the configuration (docs/protocol.md, Run
    identity): torch's version, the device (its name on a GPU, the CPU's vector capability),
    the CPU threads (their count changes reduction order) and the autocast dtype."""
    device = torch.device(config.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "cuda"
        threads = None  # the GPU's kernels do the arithmetic, not the CPU threads
    else:
        name = f"{device.type}:{torch.backends.cpu.get_cpu_capability()}"
        threads = config.threads
    amp = autocast_dtype(config, device)
    return {"torch": torch.__version__, "device": name, "threads": threads,
            "amp": None if amp is None else str(amp).removeprefix("torch.")}  # fmt: skip


def run_key(config: RunConfig, fingerprint: str, total_steps: int) -> str:
    blob = json.dumps(
        {
            **resolved(config),
            "data": fingerprint,
            "total_steps": total_steps,
            "numerics": numerics(config),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


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


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{torch.get_num_threads()} threads"


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` with channels_last strides, so a convolution runs channels_last whatever its
    weight's strides say. A one-channel batch is already "contiguous" in both layouts, and
    ``contiguous(memory_format=...)`` keeps its NCHW strides: then a first conv whose weight
    a method recomputed with NCHW strides would switch the whole network to NCHW (2× slower
    pooling on LeNet-5). For one channel the same memory gets channels_last strides, no copy."""
    if x.dim() != 4 or x.stride(1) == 1:
        return x
    _, c, h, w = x.shape
    if c == 1 and x.is_contiguous():
        return x.as_strided(x.shape, (h * w, 1, w, 1))
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) in eval mode; restores the training flag."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    for x, y in batches:
        if channels_last:
            x = channels_last_input(x)
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(x)
        k = min(5, out.shape[1])
        top = out.topk(k, dim=1).indices
        hit = top == y[:, None]
        correct1 += int(hit[:, 0].sum())
        correct5 += int(hit.any(dim=1).sum())
        total += y.numel()
    model.train(was_training)
    return 100.0 * correct1 / total, 100.0 * correct5 / total


@dataclass
class Progress:
    """What the loop reports after every epoch (for rich progress / Ray reports)."""

    epoch: int
    epochs: int
    step: int
    val_accuracy: float
    train_loss: float
    sparsity: float


@dataclass
class RunResult:
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = None


CACHE_FIELDS = {"model", "optimizer", "method", "order", "augment", "method_rng", "images",
                "curves", "train_loss"}  # fmt: skip


class Checkpoints:
    """A cache of prefix checkpoints (IMP's dense phase) shared by runs that differ only later."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.warning: str | None = None

    def path(self, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{key}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        """The entry, or None where there is none or it does not load (a truncated or foreign
        file): then it is removed with a warning, and the run rebuilds it."""
        path = self.path(key)
        if path is None or not path.exists():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(payload, dict) or not CACHE_FIELDS <= payload.keys():
                raise ValueError("entries are missing")
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt, never used
            self.warning = f"cached dense checkpoint {path} is corrupt ({exc}); rebuilt"
            warnings.warn(self.warning, RuntimeWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        return payload

    def save(self, key: str, payload: dict[str, Any]) -> None:
        path = self.path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: concurrent writers of the same prefix are harmless


def autocast_dtype(config: RunConfig, device: torch.device) -> torch.dtype | None:
    return torch.bfloat16 if (config.preset.amp and device.type == "cuda") else None


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
    if plan.total_steps != method_cls.total_steps(budget, hp):  # the run key counts these steps
        raise RuntimeError(
            f"{config.method}: plan of {plan.total_steps} steps, the method declares "
            f"{method_cls.total_steps(budget, hp)}"
        )
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
        device=device,
        generator=make_generator(config.seed, "method"),
        optimizer_factory=lambda: make_optimizer(model, config),
        train_batches=train_batches
        or (lambda gen: data.train_batches(preset.batch_size, gen, gen, device)),
    )
    method.prepare(model, state)
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
        reg = method.regularization(state)
        total = loss if reg is None else loss + reg
    backward_and_step(state, method, total)
    return loss.detach()


def backward_and_step(state: TrainState, method: PruningMethod, total: torch.Tensor) -> None:
    """Backward, the gradient hooks in their order, the optimizer step, the after-step hook."""
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if state.masks is not None:
        state.masks.mask_grads()
    method.after_backward(state)
    state.optimizer.step()
    state.step += 1
    method.after_step(state)


def train_run(
    config: RunConfig,
    run: TrackedRun | None = None,
    *,
    dataset: Dataset | None = None,
    cache_dir: Path | None = None,
    on_epoch: Callable[[Progress], None] | None = None,
    evaluation: bool = True,
) -> RunResult:
    """Train, finalize, project and test one run; log curves to ``run`` if given.

    ``evaluation=False`` skips every validation and test pass (and the diagnostics that need
    them), so the result has no accuracies: only for measuring the loop itself
    (benchmarks/harness_overhead.py).
    """
    wall_start = time.perf_counter()
    preset = config.preset
    device = torch.device(config.device)
    data = dataset or load_dataset(preset.dataset, config.data_dir, split_seed=config.split_seed)
    budget = Budget(preset.epochs, data.steps_per_epoch(preset.batch_size))
    model, method, state = setup(config, data, budget, device)
    plan = state.plan
    amp_dtype = autocast_dtype(config, device)
    channels_last = preset.channels_last
    order = make_generator(config.seed, "order")
    augment = make_generator(config.seed, "augment")

    def validate() -> float:
        return evaluate(
            model, data.val_batches(preset.eval_batch_size, device), amp_dtype, channels_last
        )[0]

    if evaluation:
        state.evaluate_val = validate

    ckpt = Checkpoints(cache_dir)
    cache_key = None
    if plan.cache_epoch is not None and plan.cache_key is not None:
        prefix = {**resolved(config), "method": plan.cache_key, "hparams": None, "target": None}
        prefix["data"] = data.fingerprint
        prefix["numerics"] = numerics(config)  # a prefix trained with other numerics differs
        cache_key = hashlib.sha256(
            json.dumps(prefix, sort_keys=True, default=str).encode()
        ).hexdigest()[:24]

    step_time = 0.0
    images = 0
    cached_images = 0
    train_flops = TrainFlops()  # densities sampled once per epoch, see its docstring
    curves: list[tuple[int, dict[str, float]]] = []

    def end_epoch(train_loss: float) -> None:
        """Epoch-end work after the counted steps: method hook, validation, curves."""
        state.logged.clear()
        method.on_epoch_end(state)
        val_acc = state.evaluate_val() if state.evaluate_val else float("nan")
        sparsity = achieved_sparsity(model)
        metrics = {
            "train_loss": train_loss,
            "lr": float(state.lr[state.step - 1]),
            "sparsity": sparsity,
            "val_accuracy": val_acc,
            **state.logged,
        }
        curves.append((state.step, metrics))
        if run is not None:
            run.log_metrics(metrics, state.step)
        if on_epoch is not None:
            on_epoch(
                Progress(state.epoch, plan.epochs, state.step, val_acc, train_loss, sparsity)
            )

    restored = ckpt.load(cache_key) if cache_key else None
    if restored is not None:
        model.load_state_dict(restored["model"])
        state.optimizer.load_state_dict(restored["optimizer"])
        method.load_state_dict(restored["method"])
        order.set_state(restored["order"])
        augment.set_state(restored["augment"])
        state.generator.set_state(restored["method_rng"])
        state.epoch = plan.cache_epoch
        state.step = budget.steps(state.epoch)
        cached_images = restored["images"]
        # checkpoints written before train_flops existed: the prefix at today's density
        prefix = restored.get("train_flops") or [(layer_nonzeros(model), cached_images, 0)]
        train_flops.epochs.extend(prefix)
        for step, metrics in restored["curves"]:
            curves.append((step, metrics))
            if run is not None:
                run.log_metrics(metrics, step)
        end_epoch(restored["train_loss"])

    cuda = device.type == "cuda"
    model.train()
    while state.epoch < plan.epochs:  # a plan's extra steps may end inside its last epoch
        loss_sum = torch.zeros((), device=device)
        epoch_start = state.step
        nonzeros, epoch_images, dense_grads = layer_nonzeros(model), images, state.dense_grad_steps
        for x, y in data.train_batches(preset.batch_size, order, augment, device):
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            loss = train_step(state, method, x, y, amp_dtype, channels_last)
            if cuda:
                torch.cuda.synchronize(device)
            step_time += time.perf_counter() - t0
            images += y.shape[0]
            loss_sum += loss
            if state.step == plan.total_steps:
                break
        state.epoch += 1
        train_flops.add(
            nonzeros,
            images - epoch_images,
            (state.dense_grad_steps - dense_grads) * preset.batch_size,
        )
        train_loss = float(loss_sum) / (state.step - epoch_start)
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"training loss is {train_loss} in epoch {state.epoch}")
        if cache_key is not None and state.epoch == plan.cache_epoch and restored is None:
            ckpt.save(
                cache_key,
                {
                    "model": model.state_dict(),
                    "optimizer": state.optimizer.state_dict(),
                    "method": method.state_dict(),
                    "order": order.get_state(),
                    "augment": augment.get_state(),
                    "method_rng": state.generator.get_state(),
                    "images": images,
                    "curves": list(curves),
                    "train_loss": train_loss,
                    "train_flops": list(train_flops.epochs),
                },
            )
        end_epoch(train_loss)

    # The last epoch's validation already measured these weights; if finalize leaves them
    # as they are, it is the validation of the finalized model.
    validated = (
        {k: t.detach().clone() for k, t in model.state_dict().items()} if evaluation else None
    )
    method.finalize(model, state)
    zeros_finalized, total = count_zeros(effective_weights(model))
    before_projection = zeros_finalized / total  # what the method reached on its own
    val_finalized = val_projected = val_acc = None
    if validated is not None:
        if curves and unchanged(validated, model.state_dict()):
            val_finalized = curves[-1][1]["val_accuracy"]
        else:
            val_finalized = validate()
        del validated
    project_to_sparsity(model, config.target)
    if val_finalized is not None:
        # The projection only zeroes entries: it changed the model iff it added zeros. A
        # second validation pass (for projection_drop) only then.
        projected = count_zeros(effective_weights(model))[0] != zeros_finalized
        val_projected = validate() if projected else val_finalized
        val_acc = val_projected
    bn_images = (
        recalibrate_bn(model, data, config, device) if config.bn_recalibration_batches else 0
    )
    if bn_images and val_acc is not None:
        val_acc = validate()
    example = next(iter(data.val_batches(preset.eval_batch_size, device)))[0]
    layers = count_layers(model, example[:1])
    test_acc = test_top5 = None
    if evaluation and config.evaluate_test:
        test_acc, test_top5 = evaluate(
            model, data.test_batches(preset.eval_batch_size, device), amp_dtype, channels_last
        )
    total_images = images + cached_images
    metrics = {
        **({} if test_acc is None else {"test_accuracy": test_acc}),
        **({} if val_acc is None else {"val_accuracy": val_acc}),
        "sparsity": achieved_sparsity(model),
        "sparsity_before_projection": before_projection,
        "flops_dense": float(flops_dense(layers)),
        "flops_sparse": float(flops_sparse(layers)),
        # in-trial throughput of the steps this process ran (a cached prefix is excluded)
        "train_img_per_s": images / step_time if step_time > 0 else 0.0,
        "train_steps": float(state.step),
        "train_images": float(total_images),
        "wall_time_s": time.perf_counter() - wall_start,
    }
    if val_finalized is not None and val_projected is not None:  # in percentage points
        metrics["projection_drop"] = val_finalized - val_projected
    collapsed = collapsed_layers(model)
    metrics["collapsed_layers"] = float(len(collapsed))
    flops_train, flops_dense_train = train_flops.totals({la.name: la.dense_macs for la in layers})
    metrics["train_flops"] = flops_train
    metrics["train_cost"] = flops_train / flops_dense_train if flops_dense_train else 1.0
    metrics.update(state.recorded)
    if bn_images:
        metrics["bn_recal_images"] = float(bn_images)
    if data.num_classes >= 5 and test_top5 is not None:
        metrics["test_top5"] = test_top5
    speedup = theoretical_speedup(layers)
    if speedup is not None:
        metrics["theoretical_speedup"] = speedup
    tags = {
        "cached_dense": str(restored is not None).lower(),
        "device": device_label(device),
        "collapsed": ",".join(collapsed),  # empty when no layer collapsed
        **{f"numerics.{k}": str(v) for k, v in numerics(config).items()},
    }
    if ckpt.warning:
        tags["cache_warning"] = ckpt.warning
    if state.step != plan.total_steps:  # the protocol's invariant; never silently violated
        raise RuntimeError(f"ran {state.step} steps, the plan is {plan.total_steps}")
    return RunResult(metrics, tags, layer_sparsity(model), model)


def unchanged(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    """The same entries with the same values (a removed parametrization changes the keys)."""
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Dataset, config: RunConfig, device) -> int:
    """Re-estimate BatchNorm statistics on training batches, for every method alike.

    Off by default; its images are counted separately (``bn_recal_images``), never as steps.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    was_training = model.training
    model.train()
    order = torch.Generator().manual_seed(seed_for(config.seed, "order") ^ 0x5EED)
    augment = torch.Generator().manual_seed(seed_for(config.seed, "augment") ^ 0x5EED)
    seen = 0
    batches = data.train_batches(config.preset.batch_size, order, augment, device)
    for i, (x, _) in enumerate(batches):
        if i == config.bn_recalibration_batches:
            break
        model(x)
        seen += x.shape[0]
    model.train(was_training)
    return seen
