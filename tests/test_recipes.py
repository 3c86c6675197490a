"""The CIFAR-10 and ImageNet presets' real recipes, a few steps each, on generated files of the
real formats and shapes (no copy of either dataset is on these machines): the presets' own
model, augmentation, LR schedule, memory format and autocast, through the real loaders, so
that pointing --data-dir at a real copy changes nothing but the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchsuite.core.identity import RunConfig, autocast_dtype, make_generator, preset_budget
from benchsuite.data.base import load_dataset
from benchsuite.models import count_parameters
from benchsuite.presets import load_preset
from benchsuite.training.loop import setup, train_step
from tests.test_data import write_cifar

pytestmark = pytest.mark.integration  # trains: not in the unit tier
CPU = torch.device("cpu")


def steps(config: RunConfig, data, n: int) -> tuple[list[float], list[torch.dtype], nn.Module]:
    """``n`` counted steps of ``config`` on ``data``'s augmented training batches: the losses,
    the dtypes the first convolution computed in, and the model."""
    budget = preset_budget(config.preset, data)
    model, method, state = setup(config, data, budget, CPU)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    dtypes: list[torch.dtype] = []
    first_conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    batches = data.train_batches(
        config.preset.batch_size,
        make_generator(config.seed, "order"),
        make_generator(config.seed, "augment"),
        CPU,
    )
    model.train()
    losses = []
    for _, (x, y) in zip(range(n), batches):
        assert x.shape == (config.preset.batch_size, *data.input_shape)
        amp = autocast_dtype(config, CPU)
        losses.append(float(train_step(state, method, x, y, amp, config.preset.channels_last)))
    assert state.step == n
    return losses, dtypes, model


def test_cifar10_resnet56_recipe(tmp_path):
    write_cifar(tmp_path, "cifar10", n_per_batch=8)  # 40 training images of 3×32×32
    preset = load_preset("cifar10-resnet56").replace(batch_size=4)  # 128 is 30 s a step here
    data = load_dataset("cifar10", tmp_path)
    assert data.input_shape == (3, 32, 32)
    # augmentation: a training batch is a padded crop (and maybe a flip) of the images, not
    # the images themselves, and it is drawn from the run's augment stream
    plain = next(iter(data.val_batches(4, CPU)))[0]
    x1 = next(
        data.train_batches(4, torch.Generator().manual_seed(0), make_generator(0, "augment"), CPU)
    )[0]
    x2 = next(
        data.train_batches(4, torch.Generator().manual_seed(0), make_generator(1, "augment"), CPU)
    )[0]
    assert plain.shape == x1.shape and not torch.equal(x1, x2)
    config = RunConfig(preset, "gmp", 0.9, 0)
    plan = config.method_cls().plan(preset_budget(preset, data), config.hp(), 0.9, preset.schedule)
    total = preset.epochs * data.steps_per_epoch(4)  # 200 epochs of 9 steps
    # the recipe's schedule: 0.1, ×0.1 at 50 % and 75 % of the budget
    assert plan.total_steps == total == 1800
    assert plan.lr[0] == pytest.approx(0.1) and plan.lr[899] == pytest.approx(0.1)
    assert plan.lr[900] == pytest.approx(0.01) and plan.lr[1350] == pytest.approx(0.001)
    losses, dtypes, model = steps(config, data, 3)
    assert count_parameters(model) == 853_018  # ResNet-56, option A
    assert all(np.isfinite(losses)) and dtypes == [torch.float32] * 3  # no autocast
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 55


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """2 classes × 5 training and × 1 validation JPEGs of 80×60 (real ImageNet photos vary in
    size; the recipe's crop makes every input 224×224)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("val", 1)):
        for cls in ("n01440764", "n01443537"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.JPEG")
    return root


@pytest.mark.slow  # 2 steps of ResNet-50 at 224² in bf16: ~140 s on the 2 shared CPU cores
def test_imagenet_resnet50_recipe(imagenet_root):
    preset = load_preset("imagenet-resnet50").replace(batch_size=2)  # 256 would not fit a CPU test
    assert preset.amp and preset.channels_last
    data = load_dataset("imagenet", imagenet_root, num_workers=0)
    assert data.input_shape == (3, 224, 224)
    config = RunConfig(preset, "gmp", 0.9, 0)
    budget = preset_budget(preset, data)  # 9 training images: 4 steps an epoch
    plan = config.method_cls().plan(budget, config.hp(), 0.9, preset.schedule)
    warm = 5 * budget.steps_per_epoch
    # the recipe's schedule: a linear warm-up over 5 epochs from ≈0, then linear to 0
    assert plan.lr[0] < 1e-15 and plan.lr[warm] == pytest.approx(0.1)
    assert plan.lr[-1] == pytest.approx(0.1 / (plan.total_steps - warm), rel=1e-6)
    losses, dtypes, model = steps(config, data, 2)
    assert all(np.isfinite(losses))
    assert dtypes == [torch.bfloat16] * 2  # bf16 autocast where the preset sets amp
    assert all(p.dtype == torch.float32 for p in model.parameters())
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert count_parameters(model) == 23_512_130  # torchvision ResNet-50 with a 2-class head
