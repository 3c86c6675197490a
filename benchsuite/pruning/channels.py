"""Channel sparsity: whole output channels removed together with everything that reads them.

Which weights depend on a channel is what hand-written channel pruning gets wrong on real
graphs (a flatten that turns one channel into 25 Linear inputs, residual additions that tie
channels of several layers, BatchNorm entries). Torch-Pruning's dependency graph (DepGraph,
Fang et al., CVPR 2023; ``torch-pruning`` >= 1.6) traces the model once and groups, for every
prunable output channel, the output rows of the layers that produce it and the input columns
of the layers that read it. Here a *group* is one such set of coupled channels (one per
prunable layer's output, the model's output layer excepted), and a group's channel *c* is
removed when all its entries are zero.

The training-time form is a mask: a removed channel's rows and columns are exact zeros in the
dense tensors, so the masked model computes exactly what the physically smaller model computes
(its remaining bias and BatchNorm constants reach only zeroed columns). ``export`` removes the
channels for real with Torch-Pruning. Torch-Pruning is imported only here, on first use (it
imports timm and torchvision, seconds on a loaded machine).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from benchsuite.pruning.masks import PRUNABLE_TYPES, latent_weight, prunable_modules


@dataclass(frozen=True)
class Entry:
    """Positions ``index`` along dimension ``dim`` (0: outputs, 1: inputs) of prunable layer
    ``layer``'s weight, and the group channel each position belongs to (``channel``)."""

    layer: int
    dim: int
    index: Tensor
    channel: Tensor


@dataclass
class Group:
    """Coupled channels: removing channel c zeroes every entry of c."""

    name: str  # the layer whose outputs the channels are
    size: int
    entries: list[Entry] = field(default_factory=list)
    root: tuple[nn.Module, object] | None = None  # Torch-Pruning's (module, handler) of the group


def output_layers(model: nn.Module, example: Tensor) -> set[str]:
    """Prunable layers whose output is the model's output (their outputs are the classes and
    are never pruned); the last prunable layer where no output is shared with the model's."""
    layers = prunable_modules(model)
    seen: dict[str, int] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out.data_ptr()))
        for n, m in layers
    ]
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            final = model(example)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    outputs = {n for n, ptr in seen.items() if ptr == final.data_ptr()}
    return outputs or {layers[-1][0]}


class ChannelGroups:
    """The channel groups of ``model`` (traced once with ``example``, one input batch), and
    masks, counts, scores, the harness's projection, validity and export over them."""

    def __init__(self, model: nn.Module, example: Tensor) -> None:
        import torch_pruning as tp

        self.model = model
        self.example = example
        modules = prunable_modules(model)
        self.names = [n for n, _ in modules]
        self.weights = [latent_weight(m) for _, m in modules]
        position = {id(m): i for i, (_, m) in enumerate(modules)}
        ignored = [m for n, m in modules if n in output_layers(model, example)]
        flags = {m: m.training for m in model.modules()}
        try:
            model.eval()  # no BatchNorm statistics move while tracing
            with torch.enable_grad():
                self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        finally:
            for m, flag in flags.items():
                m.training = flag
        self.groups: list[Group] = []
        for tp_group in self.graph.get_all_groups(
            ignored_layers=ignored, root_module_types=PRUNABLE_TYPES
        ):
            root = tp_group[0].dep
            name = self.names[position[id(root.target.module)]]
            group = Group(name, len(tp_group[0].idxs), root=(root.target.module, root.handler))
            done = set()
            for item in tp_group:
                module = item.dep.target.module
                layer = position.get(id(module))
                if layer is None:
                    continue
                if self.graph.is_out_channel_pruning_fn(item.dep.handler):
                    dim = 0
                elif self.graph.is_in_channel_pruning_fn(item.dep.handler):
                    if getattr(module, "groups", 1) != 1:  # a grouped conv's inputs follow its
                        continue  # outputs, which are in this group already
                    dim = 1
                else:
                    continue
                if (layer, dim) in done:
                    continue
                done.add((layer, dim))
                device = self.weights[layer].device
                group.entries.append(
                    Entry(
                        layer,
                        dim,
                        torch.as_tensor([int(i) for i in item.idxs], device=device),
                        torch.as_tensor([int(i) for i in item.root_idxs], device=device),
                    )
                )
            self.groups.append(group)

    @property
    def sizes(self) -> list[int]:
        return [g.size for g in self.groups]

    # ------------------------------------------------------------------ masks and counting
    def _keep_vectors(
        self, removed: list[Tensor], inputs: bool = True
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Per layer, which output rows and input columns survive ``removed`` (``inputs``
        False: the producing rows only)."""
        rows = [torch.ones(w.shape[0], dtype=torch.bool, device=w.device) for w in self.weights]
        cols = [
            torch.ones(w.shape[1], dtype=torch.bool, device=w.device) if w.dim() > 1 else None
            for w in self.weights
        ]
        for group, gone in zip(self.groups, removed):
            if not bool(gone.any()):
                continue
            for e in group.entries:
                if e.dim == 1 and not inputs:
                    continue
                target = rows[e.layer] if e.dim == 0 else cols[e.layer]
                assert target is not None
                target[e.index[gone.to(e.channel.device)[e.channel]]] = False
        return rows, cols

    def masks(self, removed: list[Tensor], inputs: bool = True) -> list[Tensor]:
        """Boolean masks of the prunable weights (layer order) with the ``removed`` channels
        (one boolean vector per group) and all their entries zero (``inputs`` False: only the
        rows that produce them, as SFP's soft prune)."""
        rows, cols = self._keep_vectors(removed, inputs)
        out = []
        for w, r, c in zip(self.weights, rows, cols):
            shape = [-1] + [1] * (w.dim() - 1)
            mask = r.view(shape)
            if c is not None:
                mask = mask & c.view([1, -1] + [1] * (w.dim() - 2))
            out.append(mask.expand(w.shape).clone())
        return out

    def sparsity_of(self, counts: list[int]) -> float:
        """The fraction of prunable weights that removing ``counts`` channels per group zeroes
        (it depends only on the counts: the zeros of a layer are its removed rows and columns)."""
        removed = [torch.arange(g.size) < k for g, k in zip(self.groups, counts)]
        rows, cols = self._keep_vectors(removed)
        total = kept = 0
        for w, r, c in zip(self.weights, rows, cols):
            rest = w.numel() // (w.shape[0] * (w.shape[1] if c is not None else 1))
            kept += int(r.sum()) * (int(c.sum()) if c is not None else 1) * rest
            total += w.numel()
        return 1.0 - kept / total

    def counts_for(self, target: float, floor: list[int] | None = None) -> list[int]:
        """Channels to remove per group: round(r·C) of every group (at least ``floor``, at most
        C − 1: a layer keeps one channel), for the uniform ratio r whose weight sparsity is
        nearest ``target`` (the lower one on a tie). One ratio for all layers stands in for
        Li et al.'s per-layer sensitivity analysis (docs/methods.md, l1-filter)."""
        floor = floor or [0] * len(self.groups)
        ratios = {0.0} | {
            (j + 0.5) / g.size + 1e-9 for g in self.groups for j in range(g.size)
        }  # every ratio at which some group's count changes
        best: tuple[float, float, list[int]] | None = None
        seen = set()
        for r in sorted(ratios):
            counts = tuple(
                min(g.size - 1, max(f, math.floor(r * g.size + 0.5)))
                for g, f in zip(self.groups, floor)
            )
            if counts in seen:
                continue
            seen.add(counts)
            s = self.sparsity_of(list(counts))
            key = (abs(s - target), s)
            if best is None or key < best[:2]:
                best = (*key, list(counts))
        assert best is not None
        return best[2]

    # ------------------------------------------------------------------------ the channels
    def _alive(self, entries_of) -> list[Tensor]:
        out = []
        with torch.no_grad():
            for group in self.groups:
                alive = torch.zeros(group.size, dtype=torch.bool)
                for e in entries_of(group):
                    w = self.weights[e.layer].detach()
                    other = [d for d in range(w.dim()) if d != e.dim]
                    nonzero = (w != 0).any(dim=other) if other else w != 0
                    alive[e.channel[nonzero[e.index]].cpu()] = True
                out.append(alive)
        return out

    def removed(self) -> list[Tensor]:
        """Per group, the channels whose every entry is zero."""
        return [~alive for alive in self._alive(lambda g: g.entries)]

    def unproduced(self) -> list[Tensor]:
        """Per group, the channels whose producing rows (output channels) are all zero."""
        return [~alive for alive in self._alive(lambda g: [e for e in g.entries if e.dim == 0])]

    def scores(self, p: int) -> list[Tensor]:
        """Per group, each channel's L_p norm over its producing rows (Li et al.'s filter L1
        norm for p = 1, SFP's L2 norm for p = 2; coupled producers' entries together)."""
        out = []
        with torch.no_grad():
            for group in self.groups:
                total = torch.zeros(group.size, dtype=torch.float64)
                for e in group.entries:
                    if e.dim != 0:
                        continue
                    w = self.weights[e.layer].detach().double()
                    rows = w.abs().pow(p).reshape(w.shape[0], -1).sum(dim=1)
                    total.index_add_(0, e.channel.cpu(), rows[e.index].cpu())
                out.append(total.pow(1.0 / p))
        return out

    def select(self, counts: list[int], p: int, keep: list[Tensor] | None = None) -> list[Tensor]:
        """Per group, the ``counts`` channels of lowest L_p score to remove; ``keep`` (already
        removed channels) stay removed and count towards it."""
        out = []
        for i, scores in enumerate(self.scores(p)):
            if keep is not None:
                scores = torch.where(keep[i], -math.inf, scores)
                k = max(counts[i], int(keep[i].sum()))
            else:
                k = counts[i]
            gone = torch.zeros(scores.numel(), dtype=torch.bool)
            if k > 0:
                gone[torch.topk(scores, k, largest=False, sorted=True).indices] = True
            out.append(gone)
        return out

    @torch.no_grad()
    def apply(self, removed: list[Tensor], inputs: bool = True) -> None:
        """Zero the ``removed`` channels and all their entries in the weights (``masks``)."""
        masks = [m.to(w.dtype) for m, w in zip(self.masks(removed, inputs), self.weights)]
        torch._foreach_mul_(self.weights, masks)

    # ----------------------------------------------------------------- the harness's part
    def project(self, target: float) -> None:
        """The final projection within the channel pattern: a channel nothing produces any
        more is removed with its dependants; if the weight sparsity is then short of the
        target, more channels go, the lowest filter L1 norms of each group, at the uniform
        ratio nearest the target (``counts_for``); a model already at or beyond it keeps its
        channels. No zero is added outside whole channels."""
        gone = self.unproduced()
        counts = self.counts_for(target, floor=[int(g.sum()) for g in gone])
        self.apply(self.select(counts, 1, keep=gone))

    def violations(self) -> int:
        """Zero weights outside the removed channels (0: the zeros are whole channels)."""
        keep = self.masks(self.removed())
        with torch.no_grad():
            return sum(int(((w == 0) & k).sum()) for w, k in zip(self.weights, keep))

    def check(self) -> None:
        """ValueError where the traced groups do not describe the model (a graph Torch-Pruning
        misreads, e.g. shortcuts that zero-pad channels): on a copy, the first channel of every
        group is removed, once as a mask and once for real, and the two must compute the same."""
        clone = copy.deepcopy(self.model)
        groups = ChannelGroups(clone, self.example)
        groups.apply([(torch.arange(g.size) == 0) & (g.size > 1) for g in groups.groups])
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, *self.example.shape[1:], generator=gen).to(self.example.device)
        try:
            small = groups.export()
            with torch.no_grad():
                clone.eval()
                small.eval()
                masked, exported = clone(x), small(x)
        except Exception as exc:  # noqa: BLE001 - any failure means the groups are wrong
            raise ValueError(f"removing channels breaks it ({type(exc).__name__}: {exc})") from None
        if masked.shape != exported.shape or not torch.allclose(
            masked, exported, rtol=1e-4, atol=1e-5 * float(masked.abs().max()) + 1e-6
        ):
            raise ValueError("the model with channels removed computes something else")

    def export(self) -> nn.Module:
        """A copy of the model with the removed channels taken out (Torch-Pruning), plain
        torch modules with smaller weights, computing what the masked model computes."""
        clone = copy.deepcopy(self.model)
        groups = ChannelGroups(clone, self.example)
        plans = [
            (g.root, torch.nonzero(gone).flatten().tolist())
            for g, gone in zip(groups.groups, groups.removed())
        ]
        for root, idxs in plans:
            if idxs and root is not None:
                module, handler = root
                groups.graph.get_pruning_group(module, handler, idxs=idxs).prune()
        return clone


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
