"""The ``benchsuite`` command line.

Bad input is one line on stderr naming the bad value and the valid choices, exit code 2,
and nothing is started or written: every request is fully validated (names, sparsities,
budgets, data) before the tracking store is touched.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from benchsuite import __version__
from benchsuite.cli.checks import absolute_dir, check_out_dir, check_writable, parse_resources
from benchsuite.cli.options import (
    GridOptions,
    InProcessOption,
    MethodsOption,
    PresetOption,
    SparsityOption,
    TrackingOption,
    TunedConfigsOption,
    grid_options,
)
from benchsuite.core.errors import BadInput
from benchsuite.store.sqlite import absolute_uri
from benchsuite.store.tracking import DEFAULT_TRACKING_URI

# Everything that imports torch (the grid, methods, presets) is imported inside the commands,
# so `benchsuite --help` and a bad option answer in well under a second.

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Equal-budget benchmarks of pruning methods."
)
console = Console()
err = Console(stderr=True)


def fail(message: str) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def broken_plugins() -> list:
    """Every plugin of the four tables (methods, models, datasets, presets) that failed to load."""
    from benchsuite.core.method import method_registry
    from benchsuite.data.base import dataset_registry
    from benchsuite.models import model_registry
    from benchsuite.presets import preset_registry

    tables = (method_registry(), model_registry(), dataset_registry(), preset_registry())
    return [b for table in tables for b in table.broken]


def report_broken_plugins() -> None:
    for broken in broken_plugins():
        kind = broken.group.rsplit(".", 1)[-1].removesuffix("s")
        err.print(
            f"warning: {kind} plugin {broken.name!r} ({broken.target}) skipped: {broken.error}",
            markup=False,
        )


def experiment_name(preset: str, epochs: int) -> str:
    """A benchmark's default experiment: ``<preset>-<epochs>ep``."""
    return f"{preset}-{epochs}ep"


@app.command()
@grid_options
def run(
    opts: GridOptions,
    methods: MethodsOption = "all",
    sparsity: Annotated[
        str | None,
        typer.Option(
            help="Target sparsities in (0, 1), comma separated (default 0.9; N:M: 1 − N/M)."
        ),
    ] = None,
    pattern: Annotated[
        str,
        typer.Option(
            help="Sparsity pattern: unstructured, N:M (N kept of every M along the input, e.g. "
            "2:4) or channel (whole channels removed)."
        ),
    ] = "unstructured",
    seeds: Annotated[
        int, typer.Option(help="Number of seeds (0..N-1), paired across methods.")
    ] = 1,
    hp: Annotated[
        list[str] | None, typer.Option(help="METHOD.NAME=V1,V2: one variant per value.")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default <preset>-<epochs>ep).")
    ] = None,
    in_process: InProcessOption = False,
    tuned: Annotated[
        bool,
        typer.Option("--tuned", help="Use the best configurations saved by `benchsuite tune`."),
    ] = False,
    tuned_configs: TunedConfigsOption = None,
    throughput: Annotated[
        bool,
        typer.Option(
            help="After the grid, time each method variant alone for the leaderboard's img/s."
        ),
    ] = True,
) -> None:
    """Train every requested method on the same data, start and budget; record each in MLflow."""
    from benchsuite.execution.grid import (
        Request,
        check_pattern,
        expand,
        parse_hp_options,
        parse_methods,
        parse_pattern_option,
    )

    report_broken_plugins()
    try:
        check_seeds(seeds)
        shape = parse_pattern_option(pattern)
        names = parse_methods(methods, shape)
        implied = shape.sparsity
        targets = parse_sparsities(sparsity or ("0.9" if implied is None else f"{implied:g}"))
        variants = parse_hp_options(hp or [], names)
        preset, resources, data_dir, data = load_grid(opts)
        check_pattern(shape, targets, preset, data)
        best = None
        if tuned or tuned_configs:
            from benchsuite.tuning.search import load_for_run

            best = load_for_run(preset, names, targets, seeds, bool(hp), tuned_configs, data=data)
        request = Request(
            preset,
            names,
            targets,
            list(range(seeds)),
            variants,
            data_dir,
            opts.device or "cpu",
            best,
            shape,
        )
        configs = expand(request, data)
        check_writable(opts.tracking_uri, opts.cache_dir)
    except BadInput as exc:
        fail(str(exc))
    name = experiment or experiment_name(preset.name, preset.epochs)
    outcome = run_grid_or_exit(configs, data, opts, name, resources, in_process=in_process)
    from benchsuite.boards.aggregation import aggregate
    from benchsuite.boards.publish import load_runs
    from benchsuite.boards.render import render_rich

    uri = absolute_uri(opts.tracking_uri)
    if throughput and opts.address is None and not outcome.interrupted:
        from benchsuite.store.tracking import Tracker
        from benchsuite.training.throughput import record_isolated

        with console.status(
            "timing each method variant alone (isolated img/s; other benchsuite commands on "
            "this machine take turns with it)"
        ):
            record_isolated(outcome.configs or configs, data, Tracker(uri, name))

    console.print(render_rich(aggregate(load_runs(uri, name))))
    summarize(outcome, opts.tracking_uri, name)


def check_seeds(seeds: int) -> None:
    if seeds < 1:
        raise BadInput(f"--seeds {seeds} must be >= 1")


def parse_sparsities(text: str) -> list[float]:
    from benchsuite.execution.grid import parse_sparsities

    return parse_sparsities(text)


def load_grid(opts: GridOptions):
    """The validated shared options: the resolved preset, the resources, the data directory
    and the data (``BadInput`` for any bad one, before anything is started)."""
    from benchsuite.execution.grid import load_data, resolve_preset

    preset = resolve_preset(opts.preset, dataset=opts.dataset, model=opts.model, epochs=opts.epochs)
    resources = parse_resources(
        opts.address,
        opts.cpus_per_trial,
        opts.gpus_per_trial,
        opts.max_concurrent,
        opts.retries,
        opts.device,
        opts.tracking_uri,
    )
    data_dir = absolute_dir(opts.data_dir)
    return preset, resources, data_dir, load_data(preset, data_dir)


def run_grid_or_exit(
    configs,
    data,
    opts: GridOptions,
    experiment: str,
    resources,
    *,
    kind: str = "run",
    in_process: bool = False,
    search=None,
):
    """Run the grid (Ray Tune, or this process with ``--in-process``); Ctrl-C exits 130."""
    from benchsuite.execution.cluster import ResourceError

    if in_process:
        from benchsuite.execution.local import run_local as run_grid
    else:
        from benchsuite.execution.ray_tune import run_grid
    command = "benchsuite " + shlex.join(sys.argv[1:])
    try:
        return run_grid(
            configs,
            data,
            opts.tracking_uri,
            experiment,
            cache_dir=opts.cache_dir,
            command=command,
            console=console,
            resources=resources,
            kind=kind,
            search=search,
        )
    except ResourceError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # run_grid ends its runs itself; this is Ctrl-C around it
        err.print("interrupted", markup=False)
        raise typer.Exit(130) from None


def summarize(outcome, tracking_uri: str, experiment: str) -> None:
    """The outcome in one line (and one per run another command holds); exit 130 when
    interrupted, 1 when a run failed."""
    console.print(f"{outcome.summary()} → {tracking_uri}, experiment {experiment!r}", markup=False)
    for line in outcome.claims:
        console.print(f"  skipped {line}", markup=False, highlight=False)
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.failed:
        raise typer.Exit(1)


@app.command()
@grid_options
def tune(
    opts: GridOptions,
    methods: MethodsOption = "all",
    sparsity: SparsityOption = "0.9",
    trials_per_method: Annotated[
        int,
        typer.Option(
            help="Configurations per method and target, the defaults among them; each trains "
            "on every tuning seed."
        ),
    ] = 6,
    tuning_seeds: Annotated[
        int, typer.Option(help="Tuning seeds (1000, 1001, ...) every configuration trains on.")
    ] = 2,
    experiment: Annotated[
        str | None,
        typer.Option(help="MLflow experiment of the trials (default <preset>-<epochs>ep-tune)."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Random state of the search (the same seed draws the same trials).")
    ] = 0,
) -> None:
    """Equal tuning budget: N full-budget random-search trials per method, scored on validation."""
    from benchsuite.cli.tables import best_table
    from benchsuite.execution.grid import Request, parse_methods
    from benchsuite.tuning.search import (
        TUNING_SEED,
        draw_trials,
        save_tuned,
        searcher,
        select_best,
        tuned_path,
        tuning_bases,
    )

    report_broken_plugins()
    try:
        if trials_per_method < 1:
            raise BadInput(f"--trials-per-method {trials_per_method} must be >= 1")
        if tuning_seeds < 1:
            raise BadInput(f"--tuning-seeds {tuning_seeds} must be >= 1")
        names = parse_methods(methods)
        targets = parse_sparsities(sparsity)
        preset, resources, data_dir, data = load_grid(opts)
        request = Request(preset, names, targets, [], {}, data_dir, opts.device or "cpu")
        configs, untunable = draw_trials(
            request, data, trials_per_method, seeds=tuning_seeds, seed=seed
        )
        if not configs:
            raise BadInput(
                f"--methods: {', '.join(untunable)} declare no tunable hyperparameters "
                "(no low/high or choices); nothing to tune"
            )
        check_writable(opts.tracking_uri, opts.cache_dir)
    except BadInput as exc:
        fail(str(exc))
    for method in untunable:
        console.print(
            f"{method}: nothing to tune (no ranges, or only knobs the preset calibrates "
            "per target); it runs with its defaults and calibration (skipped)"
        )
    name = experiment or experiment_name(preset.name, preset.epochs) + "-tune"
    console.print(
        f"tuning {', '.join(m for m in names if m not in untunable)}: {trials_per_method} "
        f"configuration(s) per method and target (the defaults first), each on seeds "
        f"{TUNING_SEED}..{TUNING_SEED + tuning_seeds - 1}, scored by the mean validation "
        "accuracy of the finalized model"
    )
    search = searcher(trials_per_method, preset, data, seeds=tuning_seeds, seed=seed)
    bases = tuning_bases(request)[0]
    outcome = run_grid_or_exit(bases, data, opts, name, resources, kind="tune", search=search)
    from benchsuite.store.tracking import Tracker

    finished = Tracker(absolute_uri(opts.tracking_uri), name).finished(kind="tune")
    best = select_best(outcome.results, outcome.configs, tuning_seeds, finished)
    path = tuned_path(preset)
    save_tuned(
        path, preset, data, best, configs=trials_per_method, seeds=tuning_seeds, experiment=name
    )
    console.print(best_table(best))
    console.print(f"saved → {path}; `benchsuite run --tuned` uses it")
    summarize(outcome, opts.tracking_uri, name)


@app.command("methods")
def methods_cmd() -> None:
    """Registered methods, where each comes from, hyperparameters, defaults and their sources."""
    from benchsuite.cli.tables import methods_table
    from benchsuite.core.method import method_registry

    reg = method_registry()
    console.print(methods_table(reg))
    for broken in reg.broken:
        console.print(
            f"[red]skipped[/red] {broken.name} ({broken.target}): {broken.error}", markup=True
        )


@app.command()
def presets() -> None:
    """Shipped benchmark presets: dataset, model, budget, optimizer, LR schedule."""
    from benchsuite.cli.tables import presets_table

    console.print(presets_table())


def load_board(tracking_uri: str, experiment: str | None):
    """The experiment's leaderboard, or its study board when its runs are a study's."""
    from benchsuite.boards.aggregation import aggregate
    from benchsuite.boards.publish import experiments, load_runs, newest_experiment
    from benchsuite.store.sqlite import NoStore, StoreError, check_store
    from benchsuite.studies.table1 import aggregate_study, is_study
    from benchsuite.studies.table2 import aggregate_table2, is_table2

    what = f"--experiment {experiment!r} has no runs" if experiment else "no experiment has runs"
    try:
        check_store(tracking_uri, write=False)
    except NoStore as exc:
        fail(f"{what}: {exc}")
    except StoreError as exc:
        fail(str(exc))

    name = experiment or newest_experiment(tracking_uri)
    try:
        runs = [] if name is None else load_runs(tracking_uri, name)
    except KeyError:
        runs = []
    if not runs:
        known = ", ".join(experiments(tracking_uri)) or "(none: run `benchsuite run` first)"
        fail(f"{what} at {tracking_uri}; choose from {known}")
    if is_study(runs):
        return aggregate_study(runs, name)
    return aggregate_table2(runs, name) if is_table2(runs) else aggregate(runs, experiment=name)


@app.command()
def leaderboard(
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: the newest).")
    ] = None,
    tracking_uri: TrackingOption = DEFAULT_TRACKING_URI,
) -> None:
    """Render an experiment's leaderboard (paired statistics over seeds) in the terminal."""
    board = load_board(tracking_uri, experiment)
    console.print(board_writers(board)[0](board))


def board_writers(board):
    """(render_rich, publish) of the board's layout: the leaderboard's or a study's."""
    from benchsuite.boards import publish as leaderboard
    from benchsuite.boards.render import render_rich
    from benchsuite.studies import table1, table2

    if isinstance(board, table1.StudyBoard):
        return table1.render_rich, table1.publish
    if isinstance(board, table2.Table2Board):
        return table2.render_rich, table2.publish
    return render_rich, leaderboard.publish


@app.command()
def publish(
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: the newest).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("leaderboards"),
    tracking_uri: TrackingOption = DEFAULT_TRACKING_URI,
    force: Annotated[
        bool, typer.Option(help="Publish even if the runs are not comparable.")
    ] = False,
    tuned_configs: TunedConfigsOption = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="A tuned board's defaults experiment: tuned − defaults per cell, paired by seed."
        ),
    ] = None,
    readme: Annotated[
        Path | None,
        typer.Option(
            help="Also rewrite the results excerpt between this file's "
            "<!-- results:EXPERIMENT --> markers."
        ),
    ] = None,
) -> None:
    """Write <experiment>.md, .json and .png (and the index) for publication.

    A study experiment (``benchsuite study``) is published in its own layout; a board with tuned
    rows says how they were tuned and is published with their configurations."""
    from benchsuite.boards import publish as boards
    from benchsuite.boards.findings import tuned_minus_default
    from benchsuite.boards.format import published_stem
    from benchsuite.boards.leaderboard import Leaderboard, UnfairComparison
    from benchsuite.boards.tuning_section import tuning_for

    try:
        check_out_dir(out)
    except BadInput as exc:
        fail(str(exc))
    board = load_board(tracking_uri, experiment)
    is_study = not isinstance(board, Leaderboard)
    if is_study and baseline:
        fail("--baseline is for a tuned leaderboard, not for a study's board")
    write = board_writers(board)[1]
    try:
        if not is_study:
            board.tuning = tuning_for(board, tuned_configs)
            if baseline:
                board.deltas = tuned_minus_default(board, load_board(tracking_uri, baseline))
        paths = write(board, out, force=force)
        if readme is not None:
            link = f"{out.as_posix().rstrip('/')}/{published_stem(board.experiment)}.md"
            excerpt = (
                f"From [{board.experiment}]({link}): {board.headline}"
                if is_study
                else boards.readme_excerpt(board, link)
            )
            boards.update_readme(readme, board.experiment, excerpt)
            paths.append(readme)
    except UnfairComparison as exc:
        fail(f"{exc} (use --force to publish anyway; the problems are then listed in the file)")
    except BadInput as exc:
        fail(str(exc))
    except OSError as exc:  # what the check above cannot foresee (a full disk, a race)
        fail(f"--out {out}: cannot write {exc.filename or out} ({exc.strerror or exc})")
    for path in paths:
        console.print(f"wrote {path}")


study_app = typer.Typer(
    no_args_is_help=True, help="Fixed grids of runs from a paper, each with its own board."
)
app.add_typer(study_app, name="study")


@study_app.command("table1")
@grid_options
def study_table1(
    opts: GridOptions,
    seeds: Annotated[int, typer.Option(help="Number of seeds (0..N-1), paired.")] = 3,
    sparsity: SparsityOption = "0.7,0.8,0.9,0.95,0.98",
    budgets: Annotated[
        str, typer.Option(help="Retraining budgets, fractions of the dense budget's steps.")
    ] = "0.0222,0.0555,0.1111",
    schedules: Annotated[
        str, typer.Option(help="Retraining schedules, comma separated.")
    ] = "ft,lrw,slr,clr,llr,allr",
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default <preset>-<epochs>ep-table1).")
    ] = None,
    in_process: InProcessOption = False,
) -> None:
    """The paper's Table 1 on any preset: retraining schedules × sparsities × budgets.

    One-shot IMP (imp-retrain): dense for the preset's full budget (one cached dense run per
    seed), one global magnitude prune, retraining on top of it (not budget-equal). Reruns
    resume by run key; `benchsuite publish` writes the study's board.
    """
    from benchsuite.studies import table1 as study

    report_broken_plugins()
    try:
        check_seeds(seeds)
        targets = parse_sparsities(sparsity)
        fractions = study.parse_budgets(budgets)
        names = study.parse_schedules(schedules)
        preset, resources, data_dir, data = load_grid(opts)
        configs = study.table1_configs(
            preset,
            data,
            targets,
            fractions,
            names,
            list(range(seeds)),
            data_dir=data_dir,
            device=opts.device or "cpu",
        )
    except BadInput as exc:
        fail(str(exc))
    name = experiment or study.experiment_name(preset)
    outcome = run_grid_or_exit(configs, data, opts, name, resources, in_process=in_process)
    from benchsuite.boards.publish import load_runs

    board = study.aggregate_study(load_runs(absolute_uri(opts.tracking_uri), name), name)
    console.print(study.render_rich(board))
    console.print(f"publish it: benchsuite publish --experiment {name}")
    summarize(outcome, opts.tracking_uri, name)


@study_app.command("table2")
@grid_options
def study_table2(
    opts: GridOptions,
    seeds: Annotated[int, typer.Option(help="Number of seeds (0..N-1), paired.")] = 3,
    sparsity: SparsityOption = "0.7,0.8,0.9",
    methods: Annotated[
        str,
        typer.Option(
            help="The rows to run: the paper's bimp,gmp,gsm,dpf,dnw,lc,str,dst and the "
            "references dense,oneshot,rigl (comma list, or all)."
        ),
    ] = "all",
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default <preset>-<epochs>ep-table2).")
    ] = None,
    in_process: InProcessOption = False,
    throughput: Annotated[
        bool, typer.Option(help="After the grid, time each method alone for the img/s column.")
    ] = True,
) -> None:
    """The paper's Table 2 on any preset: BIMP and the pruning-stable methods at 70/80/90 %.

    Ordinary budget-equal runs with default hyperparameters (and the preset's calibration),
    plus dense, the one-shot floor and RigL as reference rows. Reruns resume by run key;
    `benchsuite publish` writes the board in the paper's layout with its comparison to the paper.
    """
    from benchsuite.studies import table2 as study

    report_broken_plugins()
    try:
        check_seeds(seeds)
        targets = parse_sparsities(sparsity)
        names = study.parse_methods(methods)
        preset, resources, data_dir, data = load_grid(opts)
        configs = study.table2_configs(
            preset,
            data,
            targets,
            names,
            list(range(seeds)),
            data_dir=data_dir,
            device=opts.device or "cpu",
        )
        check_writable(opts.tracking_uri, opts.cache_dir)
    except BadInput as exc:
        fail(str(exc))
    name = experiment or study.experiment_name(preset)
    outcome = run_grid_or_exit(configs, data, opts, name, resources, in_process=in_process)
    from benchsuite.boards.publish import load_runs

    uri = absolute_uri(opts.tracking_uri)
    if throughput and opts.address is None and not outcome.interrupted:
        from benchsuite.store.tracking import Tracker
        from benchsuite.training.throughput import record_isolated

        with console.status("timing each method alone (isolated img/s)"):
            record_isolated(configs, data, Tracker(uri, name))
    board = study.aggregate_table2(load_runs(uri, name), name)
    console.print(study.render_rich(board))
    console.print(f"publish it: benchsuite publish --experiment {name}")
    summarize(outcome, opts.tracking_uri, name)


@app.command()
def calibrate(
    method: Annotated[str, typer.Option(help="A method whose sparsity emerges from a knob.")],
    knob: Annotated[str, typer.Option(help="The hyperparameter that steers its sparsity.")],
    target: Annotated[
        str,
        typer.Option(help="The target sparsity, in (0, 1); several (0.9,0.8,0.7) share probes."),
    ],
    low: Annotated[float, typer.Option(help="The knob's first bracket end.")],
    high: Annotated[float, typer.Option(help="The knob's other bracket end.")],
    preset: PresetOption = "digits",
    linear: Annotated[bool, typer.Option("--linear", help="The knob is not log-scale.")] = False,
    decreasing: Annotated[
        bool, typer.Option("--decreasing", help="Sparsity falls as the knob grows.")
    ] = False,
    fixed: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE: another hyperparameter held fixed.")
    ] = None,
    max_probes: Annotated[int, typer.Option(help="At most N knob values tried.")] = 7,
    workers: Annotated[int, typer.Option(help="Calibration runs at once (processes).")] = 2,
) -> None:
    """Find the value of a sparsity-steering knob (STR, DST, CS) that lands a method on a target,
    on calibration seeds, judged on sparsity only; prints the preset's TOML block per target."""
    from benchsuite.core.method import get_method, method_registry, parse_hparams
    from benchsuite.core.registry import UnknownName
    from benchsuite.execution.grid import parse_numbers, resolve_preset
    from benchsuite.tuning.calibrate import calibrate_targets, toml_block

    try:
        resolve_preset(preset, dataset=None, model=None, epochs=None)
        try:
            method_cls = get_method(method)
        except UnknownName as exc:
            raise BadInput(f"--method: {exc}") from None
        if method_cls.targets_sparsity:
            reg = method_registry()
            steered = ", ".join(m for m in reg.names() if not reg.get(m).targets_sparsity)
            raise BadInput(
                f"--method {method} reaches the target itself, there is nothing to calibrate; "
                f"choose a method whose sparsity emerges from a knob: {steered}"
            )
        hp_cls = method_cls.Hparams
        pairs = dict(f.split("=", 1) if "=" in f else (f, "") for f in fixed or [])
        try:
            parse_hparams(hp_cls, {**pairs, knob: str(low)})
            parse_hparams(hp_cls, {knob: str(high)})
        except KeyError as exc:
            names = ", ".join(f.name for f in dataclasses.fields(hp_cls)) or "(none)"
            raise BadInput(f"{method} has no hyperparameter {exc}; choose from {names}") from None
        except ValueError as exc:
            raise BadInput(f"{method}: {exc}") from None
        parse_numbers(
            target,
            "--target",
            lambda v: 0.0 < v < 1.0,
            "give a sparsity in (0, 1), or several: 0.9,0.8,0.7",
            "is outside (0, 1); give a sparsity between 0 and 1",
        )
        # in the order given: --low and --high bracket the first target, the rest share probes
        targets = list(dict.fromkeys(float(part) for part in target.split(",")))
        if not linear and (low <= 0 or high <= 0):
            raise BadInput(
                f"--low {low} --high {high}: a log-scale knob needs both > 0 (or --linear)"
            )
        if low == high or max_probes < 2 or workers < 1:
            raise BadInput(
                f"--low {low} --high {high} --max-probes {max_probes} --workers {workers}: "
                "need two different bracket ends, >= 2 probes and >= 1 worker"
            )
    except BadInput as exc:
        fail(str(exc))
    found = calibrate_targets(
        preset,
        method,
        knob,
        targets,
        low,
        high,
        log_scale=not linear,
        increasing=not decreasing,
        fixed=tuple(pairs.items()),
        max_probes=max_probes,
        workers=workers,
    )
    for t, probes in found.items():
        console.print(
            toml_block(method, t, knob, probes, tuple(pairs.items())),
            markup=False,
            highlight=False,
        )


@app.command()
def version() -> None:
    """Print benchsuite's version."""
    console.print(__version__)


BUG_HINT = (
    "this is a bug in benchsuite; please report it at the project's issue tracker with the "
    "command line and the traceback (rerun with BENCHSUITE_TRACEBACK=1 to print it)"
)


def main() -> None:  # pragma: no cover - the console script; tests invoke ``app``
    """Input errors end in one line (exit 2), Ctrl-C in exit 130, and a bug in a short message
    saying how to report it, never in a bare traceback."""
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if type(exc).__name__ == "Abort":  # click's (vendored by typer) name for Ctrl-C
            err.print("interrupted", markup=False)
            sys.exit(130)
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # a usage error (unknown option, bad type): click's own message
            sys.exit(exc.exit_code)
        if os.environ.get("BENCHSUITE_TRACEBACK"):
            raise
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        err.print(f"error: {type(exc).__name__}: {reason}", markup=False, soft_wrap=True)
        err.print(BUG_HINT, markup=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
