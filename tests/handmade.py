"""A TrainState built by hand around a model, for mechanics tests that drive hooks directly."""

from __future__ import annotations

import torch
from torch import nn

from benchsuite.core.budget import Budget
from benchsuite.core.method import PruningMethod, TrainState
from benchsuite.pruning.schedules import ScheduleSpec


def hand_state(
    model: nn.Module,
    method_cls: type[PruningMethod],
    hp,
    target: float,
    budget: Budget,
    *,
    lr: float,
    wd: float,
) -> tuple[PruningMethod, TrainState]:
    """The method planned, prepared and given plain momentum SGD (no Nesterov), as the loop does."""
    plan = method_cls.plan(budget, hp, target, ScheduleSpec("constant", lr=lr))
    method = method_cls(hp, target, plan)

    def factory() -> torch.optim.Optimizer:  # easy to follow by hand
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)

    state = TrainState(
        model=model,
        budget=budget,
        plan=plan,
        lr=plan.lr.copy(),
        generator=torch.Generator().manual_seed(0),
        optimizer_factory=factory,
    )
    method.on_start(state)
    state.optimizer = factory()
    return method, state
