"""Datasets: fixed splits, batching, augmentation, loaders on real and generated files."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from benchsuite.data.augment import crop_flip, rotate
from benchsuite.data.base import DataError, list_datasets, load_dataset
from benchsuite.data.builtin import CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_DIR
from benchsuite.data.formats import read_idx
from benchsuite.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD

CPU = torch.device("cpu")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_split_sizes_disjoint_and_stratified(digits) -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    train, val, test = (digits.split[k].numpy() for k in ("train", "val", "test"))
    # 20 % test: ceil(0.2·1797) = 360; 10 % of the remaining 1437 as val: ceil(143.7) = 144
    assert (len(train), len(val), len(test)) == (1293, 144, 360)
    assert (digits.n_train, digits.n_val, digits.n_test) == (1293, 144, 360)
    assert len(np.unique(np.concatenate([train, val, test]))) == 1797  # disjoint and complete
    counts = np.bincount(target, minlength=10)
    test_counts = np.bincount(target[test], minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)  # stratified
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10


def test_digits_split_depends_only_on_split_seed(digits) -> None:
    torch.manual_seed(999)
    np.random.seed(999)
    again = load_dataset("digits")
    for key in ("train", "val", "test"):
        assert torch.equal(digits.split[key], again.split[key])
    assert again.fingerprint == digits.fingerprint
    other = load_dataset("digits", split_seed=7)
    assert not torch.equal(digits.split["test"], other.split["test"])
    assert other.fingerprint == digits.fingerprint  # same underlying data


def test_digits_normalised_with_training_statistics(digits) -> None:
    from sklearn.datasets import load_digits

    images = load_digits().images / 16.0
    train_pixels = images[digits.split["train"].numpy()]
    mean, std = train_pixels.mean(), train_pixels.std(ddof=1)
    x, y = collect(digits.val_batches(50, CPU))
    val = digits.split["val"].numpy()
    expected = (images[val] - mean) / std
    assert torch.allclose(x[:, 0].double(), torch.from_numpy(expected), atol=1e-5)
    assert torch.equal(y, torch.from_numpy(load_digits().target[val]))
    x_train, _ = collect(digits.train_batches(1293, gen(0), gen(0), CPU))
    assert abs(x_train.mean().item()) < 1e-5 and x_train.std().item() == pytest.approx(1, abs=1e-4)


def test_steps_per_epoch_and_last_partial_batch_dropped(digits) -> None:
    assert digits.steps_per_epoch(100) == 12  # 1293 // 100
    batches = list(digits.train_batches(100, gen(1), gen(2), CPU))
    assert len(batches) == 12 and all(len(y) == 100 for _, y in batches)
    x, _ = collect(batches)
    assert len(torch.unique(x.flatten(1), dim=0)) >= 1190  # a permutation: (almost) no repeats
    assert digits.steps_per_epoch(1293) == 1
    with pytest.raises(DataError, match="1293"):
        digits.steps_per_epoch(1294)
    with pytest.raises(DataError):
        digits.train_batches(0, gen(1), gen(2), CPU)


def test_same_order_seed_same_batches(digits) -> None:
    state = torch.get_rng_state()
    a = list(digits.train_batches(64, gen(5), gen(6), CPU))
    b = list(digits.train_batches(64, gen(5), gen(7), CPU))  # digits: no augmentation
    c = list(digits.train_batches(64, gen(8), gen(6), CPU))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    # one generator over two epochs: the second epoch is a fresh permutation
    order = gen(5)
    first = list(digits.train_batches(64, order, gen(0), CPU))
    second = list(digits.train_batches(64, order, gen(0), CPU))
    assert torch.equal(first[0][1], a[0][1]) and not torch.equal(second[0][1], a[0][1])


def test_val_covers_all_samples_in_fixed_order(digits) -> None:
    sizes = [len(y) for _, y in digits.val_batches(50, CPU)]
    assert sizes == [50, 50, 44]
    a, _ = collect(digits.val_batches(50, CPU))
    b, _ = collect(digits.val_batches(144, CPU))
    assert torch.equal(a, b)


def test_test_reads_counted() -> None:
    data = load_dataset("digits")
    assert data.test_reads == 0
    list(data.val_batches(100, CPU))
    assert data.test_reads == 0
    x, y = collect(data.test_batches(100, CPU))
    assert data.test_reads == 1 and x.shape == (360, 1, 8, 8) and len(y) == 360
    data.test_batches(100, CPU)
    assert data.test_reads == 2


# --------------------------------------------------------------------------- errors


def test_load_dataset_rejects_bad_names_and_options() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    assert "'mnist'" in str(info.value) and all(n in str(info.value) for n in list_datasets())
    with pytest.raises(DataError, match="image_size"):
        load_dataset("digits", image_size=32)
    with pytest.raises(DataError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)
    with pytest.raises(DataError, match="val_fraction 0.001"):
        load_dataset("digits", val_fraction=0.001)  # fewer val images than classes


# --------------------------------------------------------------------------- fashion-mnist


def write_idx(path: Path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files() -> None:
    data = load_dataset("fashion-mnist")
    assert (data.n_train, data.n_val, data.n_test) == (54_000, 6_000, 10_000)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    expected_val = torch.randperm(60_000, generator=gen(42))[:6_000].sort().values
    assert torch.equal(data.split["val"], expected_val)
    assert len(np.intersect1d(data.split["train"], data.split["val"])) == 0
    x, y = next(data.train_batches(512, gen(0), gen(0), CPU))
    assert x.shape == (512, 1, 28, 28) and x.dtype == torch.float32
    assert int(y.min()) >= 0 and int(y.max()) <= 9
    # normalised with 0.2860 / 0.3530: a black pixel maps to -0.2860 / 0.3530
    assert x.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-6)
    assert abs(x.mean().item()) < 0.05 and x.std().item() == pytest.approx(1.0, abs=0.05)
    assert data.test_reads == 0
    xt, yt = collect(data.test_batches(2_500, CPU))
    assert xt.shape == (10_000, 1, 28, 28) and torch.equal(yt.bincount(), torch.full((10,), 1000))
    again = load_dataset("fashion-mnist")
    assert again.fingerprint == data.fingerprint and len(data.fingerprint) == 16
    assert torch.equal(again.split["val"], data.split["val"])


@pytest.fixture(scope="module")
def small_fmnist(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """300 train / 100 test samples, uncompressed idx files."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (300, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 300, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 100, dtype=np.uint8),
    }
    if FASHION_MNIST_DIR.is_dir():  # a few hundred real samples instead
        for stem, count in (("train", 300), ("t10k", 100)):
            for kind in ("images", "labels"):
                name = f"{stem}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
                arrays[name] = read_idx(FASHION_MNIST_DIR / f"{name}.gz")[:count]
    directory = tmp_path_factory.mktemp("fmnist")
    for name, array in arrays.items():
        write_idx(directory / name, array)
    return directory, arrays


def test_fashion_mnist_gzipless_copy(small_fmnist) -> None:
    directory, arrays = small_fmnist
    data = load_dataset("fashion-mnist", directory)
    # 10 % of 300 held out: 30 val, 270 train
    assert (data.n_train, data.n_val, data.n_test) == (270, 30, 100)
    val = torch.randperm(300, generator=gen(42))[:30].sort().values
    assert torch.equal(data.split["val"], val)
    x, y = collect(data.val_batches(16, CPU))
    raw = arrays["train-images-idx3-ubyte"][val.numpy()].astype(np.float64) / 255.0
    assert torch.allclose(x[:, 0].double(), torch.from_numpy((raw - 0.2860) / 0.3530), atol=1e-5)
    assert torch.equal(y, torch.from_numpy(arrays["train-labels-idx1-ubyte"][val.numpy()]).long())
    xt, yt = collect(data.test_batches(64, CPU))
    assert xt.shape == (100, 1, 28, 28)
    assert torch.equal(yt, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    assert load_dataset("fashion-mnist", directory).fingerprint == data.fingerprint


def test_fashion_mnist_gzip_and_plain_agree(small_fmnist, tmp_path) -> None:
    directory, arrays = small_fmnist
    for name, array in arrays.items():
        write_idx(tmp_path / f"{name}.gz", array)
    plain = load_dataset("fashion-mnist", directory)
    gz = load_dataset("fashion-mnist", tmp_path)
    assert gz.fingerprint == plain.fingerprint  # the fingerprint is of the data, not the files


def test_fashion_mnist_missing_dir_message(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", missing)
    message = str(info.value)
    assert "\n" not in message and str(missing) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    partial = tmp_path / "partial"
    partial.mkdir()
    write_idx(partial / "train-images-idx3-ubyte", np.zeros((2, 2, 2), np.uint8))
    write_idx(partial / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    write_idx(partial / "t10k-images-idx3-ubyte", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\]") as info:
        load_dataset("fashion-mnist", partial)
    assert "\n" not in str(info.value) and str(partial) in str(info.value)


def test_read_idx_parses_header_and_rejects_garbage(tmp_path) -> None:
    path = tmp_path / "x-idx3-ubyte"
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(path, array)
    assert path.read_bytes()[:8] == bytes([0, 0, 8, 3, 0, 0, 0, 2])
    assert np.array_equal(read_idx(path), array)
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(10))
    with pytest.raises(DataError, match="magic"):
        read_idx(path)
    write_idx(path, array)
    path.write_bytes(path.read_bytes()[:-1])  # truncated: header 4 + 3·4, data 24 → 40 bytes
    with pytest.raises(DataError, match="holds 39 bytes; expected 40"):
        read_idx(path)


# --------------------------------------------------------------------------- augmentation


def test_crop_flip_hand_computed() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]).repeat(5, 1, 1, 1)
    offsets = torch.tensor([[0, 0], [1, 1], [2, 2], [1, 1], [0, 0]])
    flip = torch.tensor([False, False, False, True, True])
    out = crop_flip(x, 1, offsets, flip)[:, 0]
    assert out[0].tolist() == [[0, 0], [0, 1]]
    assert out[1].tolist() == [[1, 2], [3, 4]]
    assert out[2].tolist() == [[4, 0], [0, 0]]
    assert out[3].tolist() == [[2, 1], [4, 3]]
    assert out[4].tolist() == [[0, 0], [1, 0]]


def test_rotate_quarter_turns() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    out = rotate(x, torch.tensor([90.0, 0.0]))
    assert torch.equal(out[0], torch.rot90(x[0], 1, (1, 2)))  # counter-clockwise
    assert torch.equal(out[1], x[1])
    wide = torch.rand(3, 2, 4, 6)
    assert torch.equal(rotate(wide, torch.full((3,), 180.0)), wide.flip(-1, -2))


# --------------------------------------------------------------------------- CIFAR


def write_cifar(root: Path, name: str, n_per_batch: int = 8, n_test: int = 6) -> dict:
    rng = np.random.default_rng(1)
    if name == "cifar10":
        folder, files, label_key, classes = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            b"labels",
            10,
        )
    else:
        folder, files = "cifar-100-python", ["train", "test"]
        label_key, classes = b"fine_labels", 100
    (root / folder).mkdir(parents=True)
    content = {}
    for f in files:
        n = n_test if f.startswith("test") else n_per_batch * (5 if name == "cifar100" else 1)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n).tolist()
        with (root / folder / f).open("wb") as fh:
            pickle.dump({b"data": data, label_key: labels, b"batch_label": b"x"}, fh, protocol=2)
        content[f] = (data.reshape(-1, 3, 32, 32), np.array(labels))
    return content


def test_cifar10_fake_pickles(tmp_path) -> None:
    content = write_cifar(tmp_path, "cifar10")
    data = load_dataset("cifar10", tmp_path)
    assert (data.n_train, data.n_val, data.n_test) == (36, 4, 6)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    direct = load_dataset("cifar10", tmp_path / "cifar-10-batches-py")
    assert direct.fingerprint == data.fingerprint
    images = np.concatenate([content[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([content[f"data_batch_{i}"][1] for i in range(1, 6)])
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)

    # val: test transforms only (normalise)
    xv, yv = collect(data.val_batches(3, CPU))
    val = data.split["val"].numpy()
    expected = (torch.from_numpy(images[val]).double() / 255 - mean) / std
    assert torch.allclose(xv.double(), expected, atol=1e-5)
    assert torch.equal(yv, torch.from_numpy(labels[val]))

    # train: each sample is a crop of the zero-padded original, maybe flipped, then normalised
    x, y = next(data.train_batches(8, gen(3), gen(4), CPU))
    perm = torch.randperm(36, generator=gen(3))[:8]
    originals = torch.from_numpy(images[data.split["train"][perm].numpy()]).float() / 255
    assert torch.equal(y, torch.from_numpy(labels[data.split["train"][perm].numpy()]))
    raw = x * std + mean
    padded = torch.nn.functional.pad(originals, (4, 4, 4, 4))
    for i in range(8):
        crops = [padded[i, :, r : r + 32, c : c + 32] for r in range(9) for c in range(9)]
        views = crops + [crop.flip(-1) for crop in crops]
        assert min((v - raw[i]).abs().max().item() for v in views) < 1e-5
    again, _ = next(data.train_batches(8, gen(3), gen(4), CPU))
    other, y2 = next(data.train_batches(8, gen(3), gen(5), CPU))
    assert torch.equal(x, again) and torch.equal(y, y2) and not torch.equal(x, other)

    xt, yt = collect(data.test_batches(4, CPU))
    assert xt.shape == (6, 3, 32, 32)
    assert torch.equal(yt, torch.from_numpy(content["test_batch"][1]))
    assert data.test_reads == 1


def test_cifar100_fake_pickles_with_rotation(tmp_path) -> None:
    write_cifar(tmp_path, "cifar100")
    data = load_dataset("cifar100", tmp_path)
    assert (data.n_train, data.n_val, data.n_test, data.num_classes) == (36, 4, 6, 100)
    a = next(data.train_batches(8, gen(0), gen(1), CPU))
    b = next(data.train_batches(8, gen(0), gen(1), CPU))
    assert torch.equal(a[0], b[0]) and a[0].shape == (8, 3, 32, 32)


def test_cifar_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="cifar-10-batches-py") as info:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path) in str(info.value)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    for f in ("train", "test"):
        (folder / f).write_bytes(pickle.dumps({b"data": Evil(), b"fine_labels": []}))
    with pytest.raises(DataError, match="refusing"):
        load_dataset("cifar100", tmp_path)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_learnable() -> None:
    data = load_dataset("synthetic")
    assert (data.n_train, data.n_val, data.n_test) == (461, 51, 128)  # round(51.2) val
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert load_dataset("synthetic").fingerprint == data.fingerprint
    assert load_dataset("synthetic", split_seed=1).fingerprint != data.fingerprint
    x, y = collect(data.train_batches(461, gen(0), gen(0), CPU))
    centroids = torch.stack([x[y == k].mean(0) for k in range(10)]).flatten(1)
    xv, yv = collect(data.val_batches(64, CPU))
    predicted = torch.cdist(xv.flatten(1), centroids).argmin(1)
    assert (predicted == yv).float().mean() > 0.9
    small = load_dataset("synthetic", n=40, n_test=8, shape=(3, 4, 4), num_classes=3)
    xs, ys = collect(small.test_batches(5, CPU))
    assert xs.shape == (8, 3, 4, 4) and int(ys.max()) <= 2


# --------------------------------------------------------------------------- ImageNet folders


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """2 classes × 6 train and × 2 val solid-colour 32×32 PNGs; the colour encodes the file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    for split, count in (("train", 6), ("val", 2)):
        for k, cls in enumerate(("ant", "bee")):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                colour = (10 * i + 100 * k + (5 if split == "val" else 0), 7, 200)
                Image.new("RGB", (32, 24 + 2 * i), colour).save(root / split / cls / f"{i}.png")
    return root


def test_imagefolder_dataset(image_root) -> None:
    data = load_dataset("imagenet", image_root, image_size=16, num_workers=0)
    assert (data.n_train, data.n_val, data.n_test) == (11, 1, 4)
    assert data.input_shape == (3, 16, 16) and data.num_classes == 2
    assert data.steps_per_epoch(4) == 2
    batches = list(data.train_batches(4, gen(0), gen(1), CPU))
    assert [x.shape for x, _ in batches] == [(4, 3, 16, 16)] * 2
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for x, y in batches:
        red = ((x * std + mean) * 255).round()[:, 0]
        assert torch.all(red == red[:, :1, :1])  # a solid image stays solid under crop/resize
        assert torch.equal((red[:, 0, 0] >= 100).long(), y)  # the colour matches the class
    # workers do not change the batches: augmentation is seeded per sample from `augment`
    threaded = load_dataset("imagenet", image_root, image_size=16, num_workers=2)
    again = list(threaded.train_batches(4, gen(0), gen(1), CPU))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    xv, _ = collect(data.val_batches(8, CPU))
    assert xv.shape == (1, 3, 16, 16)
    xt, yt = collect(data.test_batches(3, CPU))
    assert xt.shape == (4, 3, 16, 16) and yt.tolist() == [0, 0, 1, 1] and data.test_reads == 1
    green = ((xt * std + mean) * 255).round()[:, 1]
    assert torch.all(green == 7)


def test_imagefolder_fingerprint(image_root, tmp_path) -> None:
    import shutil

    a = load_dataset("imagenet", image_root, image_size=16, num_workers=0)
    assert load_dataset("imagenet", image_root, image_size=16, num_workers=0).fingerprint == (
        a.fingerprint
    )
    copy = tmp_path / "copy"
    shutil.copytree(image_root, copy)
    assert load_dataset("imagenet", copy, image_size=16, num_workers=0).fingerprint == a.fingerprint
    with (copy / "val" / "bee" / "1.png").open("ab") as f:
        f.write(b"\0")
    assert load_dataset("imagenet", copy, image_size=16, num_workers=0).fingerprint != a.fingerprint
    with pytest.raises(DataError, match="train"):
        load_dataset("imagenet", tmp_path / "copy" / "val")


def test_normalised_once_gives_bitwise_the_per_batch_values(digits) -> None:
    """The cached normalised splits are exactly what normalising each batch gives, and the
    cache never travels with the dataset (pickled for Ray workers)."""
    order = 3
    cached = list(digits.train_batches(64, gen(order), gen(0), CPU))
    perm = torch.randperm(digits.n_train, generator=gen(order))
    for step, (x, y) in enumerate(cached):
        idx = perm[step * 64 : (step + 1) * 64]
        assert torch.equal(x, digits._prepare(digits._x_train[idx], CPU, None))
        assert torch.equal(y, digits._y_train[idx])
    x_val, _ = collect(digits.val_batches(100, CPU))
    assert torch.equal(x_val, digits._prepare(digits._x_val, CPU, None))
    assert set(digits._ready) == {"train", "val"}
    assert digits.__getstate__()["_ready"] == {} and digits._ready
