"""What a run is and what makes its numbers: its configuration, seed streams and identity.

A run's key (``run_key``) hashes its fully resolved configuration, its data, its step count
and the numerics that change results without changing the configuration (docs/protocol.md,
Run identity); published boards resume by it, so nothing here may change a key silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchsuite import __version__
from benchsuite.core.budget import Budget
from benchsuite.core.method import PruningMethod, get_method, parse_hparams, variant_name
from benchsuite.core.record import TUNED_VARIANT
from benchsuite.data.base import Dataset
from benchsuite.presets import Preset
from benchsuite.pruning.patterns import UNSTRUCTURED

SEED_STREAMS = ("init", "order", "augment", "method")


@dataclass(frozen=True)
class RunConfig:
    """One run: (method, hyperparameter variant, target sparsity, seed) on one preset."""

    preset: Preset
    method: str
    target: float
    seed: int
    hparams: tuple[tuple[str, str], ...] = ()  # the user's overrides (--hp, --tuned): the variant
    calibrated: tuple[tuple[str, str], ...] = ()  # the preset's per-target calibration (STR, DST)
    data_dir: str | None = None
    device: str = "cpu"
    split_seed: int = 42
    tuned: bool = False
    bn_recalibration_batches: int = 0  # optional, for every method alike (off by default)
    evaluate_test: bool = True  # False while tuning: the test split is never read (not in run_key)
    threads: int = 1  # torch threads of the trial (--cpus-per-trial): part of the numerics
    pattern: str = "unstructured"  # the sparsity pattern (--pattern); in the key when structured

    def method_cls(self) -> type[PruningMethod]:
        return get_method(self.method)

    def hp(self) -> Any:
        return parse_hparams(
            self.method_cls().Hparams, {**dict(self.calibrated), **dict(self.hparams)}
        )

    def variant(self) -> str:
        """The leaderboard row: the user's non-default hyperparameters (not the calibration);
        a tuned run's row is the method tuned (its values differ per target)."""
        if self.tuned:
            return TUNED_VARIANT
        hps = variant_name(parse_hparams(self.method_cls().Hparams, dict(self.hparams)))
        if self.pattern == UNSTRUCTURED:
            return hps
        return self.pattern if hps == "default" else f"{self.pattern},{hps}"

    def label(self) -> str:
        v = self.variant()
        return (
            f"{self.method}"
            + ("" if v == "default" else f"[{v}]")
            + f"@{self.target:g}/s{self.seed}"
        )


def hparam_pairs(values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Hyperparameter overrides as ``RunConfig`` holds them: sorted (name, text) pairs."""
    return tuple(sorted((k, str(v)) for k, v in values.items()))


def seed_for(seed: int, stream: str) -> int:
    """Independent generator seeds per stream, derived from the run seed."""
    index = SEED_STREAMS.index(stream)
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def make_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one stream: the same draws whatever device the run trains on."""
    return torch.Generator(device="cpu").manual_seed(seed_for(seed, stream))


# Preset fields that never change a run's numbers: prose, and the per-target calibration of
# every method (a run's own calibrated values are in its resolved hyperparameters).
NOT_IN_RUN_KEY = ("description", "sources", "calibration")


def preset_budget(preset: Preset, data: Dataset) -> Budget:
    """The preset's budget on ``data``: its epochs of whole batches, the same for every method
    (a batch size larger than the training split is a ``DataError``)."""
    return Budget(preset.epochs, data.steps_per_epoch(preset.batch_size))


def resolved(config: RunConfig) -> dict[str, Any]:
    """The fully resolved configuration that defines a run (without data fingerprint).

    Recalibrating STR in a preset, or rewording a source, leaves every other run's key alone.
    """
    preset = {k: v for k, v in config.preset.to_dict().items() if k not in NOT_IN_RUN_KEY}
    return {
        "preset": preset,
        "split_seed": config.split_seed,
        "method": config.method,
        "hparams": dataclasses.asdict(config.hp()),
        "target": config.target,
        "seed": config.seed,
        "bn_recalibration_batches": config.bn_recalibration_batches,
        "version": __version__,
        # only a structured pattern enters: every unstructured run keeps its key
        **({} if config.pattern == UNSTRUCTURED else {"pattern": config.pattern}),
    }


def numerics(config: RunConfig) -> dict[str, Any]:
    """What changes the numbers without changing the configuration (docs/protocol.md, Run
    identity): torch's version, the device (its name on a GPU, the CPU's vector capability),
    the CPU threads (their count changes reduction order) and the autocast dtype."""
    device = torch.device(config.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "cuda"
        threads = None  # the GPU's kernels do the arithmetic, not the CPU threads
    else:
        name = f"{device.type}:{torch.backends.cpu.get_cpu_capability()}"
        threads = config.threads
    amp = autocast_dtype(config, device)
    return {
        "torch": torch.__version__,
        "device": name,
        "threads": threads,
        "amp": None if amp is None else str(amp).removeprefix("torch."),
    }


def run_key(config: RunConfig, fingerprint: str, total_steps: int) -> str:
    """The run's identity: its resolved configuration, data, steps and numerics, hashed."""
    blob = json.dumps(
        {
            **resolved(config),
            "data": fingerprint,
            "total_steps": total_steps,
            "numerics": numerics(config),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{torch.get_num_threads()} threads"


def autocast_dtype(config: RunConfig, device: torch.device) -> torch.dtype | None:
    """bfloat16 where the preset asks for mixed precision (``amp``) and torch autocasts on the
    device (the CPU included); None (float32) otherwise. bfloat16 has float32's exponent
    range, so no gradient scaler is needed: weights, gradients and optimizer stay float32."""
    if config.preset.amp and torch.amp.is_autocast_available(device.type):
        return torch.bfloat16
    return None
