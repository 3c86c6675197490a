"""The knobs of methods whose mask at step 0 is not all ones (random, SNIP, SET, RigL, and a
plugin that starts sparse): how the sparse network's initial weights are scaled, and which
boundary layers stay dense (docs/methods.md, sparse starts)."""

from __future__ import annotations

from typing import Any

from benchsuite.core.method import hparam

STARTS = ("rescaled", "dense")
DENSE_LAYERS = ("none", "first", "last")


def start_hparam() -> Any:
    return hparam(
        "rescaled",
        "Evci et al. 2022 (Gradient flow in sparse neural networks), as in their rigl_tf2 code's "
        "unit-scaled sparse init: each unit of the shared init scaled to the dense init's "
        "pre-activation variance at its kept fan-in; dense = the masked dense init, unscaled",
        choices=STARTS,
        help="rescaled (per-unit variance of the dense init) or dense (the dense init, masked)",
    )


def dense_layers_hparam() -> Any:
    return hparam(
        "none",
        "chosen here: every Conv/Linear layer is prunable, as for every method (the harness's "
        "allow-list); RigL's authors keep the first layer dense on ImageNet and the output "
        "layer on MNIST: first and last (docs/methods.md, sparse starts)",
        choices=DENSE_LAYERS,
        help="a boundary layer kept dense (the others share the rest of the budget)",
    )


def dense_indices(choice: str, n_layers: int) -> tuple[int, ...]:
    """The prunable layers kept dense by a ``dense_layers`` choice."""
    return {"none": (), "first": (0,), "last": (n_layers - 1,)}[choice]
