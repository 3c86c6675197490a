import pytest
import torch

from benchsuite.data.base import load_dataset
from benchsuite.presets import load_preset

torch.set_num_threads(1)  # the suite shares 2 cores; results must not depend on thread races


@pytest.fixture(scope="session")
def tiny_data():
    """Synthetic 8×8 data: 460 train / 52 val / 64 test, 10 classes."""
    return load_dataset("synthetic", n=512, n_test=64, shape=(1, 8, 8))


@pytest.fixture
def tiny_preset():
    """The digits preset on synthetic data: small CNN, 4 epochs of 14 steps."""
    return load_preset("digits").replace(dataset="synthetic", epochs=4, eval_batch_size=256)


@pytest.fixture(autouse=True, scope="session")
def quick_latency():
    """Every benchmark run ends with a latency measurement (training/latency.py); tests check
    what it records, not its precision, so they time one short round."""
    from benchsuite.training import latency

    saved = latency.ROUNDS, latency.MIN_TIMING_S, latency.BEST_OF
    latency.ROUNDS, latency.MIN_TIMING_S, latency.BEST_OF = 1, 1e-4, 1
    yield
    latency.ROUNDS, latency.MIN_TIMING_S, latency.BEST_OF = saved
