"""benchsuite: an equal-budget benchmark suite for neural-network pruning methods.

What a plugin author needs is importable from here (``from benchsuite import PruningMethod,
hparam``): the method contract, the budget and plan, and the pruning machinery the built-in
methods use. The names load on first use, so ``benchsuite --help`` does not import torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("benchsuite")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

_EXPORTS = {
    "benchsuite.core.method": (
        "PruningMethod", "TrainState", "hparam", "NoHparams", "preset_record",
    ),
    "benchsuite.core.budget": ("Budget", "BudgetError", "Phase", "Plan", "split_epochs"),
    "benchsuite.pruning.masks": (
        "HardMasks", "global_magnitude_masks", "keep_count", "latent_weight", "prune_remaining",
    ),
    "benchsuite.pruning.distributions": (
        "DISTRIBUTIONS", "distribution_masks", "layer_keep_counts",
    ),
    "benchsuite.pruning.patterns": (
        "Pattern", "parse_pattern", "nm_eligible", "nm_mask", "nm_prune_remaining",
        "nm_violations",
    ),
    "benchsuite.pruning.channels": ("ChannelGroups",),
    "benchsuite.pruning.scores": ("FlatScores", "top_count", "top_indices"),
    "benchsuite.pruning.ramps": ("check_interval", "cubic_schedule", "ramp_end_epoch"),
    "benchsuite.pruning.scheduled": ("RampHparams", "ScheduledMagnitude"),
    "benchsuite.pruning.sparse_start": ("dense_indices", "dense_layers_hparam", "start_hparam"),
    "benchsuite.pruning.batched": (
        "BatchedWeight", "FlatLayout", "LayerBatch", "add_l2_gradient", "add_to_grads",
        "register_batched", "remove_batched",
    ),
    "benchsuite.pruning.schedules": (
        "LRRecord", "REFERENCE_TOTAL_PULL", "RETRAIN_SCHEDULES", "ScheduleSpec",
        "allr_initial_lr", "coefficient_for_pull", "original_schedule", "retraining_schedule",
    ),
}  # fmt: skip
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_HOME]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'benchsuite' has no attribute {name!r}")
    value = getattr(import_module(_HOME[name]), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
