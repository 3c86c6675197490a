"""What a preset table may hold: every key, its type, its range, checked before anything runs.

A preset's numbers decide every run of a benchmark, so a wrong one must stop the command in
one line naming the key and the form expected (``PresetError``), never train: ``lr = nan``
would train to a NaN loss, milestones outside the schedule or out of order would silently
change it, a typo in ``[optimizer]`` would be a keyword error naming nothing. Written by hand
rather than with a schema library: the rules that matter (milestones increasing, keys that
only one schedule kind reads, a calibration's values checked by the method's own
hyperparameter parsing) are not a schema's, and the messages must name the preset's keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from benchsuite.core.method import check_targets_table
from benchsuite.pruning.schedules import ORIGINAL_KINDS


class PresetError(ValueError):
    """A preset that cannot be used: one line naming the key and the expected form."""


OPTIMIZER_KEYS = ("lr", "momentum", "weight_decay", "nesterov")
# which keys of [schedule] each kind reads (warm-up chains with every kind)
SCHEDULE_KEYS = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "multistep": ("milestones", "gamma"),
    "exponential": ("gamma",),
    "linear": ("end_lr",),
    "cosine": (),
}
ALL_SCHEDULE_KEYS = ("kind", "warmup_epochs", "milestones", "step_size", "gamma", "end_lr", "lr")


def is_number(value: Any) -> bool:
    """A TOML integer or float (not a boolean) that is finite."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _number(where: str, key: str, value: Any, valid: Callable[[float], bool], form: str) -> None:
    if not is_number(value) or not valid(float(value)):
        raise PresetError(f"{where}: {key} must be {form}, got {value!r}")


def _unknown(where: str, table: str, raw: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise PresetError(
            f"{where}: unknown key {', '.join(f'{table}.{k}' for k in unknown)}; "
            f"[{table}] takes {', '.join(known)}"
        )


def check_top(raw: dict[str, Any], where: str) -> None:
    """The top-level scalars: booleans, and the tables' own shape."""
    for key in ("amp", "channels_last"):
        if key in raw and not isinstance(raw[key], bool):
            raise PresetError(f"{where}: {key} must be true or false, got {raw[key]!r}")
    for key, value in raw.get("sources", {}).items():
        if not isinstance(value, str):
            raise PresetError(f"{where}: sources.{key} must be a string (where it comes from)")


def check_optimizer(raw: dict[str, Any], where: str) -> None:
    _unknown(where, "optimizer", raw, OPTIMIZER_KEYS)
    if "lr" in raw:
        _number(where, "optimizer.lr", raw["lr"], lambda v: v > 0, "a finite number > 0")
    if "momentum" in raw:
        _number(
            where, "optimizer.momentum", raw["momentum"], lambda v: 0 <= v < 1, "a number in [0, 1)"
        )
    if "weight_decay" in raw:
        _number(
            where,
            "optimizer.weight_decay",
            raw["weight_decay"],
            lambda v: v >= 0,
            "a finite number >= 0",
        )
    if "nesterov" in raw and not isinstance(raw["nesterov"], bool):
        raise PresetError(f"{where}: optimizer.nesterov must be true or false")


def check_schedule(raw: dict[str, Any], where: str, epochs: int, lr: Any) -> None:
    _unknown(where, "schedule", raw, ALL_SCHEDULE_KEYS)
    kind = raw.get("kind", "linear")
    if kind not in SCHEDULE_KEYS:
        raise PresetError(
            f"{where}: unknown schedule kind {kind!r} (schedule.kind); choose from "
            + ", ".join(ORIGINAL_KINDS)
        )
    reads = SCHEDULE_KEYS[kind]
    for key in ("milestones", "step_size", "gamma", "end_lr"):
        if key in raw and key not in reads:
            takes = ", ".join(k for k, keys in SCHEDULE_KEYS.items() if key in keys)
            raise PresetError(
                f"{where}: schedule.{key} is not read by kind {kind!r} (only by {takes}); "
                "remove it or change schedule.kind"
            )
    if "lr" in raw and raw["lr"] != lr:
        raise PresetError(
            f"{where}: schedule.lr {raw['lr']!r} differs from optimizer.lr {lr!r}; the peak "
            "LR is optimizer.lr: remove schedule.lr"
        )
    warm = raw.get("warmup_epochs", 0)
    if isinstance(warm, bool) or not isinstance(warm, int) or not 0 <= warm < epochs:
        raise PresetError(
            f"{where}: schedule.warmup_epochs must be an integer in [0, epochs) = "
            f"[0, {epochs}), got {warm!r}"
        )
    if "milestones" in raw:
        check_milestones(raw["milestones"], where)
    if "step_size" in raw:
        _number(
            where,
            "schedule.step_size",
            raw["step_size"],
            lambda v: 0 < v < 1,
            "a fraction of the schedule in (0, 1)",
        )
    elif kind == "step":
        raise PresetError(f"{where}: kind 'step' needs schedule.step_size, a fraction in (0, 1)")
    if "gamma" in raw:
        _number(where, "schedule.gamma", raw["gamma"], lambda v: 0 < v <= 1, "a factor in (0, 1]")
    if "end_lr" in raw:
        _number(where, "schedule.end_lr", raw["end_lr"], lambda v: v >= 0, "a finite number >= 0")


def check_milestones(value: Any, where: str) -> None:
    """Fractions of the schedule, strictly increasing, each inside it: (0, 1)."""
    form = "a list of increasing fractions of the schedule in (0, 1), e.g. [0.5, 0.75]"
    if not isinstance(value, list) or not all(is_number(v) for v in value):
        raise PresetError(f"{where}: schedule.milestones must be {form}, got {value!r}")
    if not all(0 < v < 1 for v in value) or any(b <= a for a, b in zip(value, value[1:])):
        raise PresetError(f"{where}: schedule.milestones must be {form}, got {value!r}")


def check_calibration(raw: dict[str, Any], where: str) -> None:
    """``[calibration.<method>."<target>"]`` tables: a known method, a target spelled as the
    harness looks it up (``f"{t:g}"``), values its hyperparameters accept."""
    try:
        check_targets_table(raw, "calibration")
    except ValueError as exc:
        raise PresetError(f"{where}: {exc}") from None
