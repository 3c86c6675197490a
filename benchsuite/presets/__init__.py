"""Shipped benchmark presets (TOML files beside this module): dataset, model, budget, optimizer.

A preset fixes everything a comparison holds equal. Every number says where it comes from
in the preset's ``[sources]`` table; a preset that claims the paper's settings cites them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from ..schedules import ScheduleSpec


class PresetError(ValueError):
    pass


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
    amp: bool = False  # bf16/fp16 autocast on CUDA
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


def list_presets() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in files(__package__).iterdir()
        if p.name.endswith(".toml")
    )


def load_preset(name: str) -> Preset:
    if name not in list_presets():
        raise PresetError(f"unknown preset {name!r}; choose from {', '.join(list_presets())}")
    raw = tomllib.loads(files(__package__).joinpath(f"{name}.toml").read_text())
    sched = raw.pop("schedule")
    sched["milestones"] = tuple(sched.get("milestones", ()))
    optimizer = OptimizerSpec(**raw.pop("optimizer"))
    sched["lr"] = optimizer.lr  # one peak LR: the schedule scales the optimizer's
    return Preset(
        name=name,
        optimizer=optimizer,
        schedule=ScheduleSpec(**sched),
        **raw,
    )
