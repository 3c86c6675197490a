"""Layers whose effective weights one function computes from all latent weights at once.

DNW, STR, DST and CS reparametrize every prunable weight: each forward uses w_e = f(w, ...) for
every layer. Layer by layer, that is ~20 small ops per layer and step, and on the CPU each
op's dispatch costs about as much as its arithmetic on LeNet-5's 61k weights. So the latents
live in one flat buffer (each layer's Parameter a view of its slice, in the layer's memory
order: ``FlatLayout``), each formula step is one op over every layer's weights, and the
layers' effective weights are views of one flat result (``LayerBatch``), recomputed only
when an input changed. ``torch.nn.utils.parametrize`` attaches each to its layer
(``BatchedWeight``), so ``layer.weight`` is the effective weight everywhere. The effective
weights are leaves of the autograd graph: their gradients accumulate into one flat buffer,
and the method's ``on_backward`` turns that into the latents' gradients with the
formula's derivative written out (tested against autograd of the composed form). Measured on
LeNet-5 (``benchmarks/step_overhead.py``; docs/performance.md): the flat buffer made DST's
step 5 % faster than per-layer multi-tensor ops; leaves instead of a custom autograd function
took another ~3-8 % off STR's and DST's; results bit for bit the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from benchsuite.core.method import TrainState


def channels_last(t: Tensor) -> bool:
    """A 4-d tensor stored channels_last, by the rule convolutions pick their layout with
    (unit stride on the channels), which also decides for a single input channel, where
    both layouts describe the same memory."""
    return t.dim() == 4 and t.stride(1) == 1 and t.is_contiguous(memory_format=torch.channels_last)


class FlatLayout:
    """Where each of several tensors (one dtype, one device) lies in one flat buffer.

    Each tensor occupies a slice in its own memory order: a channels_last (O, I, H, W)
    weight as its (O, H, W, I) block, so its views keep the layout the convolution runs
    fastest with, and every output channel's (row's) entries are contiguous in either
    layout. Element-wise results and per-row or per-layer reductions over the flat form are
    those of the tensors themselves.
    """

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.shapes = [t.shape for t in tensors]
        self.permuted = [channels_last(t) for t in tensors]
        self.sizes = [t.numel() for t in tensors]
        ends = torch.tensor(self.sizes).cumsum(0).tolist()
        self.bounds = list(zip([0, *ends[:-1]], ends))
        self.numel = int(ends[-1])
        self.buffer: Tensor | None = None
        self.pointers: list[int] = []
        self._constants: dict[tuple, Tensor] = {}

    def __len__(self) -> int:
        return len(self.shapes)

    def flatten(self, tensors: Sequence[Tensor | None]) -> Tensor:
        """One new 1-d tensor of their values in layout order (a missing one as zeros)."""
        like = next(t for t in tensors if t is not None)
        parts = []
        for t, shape, permuted in zip(tensors, self.shapes, self.permuted):
            if t is None:
                t = like.new_zeros(shape)
            parts.append((t.permute(0, 2, 3, 1) if permuted else t).reshape(-1))
        return torch.cat(parts)

    def unflatten(self, flat: Tensor) -> list[Tensor]:
        """Views of ``flat`` with each tensor's shape and layout."""
        views = []
        for (a, b), shape, permuted in zip(self.bounds, self.shapes, self.permuted):
            if permuted:
                o, i, h, w = shape
                views.append(flat[a:b].view(o, h, w, i).permute(0, 3, 1, 2))
            else:
                views.append(flat[a:b].view(shape))
        return views

    def parts(self, flat: Tensor) -> list[Tensor]:
        """Each tensor's 1-d slice of ``flat``."""
        return [flat[a:b] for a, b in self.bounds]

    def rows(self, flat: Tensor) -> list[Tensor]:
        """Each tensor's slice of ``flat`` as (output channels, entries per channel)."""
        return [flat[a:b].view(shape[0], -1) for (a, b), shape in zip(self.bounds, self.shapes)]

    def sums(self, flat: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Per-tensor sums of ``flat``, as one 1-d tensor."""
        return torch.stack([flat[a:b].sum(dtype=dtype) for a, b in self.bounds])

    def constant(self, values: Sequence[float], dtype: torch.dtype, device: torch.device) -> Tensor:
        """``torch.tensor(values)`` on ``device``, made once: a host-to-device copy in every
        forward would make the accelerator paths wait for the host."""
        key = (tuple(values), dtype, str(device))
        if key not in self._constants:
            self._constants[key] = torch.tensor(values, dtype=dtype, device=device)
        return self._constants[key]

    def adopt(self, tensors: Sequence[Tensor]) -> None:
        """Make ``tensors`` views of one new buffer holding their values. Their ``.data`` is
        replaced; the Parameter objects (and so a model's and an optimizer's references)
        stay, and every later in-place update of them writes into the buffer."""
        with torch.no_grad():
            buffer = self.flatten([t.detach() for t in tensors])
        for t, view in zip(tensors, self.unflatten(buffer)):
            t.data = view
        self.buffer = buffer
        self.pointers = [t.data_ptr() for t in tensors]

    def adopted(self, tensors: Sequence[Tensor]) -> bool:
        return self.buffer is not None and all(
            t.data_ptr() == p for t, p in zip(tensors, self.pointers)
        )

    def flat(self, tensors: Sequence[Tensor]) -> Tensor:
        """Their values as one 1-d tensor: the buffer itself when they are its views, a new
        copy otherwise (tensors that were never adopted, as in the single-layer forms)."""
        if self.adopted(tensors):
            assert self.buffer is not None
            return self.buffer
        return self.flatten([t.detach() for t in tensors])


class LayerBatch:
    """Every prunable layer's effective weight, computed outside autograd, with the latents'
    gradients written out from the effective weights' own.

    A subclass gives the two halves of the method's formula over the flat latents:
    ``compute(w, out)`` writes the effective weights (and keeps what ``gradients`` needs),
    ``gradients(g, out)`` writes ∂L/∂w for the latents from g = ∂L/∂w_e and returns the extra
    inputs' gradients. The layers' weights are views of one flat buffer, leaves of the
    autograd graph whose gradients accumulate into one flat buffer too; ``backward`` (the
    method's ``on_backward``) turns them into the latents' and extras' gradients. Next to
    a custom autograd function this saves its graph node, the per-layer view nodes and the
    per-output gradient gathering, ~5 % of a LeNet-5 step (``benchmarks/step_overhead.py``).

    Exact: the effective weights depend only on the inputs and are recomputed whenever any
    input's version counter moved (the optimizer step, a hand edit, a loaded state, DST's
    reset); several forward/backward passes before a ``backward`` add up, as autograd's do.
    """

    def __init__(self, latents: Sequence[Tensor], extras: Sequence[Tensor] = ()) -> None:
        """``latents``: the layers' latent weights in layer order (adopted into one flat
        buffer); ``extras``: any other tensor the weights depend on (thresholds, logits)."""
        self.latents = list(latents)
        self.extras = list(extras)
        self.inputs = [*self.latents, *self.extras]
        self.layout = FlatLayout(self.latents)
        self.adopt()

    def adopt(self) -> None:
        """Make the latents views of one flat buffer and allocate the working buffers beside
        it; again whenever the latents are new tensors (a deep copy, a move to another device
        or dtype), so every buffer follows them."""
        self.layout.adopt(self.latents)
        like = self.latents[0]
        self.effective = like.new_empty(self.layout.numel)  # w_e, flat
        self.effective_grad = like.new_zeros(self.layout.numel)  # ∂L/∂w_e, accumulated
        self.weights = [v.requires_grad_() for v in self.layout.unflatten(self.effective)]
        self.weight_grads = self.layout.unflatten(self.effective_grad)
        for weight, grad in zip(self.weights, self.weight_grads):
            weight.grad = grad
        self.latent_grad = like.new_empty(self.layout.numel)  # ∂L/∂w, written by gradients
        self.latent_grads = self.layout.unflatten(self.latent_grad)
        self.scratch: dict[str, Tensor] = {}
        self.given: list[Tensor | None] = [None] * len(self.inputs)  # .grad handed out last
        self.key: tuple | None = None
        self.seen = self.effective_grad._version

    def buffer(self, name: str) -> Tensor:
        """A flat working buffer of the latents' size, kept between steps: a fresh 240 kB
        tensor per step on LeNet-5 costs the CPU allocator page faults, measured ~2 % of a
        step for DST's five."""
        if name not in self.scratch:
            self.scratch[name] = torch.empty_like(self.effective)
        return self.scratch[name]

    def compute(self, w: Tensor, out: Tensor) -> None:
        """Write the effective weights of the flat latents ``w`` into ``out``."""
        raise NotImplementedError

    def gradients(self, g: Tensor, out: Tensor) -> Sequence[Tensor]:
        """Write ∂L/∂w for the flat latents into ``out`` from g = ∂L/∂w_e (flat, read only);
        return the extras' gradients (views of a ``buffer`` allowed: a parameter that still
        holds one at the next call gets a copy first)."""
        raise NotImplementedError

    def current_key(self) -> tuple:
        return tuple(t._version for t in self.inputs)

    def output(self, i: int) -> Tensor:
        if self.key != self.current_key() or not self.layout.adopted(self.latents):
            self.refresh()
        return self.weights[i]

    @torch.no_grad()
    def refresh(self) -> None:
        if not self.layout.adopted(self.latents):  # e.g. a deep copy: new tensors
            self.adopt()
        assert self.layout.buffer is not None
        self.compute(self.layout.buffer, self.effective)
        self.key = self.current_key()  # after the computation (it may reset inputs)

    def invalidate(self) -> None:
        self.key = None

    @torch.no_grad()
    def backward(self) -> None:
        """Add the gradients that reached the effective weights since the last call to the
        latents' and extras' ``.grad``, and clear them (nothing to do without a backward)."""
        for weight, view in zip(self.weights, self.weight_grads):
            if weight.grad is not view:  # set to None (a model's zero_grad) or replaced
                if weight.grad is not None:
                    view.add_(weight.grad)
                weight.grad = view
        if self.effective_grad._version == self.seen:
            return
        for p, given in zip(self.inputs, self.given):
            if given is not None and p.grad is given:  # last step's view of a buffer, kept
                p.grad = given.clone()  # (zero_grad without set_to_none): not overwritten
        extra_grads = self.gradients(self.effective_grad, self.latent_grad)
        grads = [*self.latent_grads, *extra_grads]
        self.given = [accumulate(p, grad) for p, grad in zip(self.inputs, grads)]
        self.effective_grad.zero_()
        self.seen = self.effective_grad._version


def accumulate(p: Tensor, grad: Tensor) -> Tensor | None:
    """p.grad = grad (returned: the tensor given), or p.grad += grad where the parameter
    already has one (e.g. from a loss term on the latents themselves)."""
    if p.grad is None:
        p.grad = grad
        return grad
    p.grad.add_(grad)
    return None


def add_to_grads(params: Sequence[Tensor], terms: Sequence[Tensor], scale: float) -> None:
    """p.grad += scale · term for each pair (a missing gradient starts from zero)."""
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        for p, g in zip(params, grads):
            if g is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
    torch._foreach_add_(grads, list(terms), alpha=scale)


def add_l2_gradient(latents: Sequence[Tensor], state: TrainState) -> None:
    """The gradient of an explicit ½·wd·Σ‖w‖² on the latents, wd the optimizer's own weight
    decay (DST's and CS's reference code add it on top of SGD's: effective 2·wd); its value is
    never recorded, so only wd·w is added."""
    assert state.optimizer is not None
    wd = float(state.optimizer.param_groups[0]["weight_decay"])
    if wd:
        add_to_grads(latents, latents, wd)


class BatchedWeight(nn.Module):
    """The parametrization of layer ``index``: its effective weight from the shared batch.

    It may own the layer's extra parameters (thresholds, logits), so that they sit in the
    model and in the optimizer's single group.
    """

    def __init__(self, batch: LayerBatch | None, index: int) -> None:
        super().__init__()
        self.batch = batch
        self.index = index

    def forward(self, w: Tensor) -> Tensor:
        assert self.batch is not None
        if self.batch.inputs[self.index] is not w:  # e.g. a deep copy of the model
            raise RuntimeError("this parametrization's batch computes another tensor's weight")
        return self.batch.output(self.index)


def register_batched(
    modules: Sequence[nn.Module], parametrizations: Sequence[BatchedWeight]
) -> list[nn.Parameter]:
    """Register ``parametrizations`` on ``modules``' weights; returns the latent weights."""
    for m, p in zip(modules, parametrizations):
        # unsafe: skip the registration-time evaluation; the batch is bound afterwards
        parametrize.register_parametrization(m, "weight", p, unsafe=True)
    return [m.parametrizations.weight.original for m in modules]


@torch.no_grad()
def remove_batched(modules: Sequence[nn.Module], batch: LayerBatch) -> list[Tensor]:
    """Turn every layer's current effective weight into its plain weight tensor.

    All outputs are computed once before any layer changes, then each parametrization is
    removed and the latent (the same Parameter object) overwritten with its output, in
    storage of its own again (a plain model, not views of the batch's buffer).
    """
    batch.invalidate()
    outputs = [batch.output(i).detach() for i in range(len(modules))]
    for m, out in zip(modules, outputs):
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        m.weight.data = out.clone(memory_format=torch.preserve_format)
    return [m.weight for m in modules]
