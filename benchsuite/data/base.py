"""Datasets with fixed splits, batched by tensor indexing.

Every dataset has a fixed test split and a validation split held out of the training set
with ``split_seed``, independent of the run seed, so that every method and every seed sees
the same three splits (docs/protocol.md, Splits). Training order and augmentation come from two
caller-supplied generators, so that two methods under one seed see identical batches.

In-memory datasets (``TensorDataset``) keep their raw pixels (uint8) on the CPU and build a
whole batch with one index operation; scaling, augmentation and normalisation then run batched
on the target device. ImageNet streams from class folders (``imagefolder.py``).

A dataset is a loader ``(data_dir, split_seed, val_fraction, **options) -> Dataset``
registered in the ``benchsuite.datasets`` entry-point group (the built-ins, in
``datasets.py``, too); its keyword-only parameters are its options (docs/extending.md).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchsuite.core.registry import Registry, UnknownName, callable_entries, discover

GROUP = "benchsuite.datasets"
Batch = tuple[Tensor, Tensor]


class DataError(ValueError):
    """Bad or missing data; the one-line message names the bad value or path and what is
    expected (the CLI turns it into exit code 2)."""


# --------------------------------------------------------------------------- base class


class Dataset:
    """What the harness needs from a dataset: metadata, one epoch of training batches,
    and evaluation passes over the validation and test splits."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    n_train: int
    n_val: int
    n_test: int
    fingerprint: str
    test_reads: int = 0

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch (the last partial batch is dropped)."""
        check_batch_size(batch_size)
        steps = self.n_train // batch_size
        if steps == 0:
            raise DataError(
                f"batch size {batch_size} is larger than the {self.n_train}-image training "
                f"split of {self.name}; expected at most {self.n_train}"
            )
        return steps

    def train_batches(
        self,
        batch_size: int,
        order: torch.Generator,
        augment: torch.Generator,
        device: torch.device | str,
    ) -> Iterator[Batch]:
        """One epoch: a permutation drawn from ``order`` (CPU generator), the last partial
        batch dropped; train augmentation drawn from ``augment`` (CPU generator)."""
        raise NotImplementedError

    def val_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        """All validation samples in a fixed order, with test transforms."""
        raise NotImplementedError

    def test_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        """All test samples in a fixed order; counts the call in ``test_reads`` (the
        harness checks that the test split is read once, after ``finalize``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, train={self.n_train}, val={self.n_val}, "
            f"test={self.n_test}, shape={self.input_shape}, classes={self.num_classes})"
        )


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch size must be a positive integer, got {batch_size!r}")


# --------------------------------------------------------------------------- in memory


class TensorDataset(Dataset):
    """A dataset held as CPU tensors of raw values.

    A batch is ``x[idx]`` moved to the device, then ``x * scale``, the train augmentation
    (train batches only), and ``(x - mean) / std`` per channel; all of it batched, so there
    is no per-sample Python. A split that is never augmented (validation, test, and train
    without augmentation) is scaled and normalised once, on first use, with the same
    operations, so its batches are bitwise the same and cost one gather. The test tensors
    come from ``load_test`` on the first ``test_batches`` call, and must hash to
    ``test_digest`` (the fingerprint covers them).
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        load_test: Callable[[], tuple[Tensor, Tensor]],
        *,
        n_test: int,
        fingerprint: str,
        test_digest: str | None = None,
        scale: float = 1.0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        split: dict[str, Tensor] | None = None,
    ) -> None:
        self.name = name
        self.num_classes = num_classes
        self._x_train, self._y_train = train
        self._x_val, self._y_val = val
        self._load_test = load_test
        self._test: tuple[Tensor, Tensor] | None = None
        self._test_digest = test_digest
        self.input_shape = tuple(self._x_train.shape[1:])  # type: ignore[assignment]
        self.n_train = len(self._y_train)
        self.n_val = len(self._y_val)
        self.n_test = n_test
        self.fingerprint = fingerprint
        self.test_reads = 0
        self._scale = scale
        channels = self.input_shape[0]
        self._mean = torch.tensor(mean if mean is not None else (0.0,) * channels)
        self._std = torch.tensor(std if std is not None else (1.0,) * channels)
        self._augment = augment
        # Positions of each split in the source arrays (for audits and tests).
        self.split: dict[str, Tensor] = split or {}
        self._ready: dict[str, Tensor] = {}  # split → normalised float tensor (CPU)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ready"] = {}  # rebuilt where it is used: never shipped to Ray workers
        return state

    def _normalised(self, split: str, x: Tensor) -> Tensor:
        """``x`` scaled and normalised as ``_prepare`` does, once per split."""
        if split not in self._ready:
            self._ready[split] = self._prepare(x, torch.device("cpu"), None)
        return self._ready[split]

    @staticmethod
    def _to_device(x: Tensor, device: torch.device) -> Tensor:
        # Pinning lets the host-to-device copy overlap; the caching host allocator keeps the
        # pinned block alive until the copy has finished.
        if device.type == "cuda":
            x = x.pin_memory()
        return x.to(device, non_blocking=True)

    def _prepare(self, x: Tensor, device: torch.device, augment: torch.Generator | None) -> Tensor:
        x = self._to_device(x, device).float()
        if self._scale != 1.0:
            x = x * self._scale
        if augment is not None and self._augment is not None:
            x = self._augment(x, augment)
        mean = self._mean.to(device).view(-1, 1, 1)
        std = self._std.to(device).view(-1, 1, 1)
        return (x - mean) / std

    def train_batches(
        self,
        batch_size: int,
        order: torch.Generator,
        augment: torch.Generator,
        device: torch.device | str,
    ) -> Iterator[Batch]:
        steps = self.steps_per_epoch(batch_size)  # validates before the first draw
        device = torch.device(device)
        return self._train_iter(steps, batch_size, order, augment, device)

    def _train_iter(
        self,
        steps: int,
        batch_size: int,
        order: torch.Generator,
        augment: torch.Generator,
        device: torch.device,
    ) -> Iterator[Batch]:
        perm = torch.randperm(self.n_train, generator=order)
        ready = None if self._augment is not None else self._normalised("train", self._x_train)
        for step in range(steps):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            # index_select: the same gather as x[idx], about 3× faster on CPU
            if ready is None:
                x = self._prepare(self._x_train.index_select(0, idx), device, augment)
            else:
                x = self._to_device(ready.index_select(0, idx), device)
            yield x, self._to_device(self._y_train.index_select(0, idx), device)

    def _eval_iter(self, split: str, x: Tensor, y: Tensor, batch_size: int, device: torch.device):
        ready = self._normalised(split, x)
        for start in range(0, len(y), batch_size):
            xb = self._to_device(ready[start : start + batch_size], device)
            yield xb, self._to_device(y[start : start + batch_size], device)

    def val_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        check_batch_size(batch_size)
        return self._eval_iter("val", self._x_val, self._y_val, batch_size, torch.device(device))

    def test_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        check_batch_size(batch_size)
        self.test_reads += 1
        if self._test is None:
            x, y = self._load_test()
            if self._test_digest is not None and digest(x, y) != self._test_digest:
                raise DataError(
                    f"{self.name}: the test split changed on disk since it was loaded; "
                    "expected the data the fingerprint was computed from"
                )
            self._test = (x, y)
        x, y = self._test
        return self._eval_iter("test", x, y, batch_size, torch.device(device))


# --------------------------------------------------------------------------- helpers


def digest(*arrays: Tensor | np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of each array, in order."""
    h = hashlib.sha256()
    for a in arrays:
        arr = a.numpy() if isinstance(a, Tensor) else a
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def holdout(n: int, split_seed: int, val_fraction: float, name: str) -> tuple[Tensor, Tensor]:
    """(train, val) positions: the first ``round(val_fraction * n)`` entries of a permutation
    drawn from a generator seeded with ``split_seed`` are the validation split."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_val = round(val_fraction * n)
    if n_val < 1 or n - n_val < 1:
        raise DataError(
            f"{name}: val_fraction {val_fraction} of {n} training images leaves an empty "
            "split; expected at least one image in train and in val"
        )
    val, train = perm[:n_val], perm[n_val:]
    return train.sort().values, val.sort().values


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")


# --------------------------------------------------------------------------- registry

Loader = Callable[..., Dataset]  # (data_dir, split_seed, val_fraction, **options)


@cache
def dataset_registry() -> Registry[Loader]:
    """The datasets (cached; ``dataset_registry.cache_clear()`` discovers them again)."""
    return discover(Registry("dataset", GROUP, callable_entries("dataset", "loader")))


def list_datasets() -> list[str]:
    return dataset_registry().names()


def options(loader: Loader) -> set[str]:
    """A loader's options: its keyword-only parameters, less a template's bound fields."""
    bound = getattr(loader, "keywords", {})
    params = inspect.signature(loader).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in bound}


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    split_seed: int = 42,
    val_fraction: float = 0.1,
    **kwargs: Any,
) -> Dataset:
    """Load a dataset with its fixed splits; ``split_seed`` fixes them independently of the
    run seed. ``kwargs`` are the loader's options (synthetic: ``n``, ``n_test``, ``shape``,
    ``num_classes``; imagenet: ``image_size``, ``num_workers``)."""
    try:
        loader = dataset_registry().get(name)
    except UnknownName as exc:
        raise DataError(str(exc)) from None
    allowed = options(loader)
    unknown = set(kwargs) - allowed
    if unknown:
        raise DataError(
            f"{name} takes no option {', '.join(sorted(unknown))}; "
            f"expected: {', '.join(sorted(allowed)) or 'none'}"
        )
    check_val_fraction(val_fraction)
    return loader(data_dir, split_seed, val_fraction, **kwargs)
