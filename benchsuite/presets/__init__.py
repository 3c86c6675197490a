"""Benchmark presets: dataset, model, budget, optimizer (TOML tables).

A preset fixes everything a comparison holds equal. Every number says where it comes from
in the preset's ``[sources]`` table; a preset that claims the paper's settings cites them.
The shipped TOML files beside this module register through the ``benchsuite.presets``
entry-point group like a plugin's; ``load_preset("PATH.toml")`` reads a user's own file, and
every preset, wherever it comes from, is validated by the same ``parse_preset``
(docs/extending.md).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any

from benchsuite.core.registry import Registry, UnknownName, discover
from benchsuite.presets.schema import (
    PresetError,
    check_calibration,
    check_optimizer,
    check_schedule,
    check_top,
)
from benchsuite.pruning.schedules import ScheduleSpec

GROUP = "benchsuite.presets"


@dataclass(frozen=True)
class OptimizerSpec:
    """SGD in one parameter group (docs/methods.md); Nesterov = (weight_decay > 0) by default."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool | None = None  # None: the reference code's rule, Nesterov iff wd > 0

    @property
    def use_nesterov(self) -> bool:
        rule = self.weight_decay > 0 if self.nesterov is None else self.nesterov
        return rule and self.momentum > 0


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    dataset: str
    model: str
    epochs: int
    batch_size: int
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    amp: bool = False  # bf16 autocast wherever torch autocasts (the CPU included)
    channels_last: bool = False
    eval_batch_size: int = 1024
    sources: dict[str, str] = field(default_factory=dict)
    # method → target sparsity (as string) → hyperparameter overrides, for methods whose
    # sparsity emerges from hyperparameters (STR, DST): how to land near a requested target
    calibration: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def calibrated(self, method: str, target: float) -> dict[str, Any]:
        """The calibration's hyperparameter overrides for ``method`` at ``target`` (or none)."""
        return self.calibration.get(method, {}).get(f"{target:g}", {})

    def replace(self, **changes: Any) -> Preset:
        return dataclasses.replace(self, **changes)


# A preset entry: called when the preset is loaded, it returns TOML text, a parsed table or a
# Preset.
PresetSource = Callable[[], "str | Mapping[str, Any] | Preset"]
_REQUIRED = ("description", "dataset", "model", "epochs", "batch_size", "optimizer", "schedule")
_POSITIVE_INTS = ("epochs", "batch_size", "eval_batch_size")


def _check_source(name: str, entry: Any) -> PresetSource:
    """An entry point may name a package holding ``<name>.toml``, a file or resource, a
    function returning a preset, or a constant (TOML text or a table)."""
    if isinstance(entry, ModuleType):
        entry = files(entry).joinpath(f"{name}.toml")
    if hasattr(entry, "read_text"):
        if not entry.is_file():
            raise FileNotFoundError(f"preset {name!r}: no file {entry}")
        return entry.read_text
    if callable(entry):
        return entry
    if isinstance(entry, str | Mapping):
        return lambda: entry
    raise TypeError(f"preset {name!r}: {entry!r} is neither TOML, a table nor a function")


@cache
def preset_registry() -> Registry[PresetSource]:
    """The presets (cached; ``preset_registry.cache_clear()`` discovers them again)."""
    return discover(Registry("preset", GROUP, _check_source))


def list_presets() -> list[str]:
    return preset_registry().names()


def is_path(name: str) -> bool:
    """``--preset`` values read from disk: ending in .toml or holding a path separator."""
    return name.endswith(".toml") or "/" in name or os.sep in name


def load_preset(name: str) -> Preset:
    """A registered preset by name, or a TOML file by path (named after its stem)."""
    if is_path(name):
        path = Path(name).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise PresetError(f"cannot read preset file {path}: {exc.strerror or exc}") from None
        return parse_preset(path.stem, text, origin=str(path))
    try:
        source = preset_registry().get(name)
    except UnknownName:
        raise PresetError(
            f"unknown preset {name!r}; choose from {preset_registry().choices()} "
            "or give a PATH.toml"
        ) from None
    return parse_preset(name, source())


def parse_preset(name: str, value: str | Mapping[str, Any] | Preset, origin: str = "") -> Preset:
    """Validate a preset (TOML text or its table); every problem is one PresetError line
    naming the key and the form expected (``schema.py``), before anything is built from it."""
    if isinstance(value, Preset):
        return value
    where = origin or f"preset {name!r}"
    try:
        raw = tomllib.loads(value) if isinstance(value, str) else copy.deepcopy(dict(value))
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{where}: {exc}") from None
    _check_keys(raw, where)
    check_top(raw, where)
    check_optimizer(raw["optimizer"], where)
    lr = raw["optimizer"].get("lr", OptimizerSpec.lr)
    check_schedule(raw["schedule"], where, raw["epochs"], lr)
    check_calibration(raw.get("calibration", {}), where)
    try:
        sched = dict(raw.pop("schedule"))
        sched["milestones"] = tuple(sched.get("milestones", ()))
        optimizer = OptimizerSpec(**raw.pop("optimizer"))
        sched["lr"] = optimizer.lr  # one peak LR: the schedule scales the optimizer's
        return Preset(name=name, optimizer=optimizer, schedule=ScheduleSpec(**sched), **raw)
    except (TypeError, ValueError) as exc:
        raise PresetError(f"{where}: {exc}".replace("\n", " ")) from None


def _check_keys(raw: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise PresetError(
            f"{where} lacks {', '.join(missing)}; a preset needs {', '.join(_REQUIRED)}"
        )
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PresetError(
            f"{where}: unknown key {', '.join(unknown)}; expected {', '.join(sorted(known))}"
        )
    for key in ("optimizer", "schedule", "sources", "calibration"):
        if key in raw and not isinstance(raw[key], dict):
            raise PresetError(f"{where}: {key} must be a table, got {raw[key]!r}")
    for key in _POSITIVE_INTS:
        value = raw.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PresetError(f"{where}: {key} must be an integer >= 1, got {value!r}")
    for key in ("description", "dataset", "model"):
        if not isinstance(raw[key], str):
            raise PresetError(f"{where}: {key} must be a string, got {raw[key]!r}")
