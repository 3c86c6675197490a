"""The ``benchsuite`` command line.

Bad input is one line on stderr naming the bad value and the valid choices, exit code 2,
and nothing is started or written: every request is fully validated (names, sparsities,
budgets, data) before the tracking store is touched.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .grid import BadInput, Request, expand, load_data, parse_hp_options, parse_methods, parse_sparsities, resolve_preset
from .method import hparam_fields
from .presets import list_presets, load_preset
from .registry import registry
from .tracking import DEFAULT_TRACKING_URI

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Equal-budget benchmarks of pruning methods.")
console = Console()
err = Console(stderr=True)


def fail(message: str) -> None:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def report_broken_plugins() -> None:
    for broken in registry().broken:
        err.print(f"warning: method plugin {broken.name!r} ({broken.target}) skipped: {broken.error}", markup=False)


def default_experiment(preset: str, epochs: int) -> str:
    return f"{preset}-{epochs}ep"


@app.command()
def run(
    methods: Annotated[str, typer.Option(help="Comma list of registered methods, or 'all'.")] = "all",
    sparsity: Annotated[str, typer.Option(help="Target sparsities in (0, 1), comma separated.")] = "0.9",
    preset: Annotated[str, typer.Option(help="Benchmark preset (see `benchsuite presets`).")] = "digits",
    dataset: Annotated[str | None, typer.Option(help="Override the preset's dataset.")] = None,
    model: Annotated[str | None, typer.Option(help="Override the preset's model.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the budget (epochs) every method gets.")] = None,
    seeds: Annotated[int, typer.Option(help="Number of seeds (0..N-1), paired across methods.")] = 1,
    hp: Annotated[list[str] | None, typer.Option(help="METHOD.NAME=V1,V2: one variant per value.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Directory of the dataset's files.")] = None,
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI.")] = DEFAULT_TRACKING_URI,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default <preset>-<epochs>ep).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    cache_dir: Annotated[Path, typer.Option(help="Where shared dense-phase checkpoints go.")] = Path(".benchsuite/cache"),
) -> None:
    """Train every requested method on the same data, start and budget; record each run in MLflow."""
    report_broken_plugins()
    try:
        if seeds < 1:
            raise BadInput(f"--seeds {seeds} must be >= 1")
        names = parse_methods(methods)
        targets = parse_sparsities(sparsity)
        resolved = resolve_preset(preset, dataset=dataset, model=model, epochs=epochs)
        variants = parse_hp_options(hp or [], names)
        check_device(device)
        data = load_data(resolved, data_dir)
        request = Request(resolved, names, targets, list(range(seeds)), variants, data_dir, device)
        configs = expand(request, data)
    except BadInput as exc:
        fail(str(exc))
        return
    from .orchestrate import run_grid

    name = experiment or default_experiment(resolved.name, resolved.epochs)
    command = "benchsuite " + shlex.join(sys.argv[1:])
    outcome = run_grid(configs, data, tracking_uri, name, cache_dir=cache_dir, command=command, console=console)
    from .leaderboard import aggregate, load_runs, render_rich

    console.print(render_rich(aggregate(load_runs(tracking_uri, name))))
    console.print(
        f"{outcome.finished} finished, {outcome.failed} failed, {outcome.skipped} skipped "
        f"(already finished) → {tracking_uri}, experiment {name!r}"
    )
    if outcome.failed:
        raise typer.Exit(1)


def check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInput(f"--device {device}: no CUDA device is available here; use cpu")
        return
    raise BadInput(f"--device {device!r}; choose from cpu, cuda, cuda:N")


@app.command("methods")
def methods_cmd() -> None:
    """Registered methods, where each comes from, hyperparameters, defaults and their sources."""
    reg = registry()
    table = Table(title="Registered pruning methods", show_lines=True)
    for col in ("method", "package", "paper", "hyperparameters (default — source)"):
        table.add_column(col, overflow="fold")
    for name, cls in sorted(reg.methods.items()):
        lines = []
        for f in hparam_fields(cls.Hparams):
            space = ""
            if f.metadata.get("choices"):
                space = f" ∈ {{{', '.join(map(str, f.metadata['choices']))}}}"
            elif f.metadata.get("low") is not None:
                space = f" ∈ [{f.metadata['low']}, {f.metadata['high']}]" + (" log" if f.metadata.get("log") else "")
            lines.append(f"{f.name} = {f.default!r}{space} — {f.metadata.get('source', '?')}")
        paper = cls.source + ("" if cls.targets_sparsity else "\n(sparsity emerges from hyperparameters)")
        table.add_row(name, reg.sources[name], paper, "\n".join(lines) or "—")
    console.print(table)
    for broken in reg.broken:
        console.print(f"[red]skipped[/red] {broken.name} ({broken.target}): {broken.error}", markup=True)


@app.command()
def presets() -> None:
    """Shipped benchmark presets: dataset, model, budget, optimizer, LR schedule."""
    table = Table(title="Benchmark presets", show_lines=True)
    for col in ("preset", "dataset / model", "budget", "optimizer", "schedule", "description"):
        table.add_column(col, overflow="fold")
    for name in list_presets():
        p = load_preset(name)
        opt = p.optimizer
        sched = dataclasses.asdict(p.schedule)
        table.add_row(
            name,
            f"{p.dataset}\n{p.model}",
            f"{p.epochs} epochs\nbatch {p.batch_size}",
            f"SGD lr {opt.lr:g}, momentum {opt.momentum:g}, wd {opt.weight_decay:g}"
            + (", nesterov" if opt.use_nesterov else ""),
            ", ".join(f"{k}={v}" for k, v in sched.items() if v not in ((), 0, 0.0) or k == "kind"),
            p.description,
        )
    console.print(table)


def load_board(tracking_uri: str, experiment: str | None):
    from .leaderboard import experiments, leaderboard_for

    try:
        return leaderboard_for(tracking_uri, experiment)
    except KeyError:
        known = experiments(tracking_uri)
        fail(
            f"--experiment {experiment!r} has no runs at {tracking_uri}; "
            f"choose from {', '.join(known) or '(none: run `benchsuite run` first)'}"
        )


@app.command()
def leaderboard(
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the newest).")] = None,
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI.")] = DEFAULT_TRACKING_URI,
) -> None:
    """Render an experiment's leaderboard (paired statistics over seeds) in the terminal."""
    from .leaderboard import render_rich

    console.print(render_rich(load_board(tracking_uri, experiment)))


@app.command()
def publish(
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the newest).")] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("leaderboards"),
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI.")] = DEFAULT_TRACKING_URI,
    force: Annotated[bool, typer.Option(help="Publish even if the runs are not comparable.")] = False,
) -> None:
    """Write <experiment>.md, .json and .png (and the index) for publication."""
    from .leaderboard import UnfairComparison
    from .leaderboard import publish as write

    board = load_board(tracking_uri, experiment)
    try:
        paths = write(board, out, force=force)
    except UnfairComparison as exc:
        fail(f"{exc} (use --force to publish anyway; the problems are then listed in the file)")
        return
    for path in paths:
        console.print(f"wrote {path}")


@app.command()
def version() -> None:
    """Print benchsuite's version."""
    console.print(__version__)


def main() -> None:  # pragma: no cover
    app()
