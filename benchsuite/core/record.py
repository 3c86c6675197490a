"""The run record: the names of everything a run writes to the tracking store, defined once.

A run is one MLflow run with params (its configuration), metrics (final values at the last
step; per-epoch curves at each epoch's step), tags (provenance, prefixed ``benchsuite.``) and
artifacts. The writers (``runner``, ``train``, ``throughput``) and the readers (leaderboard,
study, tuning, resume) use these constants, never the strings; the values are those of the
stored runs, so changing one orphans every published board. To add a metric: add it to
``Metrics`` here and to the table of docs/protocol.md (What is recorded).

``RunRecord`` is a stored run as plain data (``tracking.Reader`` builds it), so everything that
aggregates runs is testable on hand-made records without MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TAG = "benchsuite."  # the prefix of every tag a run is given (``Tags`` names come without it)


class Kinds:
    """What a run is (tag ``kind``): a benchmark trial, a tuning trial or a timing record."""

    RUN = "run"
    TUNE = "tune"
    THROUGHPUT = "throughput"


class Params:
    """A run's configuration (``runner.run_params``); hyperparameters are ``hp.<name>``."""

    METHOD = "method"
    VARIANT = "variant"
    TARGET_SPARSITY = "target_sparsity"
    PRESET = "preset"
    DATASET = "dataset"
    MODEL = "model"
    EPOCHS = "epochs"
    BATCH_SIZE = "batch_size"
    LR = "lr"
    SEED = "seed"
    PATTERN = "pattern"  # only where not unstructured (unstructured runs keep their params)
    HP = "hp."  # prefix: hp.schedule, hp.retrain_budget, ...


class Metrics:
    """Final values (``train.train_run``), per-epoch curves, and the isolated timing record.

    A method may record its own metrics besides these (``TrainState.record``).
    """

    TEST_ACCURACY = "test_accuracy"
    TEST_TOP5 = "test_top5"
    VAL_ACCURACY = "val_accuracy"
    SPARSITY = "sparsity"
    SPARSITY_BEFORE_PROJECTION = "sparsity_before_projection"
    PROJECTION_DROP = "projection_drop"
    COLLAPSED_LAYERS = "collapsed_layers"
    NUM_CLASSES = "num_classes"  # of the dataset: what chance accuracy is (100 / classes)
    THEORETICAL_SPEEDUP = "theoretical_speedup"
    FLOPS_DENSE = "flops_dense"
    FLOPS_SPARSE = "flops_sparse"
    TRAIN_FLOPS = "train_flops"
    TRAIN_COST = "train_cost"
    TRAIN_IMG_PER_S = "train_img_per_s"
    TRAIN_STEPS = "train_steps"
    TRAIN_IMAGES = "train_images"
    WALL_TIME_S = "wall_time_s"
    BN_RECAL_IMAGES = "bn_recal_images"
    # the deployable model against the dense one (training/latency.py)
    MEASURED_SPEEDUP = "measured_speedup"  # at the preset's evaluation batch
    MEASURED_SPEEDUP_B1 = "measured_speedup_b1"  # at batch 1
    DEPLOYED_MAX_ABS_DIFF = "deployed_max_abs_diff"  # its logits against the masked model's
    # structured runs only: the pattern held (1) or not (0), and what breaks it
    PATTERN_VALID = "pattern_valid"
    PATTERN_VIOLATIONS = "pattern_violations"
    PARAMS_DENSE = "params_dense"  # channel runs: parameters of the model trained ...
    PARAMS_DEPLOYED = "params_deployed"  # ... and of its exported, smaller form
    # per-epoch curves (with SPARSITY and VAL_ACCURACY)
    TRAIN_LOSS = "train_loss"
    LR = "lr"
    # a throughput record's figure: mean over the timing rounds
    IMG_PER_S = "img_per_s"


class Tags:
    """Provenance, written without the ``benchsuite.`` prefix (``TrackedRun.set_tags`` adds it)."""

    KIND = "kind"
    RUN_KEY = "run_key"
    VERSION = "version"
    NODE = "node"
    TUNED = "tuned"
    DATA = "data"  # the dataset's fingerprint
    COMMAND = "command"
    DEVICE = "device"
    THREADS = "threads"
    CACHED_DENSE = "cached_dense"
    CACHE_WARNING = "cache_warning"
    COLLAPSED = "collapsed"  # comma-separated names of the layers left with no weight
    NUMERICS = "numerics."  # prefix: numerics.torch, numerics.amp, ...
    IMG_PER_S_ROUNDS = "img_per_s_rounds"  # JSON list, one figure per timing round
    CONTENDED = "contended"  # a throughput record not measured alone: why (absent: isolated)
    ERROR = "error"
    PATTERN_EXEMPT = "pattern_exempt"  # N:M: comma-separated layers left dense
    DEPLOYED_FORM = "deployed_form"  # what the measured speedup timed
    DEPLOYED_EXPORT_ERROR = "deployed_export_error"  # why a channel run has no deployed.pt2
    LATENCY_DTYPE = "latency_dtype"
    LATENCY_BATCH = "latency_batch"  # the large batch of measured_speedup
    LATENCY_ROUNDS = "latency_rounds"  # JSON: ms per forward per round, dense and deployed
    MEASURED_SPEEDUP_UNAVAILABLE = "measured_speedup_unavailable"  # why there is no figure
    ADOPTED_FROM = "adopted_from"  # "experiment/run_id": the same run key, finished there
    CLAIM_HOST = "claim_host"
    CLAIM_PID = "claim_pid"
    CLAIM_START = "claim_start"
    CLAIMED_AT = "claimed_at"


class Artifacts:
    LAYER_SPARSITY = "layer_sparsity.json"  # prunable layer name -> fraction of zeros
    MODEL = "model.safetensors"
    DEPLOYED = "deployed.pt2"  # channel runs: the smaller model, a torch.export program


def to_float(value: Any) -> float | None:
    """A param or metric as a finite float, or None (missing, unparsable, NaN, infinite)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


TUNED_VARIANT = "tuned"  # the row of `run --tuned`: one per method, whatever each target chose


@dataclass(frozen=True)
class RunRecord:
    """One stored run as plain data; ``tags`` keep their full (prefixed) names."""

    run_id: str
    status: str = "FINISHED"
    start_time: int = 0  # ms since the epoch, as MLflow stores it
    end_time: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    experiment: str = ""  # the experiment's name, when read from a store

    def tag(self, name: str, default: str | None = None) -> str | None:
        """The ``benchsuite.`` tag ``name`` (a ``Tags`` constant)."""
        return self.tags.get(TAG + name, default)

    @property
    def kind(self) -> str:
        return self.tags.get(TAG + Tags.KIND, Kinds.RUN)

    @property
    def run_key(self) -> str:
        return self.tags.get(TAG + Tags.RUN_KEY) or self.run_id

    @property
    def method(self) -> str | None:
        return self.params.get(Params.METHOD)

    @property
    def variant(self) -> str:
        """The run's leaderboard row; a tuned run's is ``tuned`` (runs recorded before tuned
        rows were named so carry their per-target values as the variant)."""
        if (self.tag(Tags.TUNED) or "").lower() == "true":
            return TUNED_VARIANT
        return self.params.get(Params.VARIANT) or "default"

    @property
    def pattern(self) -> str:
        return self.params.get(Params.PATTERN) or "unstructured"

    @property
    def target(self) -> float | None:
        return to_float(self.params.get(Params.TARGET_SPARSITY))

    @property
    def seed(self) -> int | None:
        value = to_float(self.params.get(Params.SEED))
        return None if value is None else int(value)

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @property
    def time(self) -> int:
        return self.end_time if self.end_time is not None else self.start_time
