"""Datasets with fixed splits, batched by tensor indexing.

Every dataset has a fixed test split and a validation split held out of the training set
with ``split_seed``, independent of the run seed, so that every method and every seed sees
the same three splits (docs/protocol.md, Splits). Training order and augmentation come from two
caller-supplied generators, so that two methods under one seed see identical batches.

In-memory datasets (digits, fashion-mnist, cifar10/100, synthetic) keep their raw pixels
(uint8) on the CPU and build a whole batch with one index operation; scaling, augmentation
and normalisation then run batched on the target device. ImageNet streams from class
folders through a ``DataLoader`` whose per-sample augmentation is seeded from ``augment``,
so its batches do not depend on the number of workers.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DATASETS: tuple[str, ...] = (
    "digits",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "imagenet",
    "synthetic",
)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_HINT = (
    "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) "
    "or pass --data-dir"
)
# Mean/std of the pixel values (scaled to [0, 1]) over the official 60,000-image training set,
# computed once from the idx files: 0.28604 / 0.35302.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
# Per-channel mean/std of the official training sets (pixels in [0, 1]); the std is the plain
# per-pixel standard deviation (not the often-copied 0.2023/0.1994/0.2010).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
        _check_batch_size(batch_size)
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


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch size must be a positive integer, got {batch_size!r}")


# --------------------------------------------------------------------------- in memory


Augment = Callable[[Tensor, torch.Generator], Tensor]


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
        augment: Augment | None = None,
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
        _check_batch_size(batch_size)
        return self._eval_iter("val", self._x_val, self._y_val, batch_size, torch.device(device))

    def test_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        _check_batch_size(batch_size)
        self.test_reads += 1
        if self._test is None:
            x, y = self._load_test()
            if self._test_digest is not None and _digest(x, y) != self._test_digest:
                raise DataError(
                    f"{self.name}: the test split changed on disk since it was loaded; "
                    "expected the data the fingerprint was computed from"
                )
            self._test = (x, y)
        x, y = self._test
        return self._eval_iter("test", x, y, batch_size, torch.device(device))


# --------------------------------------------------------------------------- helpers


def _digest(*arrays: Tensor | np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of each array, in order."""
    h = hashlib.sha256()
    for a in arrays:
        arr = a.numpy() if isinstance(a, Tensor) else a
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _holdout(n: int, split_seed: int, val_fraction: float, name: str) -> tuple[Tensor, Tensor]:
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


def _check_val_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")


# --------------------------------------------------------------------------- augmentation


def crop_flip(x: Tensor, padding: int, offsets: Tensor, flip: Tensor) -> Tensor:
    """Random crop of the original size from the zero-padded batch, then a horizontal flip
    where ``flip`` is true; one gather for the whole batch.

    ``offsets`` is (B, 2) int (top, left) in [0, 2*padding]; ``flip`` is (B,) bool.
    """
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = offsets.to(dev)
    rows = offsets[:, 0:1] + torch.arange(h, device=dev)  # (B, H)
    cols = torch.where(
        flip.to(dev)[:, None],
        torch.arange(w - 1, -1, -1, device=dev),
        torch.arange(w, device=dev),
    )
    cols = offsets[:, 1:2] + cols  # (B, W); the flip reverses the columns of the crop
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image about its centre by its own angle (counter-clockwise as displayed),
    nearest-neighbour, zero fill: torchvision's RandomRotation defaults, batched."""
    b, _, h, w = x.shape
    rad = torch.deg2rad(degrees.to(x.device, torch.float32))
    cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid maps output to input coordinates in [-1, 1]; the aspect terms keep the
    # rotation rigid in pixel space when H != W.
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def cifar_augment(max_degrees: float = 0.0, padding: int = 4) -> Augment:
    """docs/protocol.md: crop 32 with padding 4, horizontal flip (CIFAR-10), plus a uniform
    rotation in [-max_degrees, max_degrees] (CIFAR-100: 15°). All draws come from the
    ``augment`` generator on the CPU, so they do not depend on the device."""

    def apply(x: Tensor, gen: torch.Generator) -> Tensor:
        n = x.shape[0]
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        x = crop_flip(x, padding, offsets, flip)
        if max_degrees > 0:
            angles = (torch.rand(n, generator=gen) * 2 - 1) * max_degrees
            x = rotate(x, angles)
        return x

    return apply


# --------------------------------------------------------------------------- digits


def _stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held out) positions of ``labels``: ⌈fraction · n⌉ held out, every class in
    proportion (⌊fraction · n_c⌋ each, the remainder to the classes with the largest
    fractional parts, ties in random order), each class's members drawn at random.

    Written here rather than scikit-learn's ``train_test_split``: importing scikit-learn
    costs ~1 s of every command's start-up (issue 4), and this is all the digits split needs.
    """
    classes, counts = np.unique(labels, return_counts=True)
    total = math.ceil(fraction * len(labels))
    share = fraction * counts
    take = np.floor(share).astype(np.int64)
    order = rng.permutation(len(classes))  # random tie-break, then a stable sort
    ranked = order[np.argsort(-(share - take)[order], kind="stable")]
    take[ranked[: total - int(take.sum())]] += 1
    if np.any(take < 1) or np.any(take >= counts):
        raise ValueError(f"holding out {fraction} leaves a class without a member on one side")
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    held_out = np.concatenate(held)
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) uint8 in 0..16, labels) from the copy scikit-learn ships.

    Read straight from the package's ``digits.csv.gz`` (64 pixels and the label per row):
    the package is located without importing it.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("digits: scikit-learn is not installed (it ships the dataset)")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"digits: {path} is missing from this scikit-learn installation")
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1].astype(np.uint8).reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _load_digits(split_seed: int, val_fraction: float) -> TensorDataset:
    images, target = digits_arrays()
    x = torch.from_numpy(images).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(target)
    rng = np.random.default_rng(split_seed)
    rest, test = _stratified_holdout(target, 0.2, rng)
    try:
        kept, held = _stratified_holdout(target[rest], val_fraction, rng)
    except ValueError as err:
        raise DataError(f"digits: val_fraction {val_fraction} is too small: {err}") from None
    train, val = rest[kept], rest[held]
    train, val, test = (torch.from_numpy(np.sort(i)) for i in (train, val, test))
    scale = 1.0 / 16.0
    train_pixels = x[train].double() * scale
    mean, std = train_pixels.mean().item(), train_pixels.std().item()
    return TensorDataset(
        "digits",
        10,
        (x[train], y[train]),
        (x[val], y[val]),
        lambda: (x[test], y[test]),
        n_test=len(test),
        fingerprint=_fingerprint("digits", "stratified-holdout", _digest(images, target)),
        scale=scale,
        mean=(mean,),
        std=(std,),
        split={"train": train, "val": val, "test": test},
    )


# --------------------------------------------------------------------------- idx files

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an idx file (LeCun's MNIST format), gzipped if the name ends in ``.gz``.

    Header: two zero bytes, a type code, the number of dimensions, then each dimension as a
    big-endian uint32; the data follow big-endian.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot read idx file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw)} bytes; expected {expected} for shape {dims}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(
        dtype.newbyteorder("="), copy=True
    )


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"fashion-mnist: {directory} has no {stem}[.gz]; {_FMNIST_HINT}")


def _read_idx_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"fashion-mnist: {directory}/{prefix}-* holds images {images.shape} and labels "
            f"{labels.shape}; expected (N, H, W) and (N,)"
        )
    return images.astype(np.uint8), labels.astype(np.int64)


def _load_fashion_mnist(
    data_dir: str | Path | None, split_seed: int, val_fraction: float
) -> TensorDataset:
    directory = Path(data_dir).expanduser() if data_dir is not None else FASHION_MNIST_DIR
    if not directory.is_dir():
        raise DataError(f"fashion-mnist: no data directory {directory}; {_FMNIST_HINT}")
    for prefix in ("train", "t10k"):  # report a missing file before any parsing
        _find_idx(directory, f"{prefix}-images-idx3-ubyte")
        _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = _read_idx_pair(directory, "train")
    test_images, test_labels = _read_idx_pair(directory, "t10k")
    if labels.min() < 0 or max(labels.max(), test_labels.max()) > 9:
        raise DataError(f"fashion-mnist: labels in {directory} outside 0..9")
    # Hashed in the (N, 1, H, W) form that load_test returns, which test_batches re-checks.
    test_digest = _digest(test_images[:, None], test_labels)
    n_test = len(test_labels)
    del test_images, test_labels  # loaded again on the first test_batches call

    def load_test() -> tuple[Tensor, Tensor]:
        xt, yt = _read_idx_pair(directory, "t10k")
        return torch.from_numpy(xt).unsqueeze(1), torch.from_numpy(yt)

    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    train, val = _holdout(len(y), split_seed, val_fraction, "fashion-mnist")
    return TensorDataset(
        "fashion-mnist",
        10,
        (x[train], y[train]),
        (x[val], y[val]),
        load_test,
        n_test=n_test,
        fingerprint=_fingerprint("fashion-mnist", _digest(images, labels), test_digest),
        test_digest=test_digest,
        scale=1.0 / 255.0,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        split={"train": train, "val": val},
    )


# --------------------------------------------------------------------------- CIFAR


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles; allow only what a dict of numpy arrays and lists needs,
    so a crafted file in a data directory cannot run code."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core"):  # numpy 1 names, as in the official files
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"cannot read CIFAR batch {path}: {err}") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR batch (expected a dict of arrays)")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise DataError(f"{path} has no 'data'/'{label_key}' entries; expected a CIFAR batch")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(
            f"{path} holds data {data.shape} and {len(labels)} labels; expected (N, 3072)"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(
    name: str, data_dir: str | Path | None, split_seed: int, val_fraction: float
) -> TensorDataset:
    if name == "cifar10":
        folder, train_files, test_file, label_key, classes = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "test_batch",
            "labels",
            10,
        )
        mean, std, augment = CIFAR10_MEAN, CIFAR10_STD, cifar_augment()
    else:
        folder, train_files, test_file, label_key, classes = (
            "cifar-100-python",
            ["train"],
            "test",
            "fine_labels",
            100,
        )
        mean, std, augment = CIFAR100_MEAN, CIFAR100_STD, cifar_augment(max_degrees=15.0)
    expected = f"{folder}/{{{','.join(train_files)},{test_file}}}"
    if data_dir is None:
        raise DataError(f"{name} needs --data-dir: a directory holding {expected}")
    root = Path(data_dir).expanduser()
    candidates = [root / folder, root]
    directory = next((d for d in candidates if (d / test_file).is_file()), None)
    if directory is None:
        raise DataError(f"{name}: {root} holds no {expected}; pass --data-dir")
    missing = [f for f in train_files if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{name}: {directory} lacks {', '.join(missing)}; expected {expected}")
    parts = [_read_cifar_batch(directory / f, label_key) for f in train_files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = _read_cifar_batch(directory / test_file, label_key)
    if labels.min() < 0 or max(labels.max(), test_labels.max()) >= classes:
        raise DataError(f"{name}: labels in {directory} outside 0..{classes - 1}")
    test_digest = _digest(test_images, test_labels)
    n_test = len(test_labels)
    del test_images, test_labels

    def load_test() -> tuple[Tensor, Tensor]:
        xt, yt = _read_cifar_batch(directory / test_file, label_key)
        return torch.from_numpy(xt), torch.from_numpy(yt)

    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    train, val = _holdout(len(y), split_seed, val_fraction, name)
    return TensorDataset(
        name,
        classes,
        (x[train], y[train]),
        (x[val], y[val]),
        load_test,
        n_test=n_test,
        fingerprint=_fingerprint(name, _digest(images, labels), test_digest),
        test_digest=test_digest,
        scale=1.0 / 255.0,
        mean=mean,
        std=std,
        augment=augment,
        split={"train": train, "val": val},
    )


# --------------------------------------------------------------------------- synthetic


def _load_synthetic(
    split_seed: int,
    val_fraction: float,
    n: int = 512,
    n_test: int = 128,
    shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
) -> TensorDataset:
    """Gaussian noise around one random prototype per class: learnable, deterministic."""
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 1 or n < 2 or n_test < 1 or num_classes < 2:
        raise DataError(
            f"synthetic: n={n}, n_test={n_test}, shape={shape}, num_classes={num_classes}; "
            "expected n >= 2, n_test >= 1, a (C, H, W) shape, num_classes >= 2"
        )
    gen = torch.Generator().manual_seed(split_seed)
    prototypes = torch.randn(num_classes, *shape, generator=gen)
    y = torch.randint(0, num_classes, (n + n_test,), generator=gen)
    x = prototypes[y] + torch.randn(n + n_test, *shape, generator=gen)
    x_test, y_test = x[n:], y[n:]
    x, y = x[:n], y[:n]
    train, val = _holdout(n, split_seed, val_fraction, "synthetic")
    digest = _digest(x, y, x_test, y_test)
    return TensorDataset(
        "synthetic",
        num_classes,
        (x[train], y[train]),
        (x[val], y[val]),
        lambda: (x_test, y_test),
        n_test=n_test,
        fingerprint=_fingerprint("synthetic", digest),
        split={"train": train, "val": val},
    )


# --------------------------------------------------------------------------- ImageNet


def random_resized_crop_box(
    height: int,
    width: int,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style crop (Szegedy et al. 2015): area a uniform
    fraction of the image in ``scale``, aspect ratio log-uniform in ``ratio``; up to ten
    tries, else the largest centred crop whose ratio is clamped into ``ratio``. Drawn from
    ``gen`` rather than the global RNG, so each sample's crop is reproducible."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class _SeededImages(torch.utils.data.Dataset):
    """Indexed by (position, seed): seed >= 0 applies the train transform drawn from a
    generator seeded with it; seed < 0 applies the eval transform."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int, resize: int) -> None:
        self.samples = samples
        self.image_size = image_size
        self.resize = resize
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        from torchvision.datasets.folder import default_loader
        from torchvision.transforms.v2 import functional as TF

        position, seed = key
        path, label = self.samples[position]
        img = TF.pil_to_tensor(default_loader(path))  # uint8 (3, H, W)
        size = [self.image_size, self.image_size]
        if seed >= 0:
            gen = torch.Generator().manual_seed(seed)
            top, left, h, w = random_resized_crop_box(img.shape[1], img.shape[2], gen)
            img = TF.resized_crop(img, top, left, h, w, size, antialias=True)
            if torch.rand(1, generator=gen).item() < 0.5:
                img = TF.horizontal_flip(img)
        else:
            img = TF.resize(img, [self.resize], antialias=True)
            img = TF.center_crop(img, size)
        x = img.float().div_(255.0)
        return (x - self.mean) / self.std, label


class _TrainBatchSampler(torch.utils.data.Sampler):
    """One epoch of (position, seed) batches: order from ``order``, one augmentation seed
    per sample from ``augment``, last partial batch dropped."""

    def __init__(
        self, positions: Tensor, batch_size: int, order: torch.Generator, augment: torch.Generator
    ) -> None:
        self.positions = positions
        self.batch_size = batch_size
        self.order = order
        self.augment = augment

    def __len__(self) -> int:
        return len(self.positions) // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        n = len(self.positions)
        perm = torch.randperm(n, generator=self.order)
        seeds = torch.randint(0, 2**62, (n,), generator=self.augment)
        chosen = self.positions[perm].tolist()
        seeds_l = seeds.tolist()
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield list(zip(chosen[sl], seeds_l[sl], strict=True))


class ImageFolderDataset(Dataset):
    """ImageNet-style ``train/`` and ``val/`` class folders, streamed by a DataLoader.

    Train: RandomResizedCrop(image_size) + horizontal flip; eval: Resize(image_size·256/224)
    → CenterCrop(image_size); ImageNet normalisation. Validation = ``val_fraction`` of
    ``train/`` held out with ``split_seed``; test = the official ``val/`` folder.
    """

    def __init__(
        self,
        root: Path,
        split_seed: int,
        val_fraction: float,
        image_size: int = 224,
        num_workers: int | None = None,
        name: str = "imagenet",
    ) -> None:
        from torchvision.datasets import ImageFolder

        self.name = name
        train_dir, test_dir = root / "train", root / "val"
        for d in (train_dir, test_dir):
            if not d.is_dir():
                raise DataError(
                    f"{name}: no {d}; expected {root}/train/<class>/* and {root}/val/<class>/*"
                )
        try:
            train_folder = ImageFolder(str(train_dir))
            test_folder = ImageFolder(str(test_dir))
        except (FileNotFoundError, OSError) as err:
            raise DataError(f"{name}: {err}".replace("\n", " ")) from None
        if test_folder.class_to_idx != train_folder.class_to_idx:
            raise DataError(
                f"{name}: the class folders of {test_dir} differ from those of {train_dir}; "
                "expected the same class names"
            )
        self.num_classes = len(train_folder.classes)
        self.classes = list(train_folder.classes)
        self.image_size = image_size
        resize = round(image_size * 256 / 224)
        self._train_set = _SeededImages(list(train_folder.samples), image_size, resize)
        self._test_set = _SeededImages(list(test_folder.samples), image_size, resize)
        self.input_shape = (3, image_size, image_size)
        train, val = _holdout(len(train_folder.samples), split_seed, val_fraction, name)
        self.split = {"train": train, "val": val}
        self.n_train, self.n_val = len(train), len(val)
        self.n_test = len(test_folder.samples)
        self.num_workers = (
            min(8, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        )
        self.test_reads = 0
        h = hashlib.sha256()
        for sub, samples in (("train", train_folder.samples), ("val", test_folder.samples)):
            for path, label in sorted(samples):
                rel = Path(path).relative_to(root).as_posix()
                h.update(f"{sub}|{rel}|{label}|{os.path.getsize(path)}\n".encode())
        self.fingerprint = _fingerprint(name, h.hexdigest())

    def _loader(self, dataset: _SeededImages, device: torch.device, **kw: Any):
        # A private generator for the loader's worker base seed, which would otherwise be
        # drawn from (and advance) the global RNG every epoch.
        return torch.utils.data.DataLoader(
            dataset,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(0),
            **kw,
        )

    def _moved(self, loader, device: torch.device) -> Iterator[Batch]:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def train_batches(
        self,
        batch_size: int,
        order: torch.Generator,
        augment: torch.Generator,
        device: torch.device | str,
    ) -> Iterator[Batch]:
        self.steps_per_epoch(batch_size)
        device = torch.device(device)
        sampler = _TrainBatchSampler(self.split["train"], batch_size, order, augment)
        return self._moved(self._loader(self._train_set, device, batch_sampler=sampler), device)

    def _eval(self, dataset: _SeededImages, positions: list[int], batch_size: int, device):
        _check_batch_size(batch_size)
        device = torch.device(device)
        keys = [(p, -1) for p in positions]
        batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
        return self._moved(self._loader(dataset, device, batch_sampler=batches), device)

    def val_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        return self._eval(self._train_set, self.split["val"].tolist(), batch_size, device)

    def test_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        _check_batch_size(batch_size)
        self.test_reads += 1
        return self._eval(self._test_set, list(range(self.n_test)), batch_size, device)


# --------------------------------------------------------------------------- entry point

_OPTIONS = {
    "synthetic": {"n", "n_test", "shape", "num_classes"},
    "imagenet": {"image_size", "num_workers"},
}


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    split_seed: int = 42,
    val_fraction: float = 0.1,
    **options: Any,
) -> Dataset:
    """Load a dataset with its fixed splits; ``split_seed`` fixes them independently of the
    run seed. ``options``: synthetic takes ``n``, ``n_test``, ``shape``, ``num_classes``;
    imagenet takes ``image_size`` (default 224) and ``num_workers``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    unknown = set(options) - _OPTIONS.get(name, set())
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS.get(name, set()))) or "none"
        raise DataError(
            f"{name} takes no option {', '.join(sorted(unknown))}; expected: {allowed}"
        )
    _check_val_fraction(val_fraction)
    if name == "digits":
        return _load_digits(split_seed, val_fraction)
    if name == "fashion-mnist":
        return _load_fashion_mnist(data_dir, split_seed, val_fraction)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, data_dir, split_seed, val_fraction)
    if name == "synthetic":
        return _load_synthetic(split_seed, val_fraction, **options)
    # imagenet
    if data_dir is None:
        raise DataError("imagenet needs --data-dir: a directory with train/ and val/ class folders")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"imagenet: no data directory {root}; pass --data-dir")
    return ImageFolderDataset(root, split_seed, val_fraction, **options)
