"""Fair tuning: the same number of full-budget trials per method, scored on validation only.

A method's search space is its ``Hparams`` field metadata (``low``/``high``/``log`` or
``choices``, see ``method.hparam``) as Ray Tune domains. Random search draws every trial up
front from a random state fixed per (method, target), so a re-run draws the same trials and
resumes by run_key, and adding a method to the request changes no other method's draws.

Every trial is a full-budget run (no early stopping: ASHA would compare unfinalized models at
different sparsities, which favours some methods), trained with a tuning seed (1000 + i) that no
benchmark run uses, and scored on the *finalized* model's validation accuracy. The test split
is never read (``RunConfig.evaluate_test=False``). The best configuration per method and
target is saved where ``benchsuite run --tuned`` reads it.
"""

from __future__ import annotations

import json
import math
import typing
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .budget import Budget, BudgetError
from .data import Dataset
from .grid import BadInput, Request
from .method import hparam_fields
from .presets import Preset
from .registry import get_method
from .runner import key_for
from .tracking import Tracker
from .train import RunConfig, hparam_pairs

TUNING_SEED = 1000  # trial i trains with seed 1000 + i; benchmark runs use seeds 0..N-1
TUNED_DIR = Path(".benchsuite/tuned")
SCORE = "val_accuracy"  # of the finalized (projected) model, on the validation split
MAX_DRAWS = 200  # per trial, to find a configuration whose plan fits the budget


def search_space(method: str) -> dict[str, Any]:
    """Ray Tune domains for the method's tunable fields (those with a range or choices)."""
    from ray import tune

    cls = get_method(method)
    hints = typing.get_type_hints(cls.Hparams)
    space: dict[str, Any] = {}
    for f in hparam_fields(cls.Hparams):
        meta = f.metadata
        if meta.get("choices"):
            space[f.name] = tune.choice(list(meta["choices"]))
        elif meta.get("low") is not None and meta.get("high") is not None:
            low, high, log = meta["low"], meta["high"], bool(meta.get("log"))
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise BadInput(
                    f"{method}.{f.name}: its search space [{low}, {high}] is not a finite range "
                    "(a bug in the method's Hparams: low/high must be finite, low <= high)"
                )
            if hints.get(f.name) is int:
                space[f.name] = (tune.lograndint if log else tune.randint)(int(low), int(high) + 1)
            else:
                space[f.name] = (tune.loguniform if log else tune.uniform)(low, high)
    return space


def _round(value: Any) -> Any:
    """Floats to 3 significant digits: readable variant names, no loss that matters."""
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        return float(f"{value:.3g}")
    return value


def _rng(method: str, target: float, seed: int) -> np.random.RandomState:
    return np.random.RandomState(zlib.crc32(f"{method}@{target:g}#{seed}".encode()))


def draw_trials(
    request: Request, data: Dataset, trials: int, *, seed: int = 0
) -> tuple[list[RunConfig], list[str]]:
    """``trials`` configurations per (method, target); methods with nothing to tune are skipped.

    Returns the configurations and the names of the skipped methods.
    """
    configs: list[RunConfig] = []
    skipped: list[str] = []
    preset = request.preset
    budget = Budget(preset.epochs, data.steps_per_epoch(preset.batch_size))
    for method in request.methods:
        cls = get_method(method)
        space = search_space(method)
        if not space or cls.one_per_seed:
            skipped.append(method)
            continue
        for target in request.sparsities:
            rng = _rng(method, target, seed)
            calibrated = hparam_pairs(preset.calibrated(method, target))
            for i in range(trials):
                for _ in range(MAX_DRAWS):
                    hps = {k: _round(d.sample(random_state=rng)) for k, d in space.items()}
                    config = RunConfig(
                        preset=preset,
                        method=method,
                        target=target,
                        seed=TUNING_SEED + i,
                        hparams=hparam_pairs(hps),
                        calibrated=calibrated,
                        data_dir=request.data_dir,
                        device=request.device,
                        evaluate_test=False,
                    )
                    try:
                        cls.plan(budget, config.hp(), target, preset.schedule)
                    except (BudgetError, ValueError):
                        continue
                    configs.append(config)
                    break
                else:
                    raise BadInput(
                        f"tune: no configuration of {method} drawn in {MAX_DRAWS} tries fits a "
                        f"budget of {preset.epochs} epochs; raise --epochs"
                    )
    return configs, skipped


def select_best(
    tracker: Tracker, configs: list[RunConfig], data: Dataset
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and target: the FINISHED trial with the best finalized validation accuracy.

    Ties go to the earlier trial. Failed trials count against the method's budget (they were
    its trials) but cannot be chosen.
    """
    finished = tracker.finished(kind="tune")
    best: dict[str, dict[str, dict[str, Any]]] = {}
    for config in configs:
        entry = best.setdefault(config.method, {}).setdefault(
            f"{config.target:g}", {"trials": 0, "finished": 0, SCORE: None}
        )
        entry["trials"] += 1
        run = finished.get(key_for(config, data))
        if run is None or SCORE not in run:
            continue
        entry["finished"] += 1
        if entry[SCORE] is None or run[SCORE] > entry[SCORE]:
            entry.update(
                {SCORE: run[SCORE], "hparams": dict(config.hparams), "run_id": run["run_id"],
                 "seed": config.seed}
            )  # fmt: skip
    return best


def tuned_path(preset: Preset, root: Path = TUNED_DIR) -> Path:
    """One file per preset and budget: tuned values are only valid for that budget."""
    return root / f"{preset.name}-{preset.epochs}ep.json"


def save_tuned(
    path: Path,
    preset: Preset,
    data: Dataset,
    best: dict[str, dict[str, dict[str, Any]]],
    *,
    trials: int,
    experiment: str,
) -> None:
    """Merge into an existing file: tuning one method later keeps the others' results."""
    payload: dict[str, Any] = {}
    if path.exists():
        payload = json.loads(path.read_text())
    methods = payload.get("methods", {})
    for method, targets in best.items():
        for target, entry in targets.items():
            if entry.get("hparams") is not None:
                methods.setdefault(method, {})[target] = entry
    payload.update(
        {
            "preset": preset.name,
            "dataset": preset.dataset,
            "model": preset.model,
            "epochs": preset.epochs,
            "data": data.fingerprint,
            "score": f"{SCORE} of the finalized model (validation split); test split not read",
            "trials_per_method": trials,
            "seeds": [TUNING_SEED + i for i in range(trials)],
            "experiment": experiment,
            "benchsuite": __version__,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "methods": methods,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    tmp.replace(path)


def load_tuned(
    preset: Preset, methods: list[str], targets: list[float], root: Path = TUNED_DIR
) -> dict[str, dict[str, dict[str, str]]]:
    """The best hyperparameters per method and target for ``run --tuned`` (Request.tuned)."""
    path = tuned_path(preset, root)
    hint = (
        f"run `benchsuite tune --preset {preset.name} --epochs {preset.epochs} "
        f"--methods {','.join(methods)} --sparsity {','.join(f'{t:g}' for t in targets)}` first"
    )
    if not path.exists():
        raise BadInput(f"--tuned: no tuned configuration at {path}; {hint}")
    payload = json.loads(path.read_text())
    for name in ("dataset", "model"):
        if payload.get(name) != getattr(preset, name):
            raise BadInput(
                f"--tuned: {path} was tuned for {name} {payload.get(name)!r}, this run uses "
                f"{getattr(preset, name)!r}; {hint}"
            )
    out: dict[str, dict[str, dict[str, str]]] = {}
    stored = payload.get("methods", {})
    for method in methods:
        if not search_space(method) or get_method(method).one_per_seed:
            continue  # nothing to tune: runs with its defaults, untuned
        for target in targets:
            entry = stored.get(method, {}).get(f"{target:g}")
            if entry is None or entry.get("hparams") is None:
                raise BadInput(
                    f"--tuned: {path} has no tuned {method} at sparsity {target:g}; {hint}"
                )
            out.setdefault(method, {})[f"{target:g}"] = {
                k: str(v) for k, v in entry["hparams"].items()
            }
    return out
