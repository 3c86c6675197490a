"""Sparsity ramps over a budget: Zhu & Gupta's cubic schedule and where it ends (GMP, DPF)."""

from __future__ import annotations

from benchsuite.core.budget import Budget, BudgetError

CUBIC_EXPONENT = 3  # Zhu & Gupta 2017 eq. (1); hard-coded in the reference code


def check_interval(method: str, budget: Budget, interval: int) -> None:
    """GMP and DPF need at least one prune and P epochs after it: 1 ≤ P and 2P ≤ T."""
    if interval < 1 or 2 * interval > budget.epochs:
        raise BudgetError(
            f"{method}: pruning_interval={interval} needs 1 <= pruning_interval and "
            f"2·pruning_interval <= the budget of {budget.epochs} epochs"
        )


def ramp_end_epoch(
    budget: Budget, interval: int, ramp_end: float | None, method: str = "gmp"
) -> int:
    """E, the epoch at whose end the cubic ramp reaches the target: a multiple of P in [P, T − P].

    ``ramp_end`` None: the reference code's rule, K = ⌊T/P⌋ − 1 prunes and E = K·P (the last
    prune P epochs or a little more before the end); otherwise the fraction of the budget,
    rounded to a multiple of P.
    """
    last = budget.epochs - interval  # at least P epochs at the final sparsity
    if ramp_end is None:
        return interval * (budget.epochs // interval - 1)
    end = interval * round(ramp_end * budget.epochs / interval)
    if not (0 < ramp_end <= 1) or not interval <= end <= last:
        raise BudgetError(
            f"{method}: ramp_end={ramp_end} puts the end of the ramp at epoch {end}; with "
            f"pruning_interval={interval} and a budget of {budget.epochs} epochs it must fall "
            f"in [{interval}, {last}] (ramp_end in [{interval / budget.epochs:g}, "
            f"{last / budget.epochs:g}])"
        )
    return end


def cubic_schedule(last: int, interval: int, target: float) -> dict[int, float]:
    """Epoch (1-based count of completed epochs) → the sparsity to reach at its end, for a
    ramp of prunes every ``interval`` epochs that reaches ``target`` at epoch ``last``."""
    return {
        e: target * (1.0 - (1.0 - e / last) ** CUBIC_EXPONENT)
        for e in range(interval, last + 1, interval)
    }
