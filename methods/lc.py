"""Learning-compression (Carreira-Perpiñán & Idelbayev, CVPR 2018), the L0-constrained form of
the BIMP reference code (reference §5 LC).

After every backward, the global top-k entries by |w| over **all parameters with gradients**
(Conv/Linear weights, biases and BatchNorm parameters, reference §11.8), k = ⌊(1 − S)·N_prunable⌋,
get −wd·w added to their gradient, wd being the optimizer's (coupled) weight decay. That
cancels the optimizer's L2 on them, so **only the entries outside the top-k are decayed** and
the small weights are pushed toward 0: in effect the L-step penalty ½·wd·‖w − Π(w)‖², with Π
the projection onto the k largest entries (the C-step, here recomputed every step). The final hard
prune is the harness's projection (reference §2.5). wd stays constant ([earlier version]'s
1.1× growth is not built). With wd = 0 the method is plain SGD.

Cost per step: |w| written into one flat buffer, one exact selection on it
(``methods.gsm.top_indices``) and one fused ``_foreach_addcmul_`` into the gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from benchsuite.method import NoHparams, PruningMethod, TrainState

from .gsm import FlatScores, top_count


class LC(PruningMethod):
    name = "lc"
    source = (
        'Carreira-Perpiñán & Idelbayev, "Learning-Compression" Algorithms for Neural Net '
        "Pruning, CVPR 2018; the L0-constrained form of the BIMP reference code"
    )
    Hparams = NoHparams  # S only; the penalty is the preset's weight decay (reference §5 LC)

    def prepare(self, model: nn.Module, state: TrainState) -> None:
        self.flat = FlatScores(model)
        n_prunable = sum(m.weight.numel() for _, m in state.prunable())
        self.k = top_count(n_prunable, self.target)

    def after_backward(self, state: TrainState) -> None:
        assert state.optimizer is not None
        wd = float(state.optimizer.param_groups[0]["weight_decay"])
        if wd == 0.0:
            return
        params, grads = self.flat.current()
        if not params:
            return
        with torch.no_grad():
            self.flat.write_magnitude(params)  # |w| into the flat buffer
            coef = self.flat.select_top(self.k, -wd)  # −wd on the top-k, 0 elsewhere
            torch._foreach_addcmul_(grads, params, coef)
