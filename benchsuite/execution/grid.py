"""Parse and validate a benchmark request, and expand it into the grid of runs.

Everything that can be wrong with a request (names, sparsities, budgets, data) is found
here, before anything is started or written; each problem is one ``BadInput`` line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch

from benchsuite.core.budget import BudgetError
from benchsuite.core.errors import BadInput
from benchsuite.core.identity import preset_budget
from benchsuite.core.method import get_method, hparam_fields, list_methods, parse_hparams
from benchsuite.data.base import DataError, Dataset, load_dataset
from benchsuite.models import ModelError, build_model, get_model
from benchsuite.presets import Preset, PresetError, load_preset
from benchsuite.pruning.channels import ChannelGroups
from benchsuite.pruning.patterns import (
    CHANNEL,
    NM,
    UNSTRUCTURED_PATTERN,
    Pattern,
    parse_pattern,
)
from benchsuite.training.loop import RunConfig, hparam_pairs


def parse_numbers(
    text: str, option: str, valid: Callable[[float], bool], hint: str, invalid: str
) -> list[float]:
    """A comma list of numbers, each checked by ``valid``; sorted, without repeats."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise BadInput(f"{option} {part.strip()!r} is not a number; {hint}") from None
        if not valid(value):
            raise BadInput(f"{option} {value:g} {invalid}")
        values.append(value)
    return sorted(set(values))


def parse_sparsities(text: str) -> list[float]:
    return parse_numbers(
        text,
        "--sparsity",
        lambda v: 0.0 < v < 1.0,
        "give values in (0, 1), e.g. 0.9,0.95",
        "is outside (0, 1); give values strictly between 0 and 1",
    )


def parse_pattern_option(text: str) -> Pattern:
    """``--pattern``: unstructured, channel or N:M (one line naming the choices otherwise)."""
    try:
        return parse_pattern(text)
    except ValueError as exc:
        raise BadInput(f"--pattern {exc}") from None


def parse_methods(text: str, pattern: Pattern = UNSTRUCTURED_PATTERN) -> list[str]:
    """A comma list of method names and shell-style patterns (``imp*``, ``*``).

    ``all`` and every pattern select among the budget-equal methods that train to the
    sparsity ``pattern`` only; a study setting that is not budget-equal (imp-retrain) is run
    by naming it exactly (docs/extending.md), and a method named that does not support the
    sparsity pattern is refused.
    """
    known = list_methods()
    fitting = [m for m in known if get_method(m).supports(pattern)]
    equal = [m for m in fitting if get_method(m).budget_equal]
    choices = f"choose from all, {', '.join(known)}"
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "all":
            names += equal
        elif part in known and part not in fitting:
            supported = ", ".join(get_method(part).patterns)
            raise BadInput(
                f"--methods {part} does not train to the {pattern} pattern (it supports "
                f"{supported}); for {pattern} choose from {', '.join(fitting)}"
            )
        elif part in known:
            names.append(part)
        elif any(c in part for c in "*?["):
            names += _matching(part, equal, known, choices)
        elif part:
            raise BadInput(f"--methods: unknown method {part!r}; {choices}")
    if not names:
        raise BadInput(f"--methods selects no method for the {pattern} pattern; {choices}")
    return list(dict.fromkeys(names))


def check_pattern(pattern: Pattern, sparsities: list[float], preset: Preset, data: Dataset) -> None:
    """N:M sets the sparsity of its layers (1 − N/M): every target must be that. Channels need
    a model Torch-Pruning can trace."""
    if pattern.kind == NM:
        implied = pattern.sparsity
        assert implied is not None
        for target in sparsities:
            if abs(target - implied) > 1e-9:
                raise BadInput(
                    f"--sparsity {target:g} with --pattern {pattern}: {pattern} keeps {pattern.n} "
                    f"of every {pattern.m} weights, sparsity {implied:g}; give --sparsity "
                    f"{implied:g} (or leave it out)"
                )
    if pattern.kind == CHANNEL:
        with torch.random.fork_rng(devices=[]):
            model = build_model(preset.model, data.num_classes, data.input_shape)
        try:
            ChannelGroups(model, torch.zeros(1, *data.input_shape)).check()
        except Exception as exc:  # noqa: BLE001 - any tracing failure is the model's
            raise BadInput(
                f"--pattern channel: Torch-Pruning's dependency graph does not describe model "
                f"{preset.model!r}: {exc}"
            ) from None


def _matching(pattern: str, equal: list[str], known: list[str], choices: str) -> list[str]:
    matched = [m for m in equal if fnmatchcase(m, pattern)]
    if not matched:
        others = [m for m in known if fnmatchcase(m, pattern)]
        hint = f" (name {', '.join(others)} exactly: not budget-equal)" if others else ""
        raise BadInput(f"--methods: {pattern!r} matches no budget-equal method{hint}; {choices}")
    return matched


def parse_hp_options(options: list[str], methods: list[str]) -> dict[str, list[dict[str, str]]]:
    """``METHOD.NAME=V1,V2`` (repeatable) → per method, the list of override dicts (variants)."""
    values: dict[str, dict[str, list[str]]] = {}
    for option in options:
        head, sep, tail = option.partition("=")
        method, dot, name = head.partition(".")
        if not sep or not dot or not tail:
            raise BadInput(f"--hp {option!r} is not METHOD.NAME=V1[,V2...]")
        if method not in methods:
            raise BadInput(
                f"--hp {option!r}: method {method!r} is not in --methods ({', '.join(methods)})"
            )
        cls = get_method(method)
        fields = [f.name for f in hparam_fields(cls.Hparams)]
        if name not in fields:
            raise BadInput(
                f"--hp {option!r}: {method} has no hyperparameter {name!r}; "
                f"choose from {', '.join(fields) or '(none)'}"
            )
        values.setdefault(method, {})[name] = [v.strip() for v in tail.split(",")]
    variants: dict[str, list[dict[str, str]]] = {}
    for method in methods:
        spec = values.get(method, {})
        combos = itertools.product(*spec.values()) if spec else [()]
        variants[method] = [dict(zip(spec, combo)) for combo in combos]
        for overrides in variants[method]:
            try:
                parse_hparams(get_method(method).Hparams, overrides)
            except (ValueError, TypeError) as exc:
                raise BadInput(f"--hp {method}: {exc}") from None
    return variants


def resolve_preset(
    name: str, *, dataset: str | None, model: str | None, epochs: int | None
) -> Preset:
    """A registered preset or a PATH.toml, with the command line's overrides applied."""
    try:
        preset = load_preset(name)
    except PresetError as exc:
        raise BadInput(f"--preset: {exc}") from None
    if epochs is not None and epochs < 1:
        raise BadInput(f"--epochs {epochs} is not a budget; give an integer >= 1")
    try:
        get_model(model or preset.model)
    except ModelError as exc:
        raise BadInput(f"{'--model' if model else '--preset'}: {exc}") from None
    changes = {
        k: v
        for k, v in {"dataset": dataset, "model": model, "epochs": epochs}.items()
        if v is not None
    }
    return preset.replace(**changes) if changes else preset


def load_data(preset: Preset, data_dir: str | None) -> Dataset:
    try:
        return load_dataset(preset.dataset, data_dir)
    except DataError as exc:
        raise BadInput(str(exc)) from None


@dataclass(frozen=True)
class Request:
    preset: Preset
    methods: list[str]
    sparsities: list[float]
    seeds: list[int]
    variants: dict[str, list[dict[str, str]]]
    data_dir: str | None = None
    device: str = "cpu"
    # method → target sparsity (as f"{t:g}") → best hyperparameters from `benchsuite tune`
    tuned: dict[str, dict[str, dict[str, str]]] | None = None
    pattern: Pattern = UNSTRUCTURED_PATTERN


def expand(request: Request, data: Dataset) -> list[RunConfig]:
    """methods × variants × targets × seeds, dense once per seed; every plan checked."""
    configs = []
    try:
        budget = preset_budget(request.preset, data)
    except DataError as exc:
        raise BadInput(str(exc)) from None
    for method in request.methods:
        cls = get_method(method)
        targets = [0.0] if cls.one_per_seed else request.sparsities
        for overrides, target, seed in itertools.product(
            request.variants[method], targets, request.seeds
        ):
            best = (request.tuned or {}).get(method, {}).get(f"{target:g}")
            tuned = best is not None
            hps = {**(best or {}), **overrides}
            config = RunConfig(
                preset=request.preset,
                method=method,
                target=target,
                seed=seed,
                hparams=hparam_pairs(hps),
                calibrated=hparam_pairs(request.preset.calibrated(method, target)),
                data_dir=request.data_dir,
                device=request.device,
                tuned=tuned,
                # the dense reference is one run whatever the pattern (its key stays)
                pattern="unstructured" if cls.one_per_seed else str(request.pattern),
            )
            try:
                cls.plan(budget, config.hp(), target, request.preset.schedule)
            except BudgetError as exc:
                raise BadInput(f"{exc} (preset {request.preset.name}; raise --epochs)") from None
            configs.append(config)
    return configs
