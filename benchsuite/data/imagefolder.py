"""ImageNet-style class folders streamed through a ``DataLoader`` whose per-sample augmentation
is seeded from the caller's ``augment`` generator, so its batches do not depend on the number
of workers (docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchsuite.data.augment import random_resized_crop_box
from benchsuite.data.base import Batch, DataError, Dataset, check_batch_size, fingerprint, holdout

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        train, val = holdout(len(train_folder.samples), split_seed, val_fraction, name)
        self.split = {"train": train, "val": val}
        self.n_train, self.n_val = len(train), len(val)
        self.n_test = len(test_folder.samples)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        self.test_reads = 0
        h = hashlib.sha256()
        for sub, samples in (("train", train_folder.samples), ("val", test_folder.samples)):
            for path, label in sorted(samples):
                rel = Path(path).relative_to(root).as_posix()
                h.update(f"{sub}|{rel}|{label}|{os.path.getsize(path)}\n".encode())
        self.fingerprint = fingerprint(name, h.hexdigest())

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
        check_batch_size(batch_size)
        device = torch.device(device)
        keys = [(p, -1) for p in positions]
        batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
        return self._moved(self._loader(dataset, device, batch_sampler=batches), device)

    def val_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        return self._eval(self._train_set, self.split["val"].tolist(), batch_size, device)

    def test_batches(self, batch_size: int, device: torch.device | str) -> Iterator[Batch]:
        check_batch_size(batch_size)
        self.test_reads += 1
        return self._eval(self._test_set, list(range(self.n_test)), batch_size, device)
