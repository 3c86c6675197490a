"""The contract every pruning method implements, and the state the training loop hands it.

One training loop (``train.py``) calls these hooks; a method never owns the loop, so every
method gets the same steps, batches and evaluation. What several methods need (global
magnitude masks, zeroing momentum, a fresh optimizer, the recorded original LR) is a
service of ``TrainState``, not a special case in the loop.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from benchsuite.core.budget import Budget, Phase, Plan
from benchsuite.core.registry import Registry, discover
from benchsuite.pruning.masks import (
    HardMasks,
    parameter_norm,
    prunable_modules,
    rescale_to_kept_fan_in,
    zero_momentum,
)
from benchsuite.pruning.patterns import UNSTRUCTURED, UNSTRUCTURED_PATTERN, Pattern
from benchsuite.pruning.schedules import LRRecord, ScheduleSpec, original_schedule


def hparam(
    default: Any,
    source: str,
    *,
    low: float | None = None,
    high: float | None = None,
    log: bool = False,
    choices: tuple[Any, ...] | None = None,
    help: str = "",
) -> Any:
    """A hyperparameter field: its default, where that default comes from, its search space.

    ``source`` is the paper section/table, "reference code", or "chosen here: <why>".
    ``low``/``high`` (optionally ``log``) or ``choices`` mark the field tunable.
    """
    meta = {
        "source": source,
        "low": low,
        "high": high,
        "log": log,
        "choices": choices,
        "help": help,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoHparams:
    """For methods without hyperparameters."""


def hparam_fields(hp_cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(hp_cls))


def parse_hparams(hp_cls: type, overrides: dict[str, str | Any]) -> Any:
    """Build the dataclass from string (or typed) overrides, converting by the field's type."""
    hints = typing.get_type_hints(hp_cls)
    names = {f.name for f in dataclasses.fields(hp_cls)}
    values = {}
    for key, raw in overrides.items():
        if key not in names:
            raise KeyError(key)
        try:
            values[key] = convert_value(hints[key], raw)
        except ValueError as exc:
            raise ValueError(f"{key}={raw!r}: {exc}") from None
    hp = hp_cls(**values)
    for f in dataclasses.fields(hp_cls):
        choices = f.metadata.get("choices")
        if choices and getattr(hp, f.name) not in choices:
            raise ValueError(
                f"{f.name}={getattr(hp, f.name)!r}; choose from {', '.join(map(str, choices))}"
            )
    return hp


_TYPE_NAMES = {int: "an integer", float: "a finite number", bool: "a boolean (true/false)"}


def convert_value(kind: Any, raw: Any) -> Any:
    """``raw`` as the field's type; ValueError saying which type is expected (NaN and inf
    are never a hyperparameter: they turn into silent garbage or crashes deep in a run)."""
    optional = kind in (int | None, float | None)
    base = typing.get_args(kind)[0] if optional else kind
    if isinstance(raw, str) and optional and raw.strip().lower() == "none":
        return None
    if base is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected {_TYPE_NAMES[bool]}")
    if base in (int, float):
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError(f"expected {_TYPE_NAMES[base]}" + (" or none" if optional else ""))
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(
                f"expected {_TYPE_NAMES[base]}" + (" or none" if optional else "")
            ) from None
        if not math.isfinite(number):
            raise ValueError(f"expected {_TYPE_NAMES[base]}, not {raw}")
        if base is int:
            if isinstance(raw, str):
                try:
                    return int(raw)
                except ValueError:
                    raise ValueError(f"expected {_TYPE_NAMES[int]}") from None
            if number != int(number):
                raise ValueError(f"expected {_TYPE_NAMES[int]}")
            return int(number)
        return number
    return raw


def variant_name(hp: Any) -> str:
    """The non-default hyperparameters as ``k=v`` sorted by name, or ``default``."""
    parts = [
        f"{f.name}={getattr(hp, f.name)}"
        for f in sorted(dataclasses.fields(hp), key=lambda f: f.name)
        if getattr(hp, f.name) != f.default
    ]
    return ",".join(parts) or "default"


@dataclass
class TrainState:
    """What a hook may read and the services it may use."""

    model: nn.Module
    budget: Budget
    plan: Plan
    lr: (
        np.ndarray
    )  # per-step LR, a copy of plan.lr that a method may rescale for its own future steps
    generator: torch.Generator  # the method's own randomness, derived from the run seed
    optimizer_factory: Callable[[], torch.optim.Optimizer]
    optimizer: torch.optim.Optimizer | None = None
    step: int = 0  # optimizer steps completed
    epoch: int = 0  # epochs completed
    masks: HardMasks | None = None
    evaluate_val: Callable[[], float] | None = None
    logged: dict[str, float] = field(default_factory=dict)
    # one epoch of training batches whose order and augmentation come from the given generator
    train_batches: Callable[[torch.Generator], Iterator[tuple[Tensor, Tensor]]] | None = None
    recorded: dict[str, float] = field(default_factory=dict)  # run-level metrics (``record``)
    dense_grad_steps: int = 0  # steps whose weight gradient a method used densely (RigL)
    pattern: Pattern = UNSTRUCTURED_PATTERN  # the run's sparsity pattern (``patterns.py``)
    input_shape: tuple[int, ...] | None = None  # one sample's shape (C, H, W)

    # --- services -------------------------------------------------------------------------
    def prunable(self) -> list[tuple[str, nn.Module]]:
        return prunable_modules(self.model)

    def hard_masks(self) -> HardMasks:
        """The harness's gradient-masking hard masks over the prunable weights (created on use)."""
        if self.masks is None:
            self.masks = HardMasks([m.weight for _, m in self.prunable()])
        return self.masks

    def example_input(self) -> Tensor:
        """One zero input sample, as a batch of 1 on the model's device (to trace the model's
        channels, ``ChannelGroups``)."""
        if self.input_shape is None:
            raise RuntimeError("this training path gives the method no input shape")
        device = next(self.model.parameters()).device
        return torch.zeros(1, *self.input_shape, device=device)

    def zero_momentum(self, params: list[Tensor], masks: list[Tensor]) -> None:
        assert self.optimizer is not None
        zero_momentum(self.optimizer, params, masks)

    def start_sparse(self, params: list[Tensor], masks: list[Tensor]) -> None:
        """A sparse start that carries signal: each unit of the masked initial weights scaled to
        the dense init's pre-activation variance at its kept fan-in (``rescale_to_kept_fan_in``);
        for every method whose mask at step 0 is not all ones, before the optimizer exists."""
        rescale_to_kept_fan_in([p.data for p in params], masks)

    def reset_optimizer(self) -> None:
        """A fresh optimizer (empty momentum) over the same parameters; the LR comes from ``lr``."""
        self.optimizer = self.optimizer_factory()

    def parameter_norm(self) -> float:
        return parameter_norm(self.model)

    def log(self, name: str, value: float) -> None:
        """A diagnostic metric, recorded by the harness at the current step."""
        self.logged[name] = float(value)

    def record(self, name: str, value: float) -> None:
        """A run-level metric (e.g. SNIP's ``score_images``), added to the run's final metrics."""
        self.recorded[name] = float(value)

    def sample_batches(self, n: int) -> list[tuple[Tensor, Tensor]]:
        """``n`` training batches outside the counted steps (SNIP's scoring pass).

        Drawn from the training split with order and augmentation from the method's own
        generator, so the loop's data order (its own ``order`` stream) is untouched and no
        validation or test sample is read.
        """
        if self.train_batches is None:
            raise RuntimeError("this training path hands the method no training batches")
        batches: list[tuple[Tensor, Tensor]] = []
        while len(batches) < n:  # more than one epoch's worth: a fresh permutation each pass
            before = len(batches)
            for batch in self.train_batches(self.generator):
                batches.append(batch)
                if len(batches) == n:
                    break
            if len(batches) == before:
                raise RuntimeError("the training batch source yielded no batch")
        return batches

    def note_dense_weight_grad(self) -> None:
        """This step used the dense weight gradient (counted in ``train_flops``)."""
        self.dense_grad_steps += 1


class PruningMethod:
    """Base class: a no-op method that trains with the preset schedule for the whole budget.

    Subclasses set ``name`` (equal to the entry-point name) and ``Hparams`` and override the
    hooks they need. ``targets_sparsity`` is False where sparsity emerges from hyperparameters
    (STR, DST); the harness then still projects to the target, which yields
    max(achieved, target).

    The plan comes first, before anything is built: ``plan(budget, hp, target, schedule)``
    lays out the phases and the learning rate of every step (raising ``BudgetError`` for a
    budget too short); its ``total_steps`` is the run's step count, in its run key. The loop
    then calls the hooks in this order (``training/loop.py``)::

        method = Method(hp, target, plan)
        method.on_start(state)                   # wrap layers, add parameters; no optimizer yet
        (the optimizer is built)
        for each epoch, for each counted step:
            state.lr[step] is set on the optimizer
            loss = cross_entropy(model(x), y) + method.loss_term(state)   # None adds nothing
            optimizer.zero_grad(); loss.backward()
            state.masks.mask_grads()             # the harness's hard masks, where used
            method.on_backward(state)            # edit gradients
            optimizer.step(); state.step += 1
            method.on_step_end(state)
        then, after the epoch's steps: method.on_epoch_end(state); validation
        method.on_finish(state)                  # plain weights with exact zeros
        (the harness projects to the target, then reads the test split once)

    Every hook reads the run through ``state`` (``state.plan`` is the plan).
    """

    name: ClassVar[str]
    Hparams: ClassVar[type] = NoHparams
    targets_sparsity: ClassVar[bool] = True
    source: ClassVar[str] = ""  # citation of the method's paper
    # True for the dense reference: one run per seed, no target
    one_per_seed: ClassVar[bool] = False
    # False for a study setting that trains longer than the budget (imp-retrain): left out of
    # ``--methods all`` so a leaderboard never mixes budgets by default
    budget_equal: ClassVar[bool] = True
    # the sparsity patterns the method can train to (``patterns.KINDS``); the run's pattern is
    # ``state.pattern``
    patterns: ClassVar[tuple[str, ...]] = (UNSTRUCTURED,)

    def __init__(self, hp: Any, target: float, plan: Plan) -> None:
        """``plan`` is the one ``plan`` returned; a hook reads it again as ``state.plan``."""
        self.hp = hp
        self.target = target

    @classmethod
    def supports(cls, pattern: Pattern) -> bool:
        """Whether a run of this method may have ``pattern`` (the dense reference has none)."""
        return cls.one_per_seed or pattern.kind in cls.patterns

    @classmethod
    def plan(cls, budget: Budget, hp: Any, target: float, schedule: ScheduleSpec) -> Plan:
        """Default: one phase, the preset's schedule over the whole budget."""
        lr = original_schedule(schedule, budget.epochs, budget.steps_per_epoch)
        return Plan(budget, (Phase("train", 0, budget.epochs),), lr)

    def on_start(self, state: TrainState) -> None:
        """Wrap layers / create parameters of ``state.model``; runs before the optimizer exists."""

    def loss_term(self, state: TrainState) -> Tensor | None:
        """An extra term added to this step's loss (a penalty), or None."""
        return None

    def on_backward(self, state: TrainState) -> None:
        """Edit gradients: after hard-mask gradient masking, before the optimizer step."""

    def on_step_end(self, state: TrainState) -> None:
        """Per-step work after the optimizer step (mask refreshes, temperatures)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After an epoch's counted steps, before its validation (prunes, phase ends)."""

    def on_finish(self, state: TrainState) -> None:
        """Leave ``state.model`` with plain weights and exact zeros; remove reparametrizations."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def preset_record(schedule: ScheduleSpec, budget: Budget, epochs: int | None = None) -> LRRecord:
    """The recorded original schedule over ``epochs`` (default: the budget)."""
    epochs = budget.epochs if epochs is None else epochs
    lr = original_schedule(schedule, epochs, budget.steps_per_epoch)
    return LRRecord(lr, warmup_steps=min(schedule.warmup_epochs, epochs) * budget.steps_per_epoch)


# --------------------------------------------------------------------------- the methods' table

METHODS_GROUP = "benchsuite.methods"


def _check_method(name: str, cls: Any) -> type[PruningMethod]:
    if not (isinstance(cls, type) and issubclass(cls, PruningMethod)):
        raise TypeError(f"{cls!r} is not a benchsuite.PruningMethod subclass")
    if getattr(cls, "name", None) != name:
        raise TypeError(f"entry point {name!r} loads a method named {cls.__dict__.get('name')!r}")
    return cls


@cache
def method_registry() -> Registry[type[PruningMethod]]:
    """The pruning methods (cached; ``method_registry.cache_clear()`` discovers them again)."""
    return discover(Registry("method", METHODS_GROUP, _check_method))


def list_methods() -> list[str]:
    return method_registry().names()


def get_method(name: str) -> type[PruningMethod]:
    return method_registry().get(name)


def check_targets_table(table: dict[str, Any], section: str, field: str | None = None) -> None:
    """A ``{method: {target: entry}}`` table (a preset's calibration, a tuned-configurations
    file): every method known, every target a sparsity in (0, 1) spelled as the harness looks
    it up (``f"{t:g}"``), every entry's hyperparameters (the entry, or its ``field``) accepted
    by the method's own parsing. ``ValueError`` naming the place (``section.method.target``) and the
    expected form."""
    for method, targets in table.items():
        try:
            hparams = get_method(method).Hparams
        except KeyError:
            raise ValueError(
                f"{section}.{method}: unknown method; choose from {', '.join(list_methods())}"
            ) from None
        if not isinstance(targets, dict):
            raise ValueError(f"{section}.{method} must be a table of targets")
        for target, entry in targets.items():
            key = f"{section}.{method}.{target}"
            try:
                number = float(target)
            except ValueError:
                number = math.nan
            if not 0 < number < 1 or f"{number:g}" != target:
                raise ValueError(
                    f"{key}: a target must be a sparsity in (0, 1) written as --sparsity prints "
                    'it, e.g. "0.9"'
                )
            values = entry if field is None else entry[field]
            key = key if field is None else f"{key}.{field}"
            if not isinstance(values, dict):
                raise ValueError(f"{key} must be a table of hyperparameters")
            try:
                parse_hparams(hparams, values)
            except KeyError as exc:
                names = ", ".join(f.name for f in hparam_fields(hparams)) or "(none)"
                raise ValueError(
                    f"{key}: {method} has no hyperparameter {exc}; choose from {names}"
                ) from None
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{key}: {exc}") from None
