"""The deployable form of a finished model: what runs faster, if anything does.

- unstructured: the masked model itself. Its zeros sit in dense tensors and dense kernels
  multiply them, so it runs at the dense model's speed (PyTorch's CSR kernels were measured
  slower than dense on the CPU, docs/performance.md).
- channel: the physically smaller model (``ChannelGroups.export``, Torch-Pruning), plain torch
  modules; saved with ``torch.export`` it loads with plain torch (``save_program``).
- N:M: on CUDA with compute capability >= 8.0, every Linear layer whose weight is 2:4 along its
  input (1:4 and 2:4 are; convolutions have no semi-structured kernel in torch) in torch's
  semi-structured layout (``torch.sparse.to_sparse_semi_structured``), in float16, since
  cuSPARSELt, torch's default backend for it, has no float32 kernel. Elsewhere there is no
  such kernel: the form is unavailable, and its speedup is recorded as unavailable, never as
  the masked model's ≈ 1.0×.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchsuite.pruning.channels import ChannelGroups
from benchsuite.pruning.patterns import CHANNEL, NM, Pattern, nm_eligible, nm_violations

SEMI_STRUCTURED_DTYPE = torch.float16  # cuSPARSELt has no float32 kernel
# chosen here: rows and columns padded to multiples of (32, 64), the larger of the minimal tiles
# of torch's two semi-structured backends (CUTLASS 32×64, cuSPARSELt 16×16 for float16)
SEMI_STRUCTURED_TILE = (32, 64)


@dataclass
class Deployable:
    """What a run deploys: the module (None where it cannot be built), how it was made, its
    dtype, and why there is none."""

    module: nn.Module | None
    form: str
    dtype: torch.dtype = torch.float32
    unavailable: str | None = None


def semi_structured_unavailable(device: torch.device) -> str | None:
    """Why torch has no semi-structured sparse kernel on ``device`` (None where it has)."""
    need = "torch.sparse.to_sparse_semi_structured needs CUDA with compute capability >= 8.0"
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"no 2:4 sparse kernel on {device.type}: {need}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 0):
        name = torch.cuda.get_device_name(device)
        return f"no 2:4 sparse kernel on {name} (compute capability {major}.{minor}): {need}"
    return None


class SemiStructuredLinear(nn.Module):
    """A Linear layer with its weight zero-padded to whole kernel tiles and converted by
    ``convert`` (torch's semi-structured layout); the input is padded to match and the
    padded outputs are dropped. Padding with zeros keeps every group of 4 at most 2:4."""

    def __init__(
        self,
        linear: nn.Linear,
        convert: Callable[[Tensor], Tensor],
        tile: tuple[int, int] = SEMI_STRUCTURED_TILE,
    ) -> None:
        super().__init__()
        w = linear.weight.detach()
        rows, cols = w.shape
        self.out_features = rows
        self.pad_in = (-cols) % tile[1]
        padded = F.pad(w, (0, self.pad_in, 0, (-rows) % tile[0])).contiguous()
        self.weight = nn.Parameter(convert(padded), requires_grad=False)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_in:
            x = F.pad(x, (0, self.pad_in))
        y = F.linear(x, self.weight)[..., : self.out_features]
        return y if self.bias is None else y + self.bias


def semi_structured(
    model: nn.Module, convert: Callable[[Tensor], Tensor] | None = None
) -> tuple[nn.Module, list[str]]:
    """``model`` with every Linear layer whose weight is 2:4 along its input replaced by a
    ``SemiStructuredLinear`` (in place); the names of the layers replaced."""
    if convert is None:
        convert = torch.sparse.to_sparse_semi_structured
    done = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            w = child.weight
            if nm_eligible(w, 4) and nm_violations([w], 2, 4) == 0:
                setattr(module, child_name, SemiStructuredLinear(child, convert))
                done.append(f"{name}.{child_name}" if name else child_name)
    return model, done


def deployable(
    model: nn.Module, pattern: Pattern, device: torch.device, example: Tensor
) -> Deployable:
    """The deployable form of a finished ``model`` (on ``device``; ``example``: one input
    batch, to trace a model's channels). The masked model itself is used, not copied, where
    the form is the masked model."""
    if pattern.kind == CHANNEL:
        return Deployable(ChannelGroups(model, example).export(), "channels removed")
    if pattern.kind == NM:
        why = semi_structured_unavailable(device)
        if why is not None:
            return Deployable(None, "semi-structured 2:4", SEMI_STRUCTURED_DTYPE, why)
        half = copy.deepcopy(model).to(SEMI_STRUCTURED_DTYPE)
        converted, layers = semi_structured(half)
        if not layers:
            why = f"no Linear layer of this model is 2:4 along its input ({pattern})"
            return Deployable(None, "semi-structured 2:4", SEMI_STRUCTURED_DTYPE, why)
        form = f"semi-structured 2:4 ({', '.join(layers)}; the rest dense)"
        return Deployable(converted, form, SEMI_STRUCTURED_DTYPE)
    return Deployable(model, "masked (dense kernels)")


def save_program(module: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """``module`` as a ``torch.export`` program with a dynamic batch dimension: it loads with
    plain torch (``torch.export.load(path).module()``), without benchsuite."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        first = next(module.parameters())
        # a batch of 2: with 1, export would specialise the batch dimension
        sample = torch.zeros(2, *input_shape, device=first.device, dtype=first.dtype)
        program = torch.export.export(module, (sample,), dynamic_shapes=({0: batch},))
    finally:
        for m, flag in flags.items():
            m.training = flag
    torch.export.save(program, str(path))
