"""The built-in datasets' loaders, registered in the ``benchsuite.datasets`` entry-point group
like any plugin's (pyproject.toml): digits, fashion-mnist, cifar10/100, synthetic, imagenet.

Each returns a dataset whose fixed splits depend on ``split_seed`` only (docs/protocol.md,
Splits); its fingerprint covers the data it was computed from and feeds the run keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchsuite.data.augment import cifar_augment
from benchsuite.data.base import DataError, TensorDataset, digest, fingerprint, holdout
from benchsuite.data.formats import digits_arrays, read_cifar_batch, read_idx
from benchsuite.data.imagefolder import ImageFolderDataset

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


def _stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held out) positions of ``labels``: ⌈fraction · n⌉ held out, every class in
    proportion (⌊fraction · n_c⌋ each, the remainder to the classes with the largest
    fractional parts, ties in random order), each class's members drawn at random.

    Written here rather than scikit-learn's ``train_test_split``: importing scikit-learn
    costs ~1 s of every command's start-up, and this is all the digits split needs.
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


def digits(data_dir: str | Path | None, split_seed: int, val_fraction: float) -> TensorDataset:
    """scikit-learn's 8×8 digits; a stratified 20 % test split (``data_dir`` unused)."""
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
        fingerprint=fingerprint("digits", "stratified-holdout", digest(images, target)),
        scale=scale,
        mean=(mean,),
        std=(std,),
        split={"train": train, "val": val, "test": test},
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


def fashion_mnist(
    data_dir: str | Path | None, split_seed: int, val_fraction: float
) -> TensorDataset:
    """The idx files in ``data_dir`` (default: Debian's dataset-fashion-mnist package)."""
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
    test_digest = digest(test_images[:, None], test_labels)
    n_test = len(test_labels)
    del test_images, test_labels  # loaded again on the first test_batches call

    def load_test() -> tuple[Tensor, Tensor]:
        xt, yt = _read_idx_pair(directory, "t10k")
        return torch.from_numpy(xt).unsqueeze(1), torch.from_numpy(yt)

    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    train, val = holdout(len(y), split_seed, val_fraction, "fashion-mnist")
    return TensorDataset(
        "fashion-mnist",
        10,
        (x[train], y[train]),
        (x[val], y[val]),
        load_test,
        n_test=n_test,
        fingerprint=fingerprint("fashion-mnist", digest(images, labels), test_digest),
        test_digest=test_digest,
        scale=1.0 / 255.0,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        split={"train": train, "val": val},
    )


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
    parts = [read_cifar_batch(directory / f, label_key) for f in train_files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = read_cifar_batch(directory / test_file, label_key)
    if labels.min() < 0 or max(labels.max(), test_labels.max()) >= classes:
        raise DataError(f"{name}: labels in {directory} outside 0..{classes - 1}")
    test_digest = digest(test_images, test_labels)
    n_test = len(test_labels)
    del test_images, test_labels

    def load_test() -> tuple[Tensor, Tensor]:
        xt, yt = read_cifar_batch(directory / test_file, label_key)
        return torch.from_numpy(xt), torch.from_numpy(yt)

    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    train, val = holdout(len(y), split_seed, val_fraction, name)
    return TensorDataset(
        name,
        classes,
        (x[train], y[train]),
        (x[val], y[val]),
        load_test,
        n_test=n_test,
        fingerprint=fingerprint(name, digest(images, labels), test_digest),
        test_digest=test_digest,
        scale=1.0 / 255.0,
        mean=mean,
        std=std,
        augment=augment,
        split={"train": train, "val": val},
    )


# --------------------------------------------------------------------------- synthetic


def synthetic(
    data_dir: str | Path | None,
    split_seed: int,
    val_fraction: float,
    *,
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
    train, val = holdout(n, split_seed, val_fraction, "synthetic")
    arrays = digest(x, y, x_test, y_test)
    return TensorDataset(
        "synthetic",
        num_classes,
        (x[train], y[train]),
        (x[val], y[val]),
        lambda: (x_test, y_test),
        n_test=n_test,
        fingerprint=fingerprint("synthetic", arrays),
        split={"train": train, "val": val},
    )


def cifar10(data_dir: str | Path | None, split_seed: int, val_fraction: float) -> TensorDataset:
    """The python batches of CIFAR-10 in ``data_dir``; crop and flip augmentation."""
    return _load_cifar("cifar10", data_dir, split_seed, val_fraction)


def cifar100(data_dir: str | Path | None, split_seed: int, val_fraction: float) -> TensorDataset:
    """CIFAR-100's python batches in ``data_dir``; crop, flip and ±15° rotation."""
    return _load_cifar("cifar100", data_dir, split_seed, val_fraction)


def imagenet(
    data_dir: str | Path | None,
    split_seed: int,
    val_fraction: float,
    *,
    image_size: int = 224,
    num_workers: int | None = None,
) -> ImageFolderDataset:
    """``train/`` and ``val/`` class folders under ``data_dir``, streamed (imagefolder.py)."""
    if data_dir is None:
        raise DataError("imagenet needs --data-dir: a directory with train/ and val/ class folders")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"imagenet: no data directory {root}; pass --data-dir")
    return ImageFolderDataset(root, split_seed, val_fraction, image_size, num_workers)
