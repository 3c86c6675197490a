"""Fair tuning: the same configurations per method, each scored on the same tuning seeds.

A method's search space is its ``Hparams`` field metadata (``low``/``high``/``log`` or
``choices``, see ``core/method.hparam``) as Ray Tune domains. Per (method, target) the search
evaluates ``configs`` configurations: the method's defaults (with the preset's calibration)
first, then distinct random draws from a random state fixed per (method, target) and
``--seed``, so a re-run draws the same configurations and resumes by run key. Every
configuration trains on every tuning seed (1000, 1001, ...: no benchmark run uses them), so
configurations are compared on the same seeds, and is scored by its mean validation accuracy of
the *finalized* model over them. The test split is never read (``RunConfig.evaluate_test``).

Selection (``select_best``): the configuration with the highest mean; a tie, or a search where
nothing beats the defaults, keeps the defaults, so a tuned configuration is never below the
defaults on validation. A configuration with a failed seed is not eligible. Every trial is a
full-budget run (no early stopping: ASHA would compare unfinalized models at different
sparsities, which favours some methods).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from benchsuite import __version__
from benchsuite.core.budget import Budget, BudgetError
from benchsuite.core.identity import preset_budget
from benchsuite.core.method import check_targets_table, get_method, hparam_fields
from benchsuite.core.record import Metrics
from benchsuite.data.base import Dataset
from benchsuite.execution.grid import BadInput, Request
from benchsuite.presets import Preset
from benchsuite.training.loop import RunConfig, hparam_pairs

TUNING_SEED = 1000  # tuning seed j is 1000 + j; benchmark runs use seeds 0..N-1
TUNED_DIR = Path(".benchsuite/tuned")
SCORE = Metrics.VAL_ACCURACY  # of the finalized (projected) model, on the validation split
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


def tunable_space(method: str, preset: Preset, target: float) -> dict[str, Any]:
    """The search space at ``target`` less the knobs the preset calibrates there.

    A calibrated knob (STR's and DST's penalty, CS's λ) is what lands the method on the target;
    tuned on validation accuracy it would trade sparsity for accuracy, so it stays fixed.
    """
    fixed = preset.calibrated(method, target)
    return {k: d for k, d in search_space(method).items() if k not in fixed}


def describe_space(method: str, preset: Preset, target: float) -> dict[str, str]:
    """What the search drew from at ``target``, in words: for the tuned file and the board."""
    out: dict[str, str] = {}
    space, hparams = tunable_space(method, preset, target), get_method(method).Hparams
    hints = typing.get_type_hints(hparams)
    for f in hparam_fields(hparams):
        if f.name not in space:
            continue
        meta = f.metadata
        if meta.get("choices"):
            out[f.name] = "one of " + ", ".join(str(c) for c in meta["choices"])
        else:
            kind = "integer" if hints.get(f.name) is int else "real"
            scale = "log-uniform" if meta.get("log") else "uniform"
            out[f.name] = f"{scale} {kind} in [{meta['low']:g}, {meta['high']:g}]"
    return out


def _round(value: Any) -> Any:
    """Floats to 3 significant digits: readable variant names, no loss that matters."""
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        return float(f"{value:.3g}")
    return value


def score_name(config: RunConfig) -> str:
    """The metric a trial of (method, target) reports its score under: one per search."""
    return f"{SCORE}/{config.method}@{config.target:g}"


class MethodSearch(Searcher):
    """Per (method, target): the defaults, then distinct random configurations, each on every
    tuning seed (defaults whose plan does not fit the budget are no candidate).

    ``bases`` holds one configuration per (method, target) (the defaults, calibrated).
    Configuration c of a base trains once per tuning seed ``TUNING_SEED + j``; trials are
    suggested round robin over the bases, so every method's trials run side by side. A draw
    whose plan does not fit the budget, or that repeats an earlier configuration, is drawn
    again (no trial is spent on it); a space with fewer distinct configurations than asked for
    is evaluated whole.
    """

    def __init__(
        self,
        bases: list[RunConfig],
        configs: int,
        budget: Budget,
        *,
        seeds: int = 2,
        seed: int = 0,
        key: Callable[[RunConfig], str] | None = None,
    ) -> None:
        super().__init__()
        self.bases, self.configs, self.seeds, self.budget, self.key = (
            bases,
            configs,
            seeds,
            budget,
            key,
        )
        self.rngs = [
            np.random.RandomState(zlib.crc32(f"{b.method}@{b.target:g}#{seed}".encode()))
            for b in bases
        ]
        self.drawn = [self._configs(b, r) for b, r in zip(bases, self.rngs)]
        self.queue = [
            (b, c, j)
            for c in range(configs)
            for j in range(seeds)
            for b in range(len(bases))
            if c < len(self.drawn[b])
        ]
        self.total = len(self.queue)
        self.suggested = 0

    def _configs(self, base: RunConfig, rng: np.random.RandomState) -> list[tuple[int, RunConfig]]:
        """``configs`` (index, configuration) pairs: the defaults as 0 where their plan fits
        the budget, and distinct draws that fit, numbered 1, 2, ..."""
        cls = get_method(base.method)
        space = tunable_space(base.method, base.preset, base.target)

        def fits(hp: Any) -> bool:
            try:
                cls.plan(self.budget, hp, base.target, base.preset.schedule)
            except (BudgetError, ValueError):
                return False
            return True

        out = [(0, base)] if fits(base.hp()) else []
        seen, index = [base.hp()], 1
        for _ in range(MAX_DRAWS * self.configs):
            if len(out) == self.configs:
                break
            hps = {k: _round(d.sample(random_state=rng)) for k, d in space.items()}
            config = dataclasses.replace(base, hparams=hparam_pairs(hps))
            hp = config.hp()
            if hp in seen or not fits(hp):
                continue
            out.append((index, config))
            seen.append(hp)
            index += 1
        if len(out) < self.configs and not _small_space(space):
            raise BadInput(
                f"tune: only {len(out)} configuration(s) of {base.method} in "
                f"{MAX_DRAWS * self.configs} tries fit a budget of {base.preset.epochs} epochs; "
                "raise --epochs"
            )
        return out

    def next_config(self) -> RunConfig | None:
        """The next trial's configuration (None when all are suggested)."""
        item = self.next_item()
        return None if item is None else item[0]

    def next_item(self) -> tuple[RunConfig, int] | None:
        """The next trial and its configuration's index (0: the defaults)."""
        if self.suggested >= self.total:
            return None
        b, c, j = self.queue[self.suggested]
        self.suggested += 1
        index, config = self.drawn[b][c]
        return dataclasses.replace(config, seed=TUNING_SEED + j), index

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        return True  # the space is the methods' own; each trial names its score metric

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        item = self.next_item()
        if item is None:
            return Searcher.FINISHED
        config, index = item
        assert self.key is not None, "a search run by Tune computes each trial's run key"
        run = {"key": self.key(config), "config": config, "score": score_name(config)}
        return {"run": {**run, "index": index}}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        pass  # random search: results do not steer the draws


def _small_space(space: dict[str, Any]) -> bool:
    """A space of choices only (finitely many configurations: it may hold fewer than asked)."""
    from ray.tune.search.sample import Categorical

    return all(isinstance(d, Categorical) for d in space.values())


def _tunable(method: str, preset: Preset, target: float) -> bool:
    return bool(tunable_space(method, preset, target)) and not get_method(method).one_per_seed


def tuning_bases(request: Request) -> tuple[list[RunConfig], list[str]]:
    """One base configuration per tunable (method, target), and the methods with nothing to tune
    at any target."""
    bases: list[RunConfig] = []
    skipped: list[str] = []
    preset = request.preset
    for method in request.methods:
        targets = [t for t in request.sparsities if _tunable(method, preset, t)]
        if not targets:
            skipped.append(method)
        for target in targets:
            calibrated = hparam_pairs(preset.calibrated(method, target))
            bases.append(
                RunConfig(
                    preset,
                    method,
                    target,
                    TUNING_SEED,
                    calibrated=calibrated,
                    data_dir=request.data_dir,
                    device=request.device,
                    evaluate_test=False,
                )
            )
    return bases, skipped


def draw_trials(
    request: Request, data: Dataset, configs: int, *, seeds: int = 2, seed: int = 0
) -> tuple[list[RunConfig], list[str]]:
    """Every trial of the search (``configs`` configurations × ``seeds`` tuning seeds per
    (method, target)), as the search suggests them; methods with nothing to tune are skipped.

    Drawing them all up front checks, before anything starts, that every method can fit its
    configurations into the budget (``BadInput`` otherwise)."""
    bases, skipped = tuning_bases(request)
    budget = preset_budget(request.preset, data)
    search = MethodSearch(bases, configs, budget, seeds=seeds, seed=seed)
    return list(iter(search.next_config, None)), skipped


def searcher(
    configs: int, preset: Preset, data: Dataset, *, seeds: int = 2, seed: int = 0
) -> Callable[..., Any]:
    """The search for ``ray_tune.run_grid``: given its resolved bases and run-key function."""
    budget = preset_budget(preset, data)

    def make(bases: list[RunConfig], key: Callable[[RunConfig], str]) -> MethodSearch:
        return MethodSearch(bases, configs, budget, seeds=seeds, seed=seed, key=key)

    return make


def select_best(
    results: Any, bases: list[RunConfig], seeds: int, finished: dict[str, dict[str, Any]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and target: every configuration's validation scores over the tuning seeds,
    and the chosen one (module docstring: highest mean; ties and no gain keep the defaults).

    ``results``: the search's ``ResultGrid`` (each trial's run carries its configuration's
    ``index``); ``finished`` (``Tracker.finished``) gives each run's MLflow run id.
    """
    best: dict[str, dict[str, dict[str, Any]]] = {}
    for base in bases:
        score = score_name(base)
        by_index: dict[int, dict[str, Any]] = {}
        for r in results or []:
            run = (r.config or {}).get("run", {})
            if run.get("score") != score:
                continue
            config: RunConfig = run["config"]
            entry = by_index.setdefault(
                run["index"],
                {"index": run["index"], "hparams": dict(config.hparams), "scores": {}, "runs": {}},
            )
            value = (r.metrics or {}).get(score)
            if value is not None:
                entry["scores"][str(config.seed)] = float(value)
                entry["runs"][str(config.seed)] = finished.get(run["key"], {}).get("run_id")
        configs = [by_index[i] for i in sorted(by_index)]
        for c in configs:
            done = len(c["scores"]) == seeds
            c[SCORE] = float(np.mean(list(c["scores"].values()))) if done else None
        best.setdefault(base.method, {})[f"{base.target:g}"] = choose(base, configs, seeds)
    return best


def choose(base: RunConfig, configs: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    """The entry saved for one (method, target): the configurations and the one chosen (the
    highest mean; the defaults, index 0, on a tie or when nothing beats them)."""
    eligible = [c for c in configs if c[SCORE] is not None]
    entry: dict[str, Any] = {
        "trials": len(configs) * seeds,
        "finished": sum(len(c["scores"]) for c in configs),
        "configs": configs,
        "space": describe_space(base.method, base.preset, base.target),
        SCORE: None,
        "default_" + SCORE: next((c[SCORE] for c in configs if c["index"] == 0), None),
    }
    if not eligible:
        return entry
    top = max(c[SCORE] for c in eligible)
    chosen = min((c for c in eligible if c[SCORE] >= top - 1e-9), key=lambda c: c["index"])
    entry.update({SCORE: chosen[SCORE], "hparams": chosen["hparams"], "chosen": chosen["index"]})
    return entry


def tuned_path(preset: Preset, root: Path = TUNED_DIR) -> Path:
    """One file per preset and budget: tuned values are only valid for that budget."""
    return tuned_file(preset.name, preset.epochs, root)


def tuned_file(preset: str, epochs: int, root: Path = TUNED_DIR) -> Path:
    return root / f"{preset}-{epochs}ep.json"


# The shape of a tuned-configurations file (what ``save_tuned`` writes), as a JSON Schema:
# checked with the ``jsonschema`` package before any value is read, so a file of another shape
# is one line naming where it differs. The values themselves are checked after it
# (``check_tuned_entries``): by each method's own hyperparameter parsing.
_SCALAR = {"type": ["string", "number", "boolean"]}
TUNED_FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["dataset", "model", "epochs", "data", "methods"],
    "properties": {
        "preset": {"type": "string"},
        "dataset": {"type": "string"},
        "model": {"type": "string"},
        "epochs": {"type": "integer", "minimum": 1},
        "data": {"type": "string"},
        "configs_per_method": {"type": "integer", "minimum": 1},
        "seeds": {"type": "array", "items": {"type": "integer"}},
        "methods": {
            "type": "object",
            "additionalProperties": {  # method -> target sparsity -> entry
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["hparams"],
                    "properties": {
                        "hparams": {"type": "object", "additionalProperties": _SCALAR},
                        "space": {"type": "object", "additionalProperties": {"type": "string"}},
                        "trials": {"type": "integer", "minimum": 0},
                        "finished": {"type": "integer", "minimum": 0},
                        "val_accuracy": {"type": ["number", "null"]},
                        "default_val_accuracy": {"type": ["number", "null"]},
                        "chosen": {"type": ["integer", "null"]},
                        "configs": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    },
}
TUNED_FORM = (
    "a tuned-configurations file as `benchsuite tune` saves it (dataset, model, epochs, data, "
    'and methods: {"METHOD": {"TARGET": {"hparams": {"NAME": VALUE}}}})'
)


def check_tuned_shape(payload: Any, where: str) -> None:
    """``payload`` has the shape of ``TUNED_FILE_SCHEMA`` (``BadInput`` naming the first place
    where it does not)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(TUNED_FILE_SCHEMA).iter_errors(payload))
    if error is not None:
        message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
        place = ".".join(str(part) for part in error.absolute_path) or "top level"
        raise BadInput(f"{where}: {place}: {message}; expected {TUNED_FORM}")


def check_tuned_entries(payload: dict[str, Any], where: str) -> None:
    """Every method is known, every target a sparsity in (0, 1) written as the harness looks
    it up, every value accepted by the method's own hyperparameter parsing (names and types,
    NaN refused): what ``run --tuned`` would otherwise find only when a trial starts."""
    try:
        check_targets_table(payload["methods"], "methods", "hparams")
    except ValueError as exc:
        raise BadInput(f"{where}: {exc}") from None


def read_tuned(path: Path, expected: dict[str, Any], what: str, hint: str) -> dict[str, Any]:
    """A tuned-configurations file, refused unless it has the file's shape and values
    (``check_tuned_shape``, ``check_tuned_entries``) and was tuned for ``expected`` (tuned
    values hold only for the dataset, model, budget and data they were tuned on)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{what}: cannot read {path} ({exc}); {hint}") from None
    check_tuned_shape(payload, what)
    check_tuned_entries(payload, what)
    for name, value in expected.items():
        if str(payload.get(name)) != str(value):
            shown = "data fingerprint" if name == "data" else name
            raise BadInput(
                f"{what} was tuned for {shown} {payload.get(name)!r}, not {value!r}; {hint}"
            )
    return payload


def load_for_run(
    preset: Preset,
    methods: list[str],
    targets: list[float],
    seeds: int,
    with_hp: bool,
    path: Path | None = None,
    *,
    data: Dataset | None = None,
) -> dict[str, dict[str, dict[str, str]]]:
    """``run --tuned``: the tuned hyperparameters, after the checks that keep the board honest
    (the file's shape and values, its preset, budget and, given ``data``, the data's
    fingerprint)."""
    if with_hp:
        raise BadInput(
            "--hp with --tuned: a tuned row is the tuning's choice per target; set "
            "hyperparameters with one or the other"
        )
    if seeds > TUNING_SEED:
        raise BadInput(
            f"--seeds {seeds} would reuse the tuning seeds ({TUNING_SEED}+) with --tuned; "
            f"use at most {TUNING_SEED} seeds"
        )
    return load_tuned(preset, methods, targets, path=path, data=data)


def save_tuned(
    path: Path,
    preset: Preset,
    data: Dataset,
    best: dict[str, dict[str, dict[str, Any]]],
    *,
    configs: int,
    seeds: int,
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
            "configs_per_method": configs,
            "seeds": [TUNING_SEED + j for j in range(seeds)],
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
    preset: Preset,
    methods: list[str],
    targets: list[float],
    root: Path = TUNED_DIR,
    path: Path | None = None,
    data: Dataset | None = None,
) -> dict[str, dict[str, dict[str, str]]]:
    """The best hyperparameters per method and target for ``run --tuned`` (Request.tuned), from
    ``path`` (default: the preset's file under ``root``), tuned on ``data`` when given."""
    path = path or tuned_path(preset, root)
    hint = (
        f"run `benchsuite tune --preset {preset.name} --epochs {preset.epochs} "
        f"--methods {','.join(methods)} --sparsity {','.join(f'{t:g}' for t in targets)}` first"
    )
    if not path.exists():
        raise BadInput(f"--tuned: no tuned configuration at {path}; {hint}")
    expected = {"dataset": preset.dataset, "model": preset.model, "epochs": preset.epochs}
    if data is not None:
        expected["data"] = data.fingerprint
    payload = read_tuned(path, expected, f"--tuned: {path}", hint)
    out: dict[str, dict[str, dict[str, str]]] = {}
    stored = payload.get("methods", {})
    for method in methods:
        for target in targets:
            if not _tunable(method, preset, target):
                continue  # nothing to tune: runs with its defaults (and calibration), untuned
            entry = stored.get(method, {}).get(f"{target:g}")
            if entry is None or entry.get("hparams") is None:
                raise BadInput(
                    f"--tuned: {path} has no tuned {method} at sparsity {target:g}; {hint}"
                )
            out.setdefault(method, {})[f"{target:g}"] = {
                k: str(v) for k, v in entry["hparams"].items()
            }
    return out
