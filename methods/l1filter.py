"""L1-norm filter pruning (Li, Kadav, Durdanovic, Samet & Graf, Pruning Filters for Efficient
ConvNets, ICLR 2017, arXiv:1608.08710), prune and retrain within the budget, docs/methods.md.

IMP's layout with channels instead of single weights: dense training for the budget minus E
retraining epochs, then J prune–retrain phases. A prune scores every channel of a group by the
L1 norm of the filters that produce it (Σ|w| over the filter; Li et al.'s criterion), all
groups scored before any is pruned (their "independent" strategy), and removes the lowest of
each group at one ratio for every layer, the ratio whose weight sparsity is nearest the phase's
goal 1 − (1 − S)^(j/J) (``ChannelGroups.counts_for``). The channels and everything that reads
them go through the harness's hard masks, so they stay exact zeros while retraining.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from benchsuite import RETRAIN_SCHEDULES, ChannelGroups, TrainState, hparam

from .imp import IMP


@dataclass(frozen=True)
class L1FilterHparams:
    schedule: str = hparam(
        "ft",
        "Li et al. 2017 §4: the pruned network is retrained at a constant small learning rate "
        "(benchsuite's ft: the dense phase's last LR)",
        choices=RETRAIN_SCHEDULES,
    )
    phases: int = hparam(
        1, "Li et al. 2017 §3.4: prune once, then retrain (their one-shot setting)", low=1, high=5
    )
    retrain_fraction: float = hparam(
        0.1,
        "chosen here: as imp's, ≈ the longest retraining budget of the BIMP paper's Table 1",
        low=0.05,
        high=0.5,
    )
    allr_last_phase_only: bool = hparam(
        False, "as imp's (only read with schedule=allr): adaptive LR in every phase"
    )


class L1Filter(IMP):
    """Prune whole channels by their filters' L1 norm, then retrain."""

    name = "l1-filter"
    source = (
        "Li, Kadav, Durdanovic, Samet & Graf, Pruning Filters for Efficient ConvNets, ICLR 2017, "
        "arXiv:1608.08710"
    )
    Hparams = L1FilterHparams
    patterns = ("channel",)

    groups: ChannelGroups | None = None

    def prune_masks(self, state: TrainState, j: int, current: list[Tensor]) -> list[Tensor]:
        if self.groups is None:  # traced on first use: a resumed dense prefix has no on_start
            self.groups = ChannelGroups(state.model, state.example_input())
        goal = 1.0 - (1.0 - self.target) ** ((j + 1) / self.n_phases)
        gone = self.groups.removed()
        counts = self.groups.counts_for(goal, floor=[int(g.sum()) for g in gone])
        return self.groups.masks(self.groups.select(counts, 1, keep=gone))
