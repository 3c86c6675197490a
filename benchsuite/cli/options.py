"""The options several ``benchsuite`` commands share, declared once (no torch imported)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from benchsuite.store.tracking import DEFAULT_TRACKING_URI

DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda where trials get GPUs, else cpu)."
ADDRESS_HELP = (
    "Join a Ray cluster: auto, HOST:PORT or ray://HOST:10001 "
    "(default: a local Ray instance for this command)."
)
CPUS_HELP = "CPUs per trial (fractions allowed); torch uses max(1, int(N)) threads."
GPUS_HELP = "GPUs per trial; fractions share a GPU (default: 1 where the cluster has GPUs, else 0)."

MethodsOption = Annotated[
    str,
    typer.Option(
        help="Comma list of registered methods, 'all', or shell patterns such as 'imp*' "
        "(patterns and 'all' select budget-equal methods only)."
    ),
]
SparsityOption = Annotated[str, typer.Option(help="Target sparsities in (0, 1), comma separated.")]
PresetOption = Annotated[
    str,
    typer.Option(help="Benchmark preset (see `benchsuite presets`) or a PATH.toml of your own."),
]
DatasetOption = Annotated[str | None, typer.Option(help="Override the preset's dataset.")]
ModelOption = Annotated[str | None, typer.Option(help="Override the preset's model.")]
EpochsOption = Annotated[int | None, typer.Option(help="Override the budget (epochs) of all runs.")]
DataDirOption = Annotated[str | None, typer.Option(help="Directory of the dataset's files.")]
TrackingOption = Annotated[str, typer.Option(help="MLflow tracking URI.")]
DeviceOption = Annotated[str | None, typer.Option(help=DEVICE_HELP)]
CacheDirOption = Annotated[Path, typer.Option(help="Where shared dense-phase checkpoints go.")]
AddressOption = Annotated[str | None, typer.Option(help=ADDRESS_HELP)]
CpusOption = Annotated[float, typer.Option(help=CPUS_HELP)]
GpusOption = Annotated[float | None, typer.Option(help=GPUS_HELP)]
MaxConcurrentOption = Annotated[
    int | None, typer.Option(help="At most N trials at once (default: as resources allow).")
]
RetriesOption = Annotated[int, typer.Option(help="Rerun a failed trial up to N more times.")]
IN_PROCESS_HELP = "No Ray: one run after another in this process (debugging, notebooks)."
InProcessOption = Annotated[bool, typer.Option("--in-process", help=IN_PROCESS_HELP)]
TunedConfigsOption = Annotated[
    Path | None,
    typer.Option(
        help="A file of tuned configurations (as saved by `benchsuite tune`, or published beside "
        "a tuned board); default .benchsuite/tuned/<preset>-<epochs>ep.json."
    ),
]


@dataclass(frozen=True)
class GridOptions:
    """The options of every command that trains a grid (run, tune, study): what to train on
    (preset, overrides, data) and where and how (store, device, cluster, resources)."""

    preset: PresetOption = "digits"
    dataset: DatasetOption = None
    model: ModelOption = None
    epochs: EpochsOption = None
    data_dir: DataDirOption = None
    tracking_uri: TrackingOption = DEFAULT_TRACKING_URI
    device: DeviceOption = None
    cache_dir: CacheDirOption = Path(".benchsuite/cache")
    address: AddressOption = None
    cpus_per_trial: CpusOption = 1.0
    gpus_per_trial: GpusOption = None
    max_concurrent: MaxConcurrentOption = None
    retries: RetriesOption = 0


def grid_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with ``GridOptions``'s fields as its typer options, handed to it as one
    ``opts: GridOptions`` (declared once here instead of in every command's signature)."""
    own = inspect.signature(command, eval_str=True)
    hints = typing.get_type_hints(GridOptions, include_extras=True)
    shared = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                          annotation=hints[f.name])
        for f in dataclasses.fields(GridOptions)
    ]  # fmt: skip
    params = [p for p in own.parameters.values() if p.name != "opts"]
    names = {f.name for f in dataclasses.fields(GridOptions)}

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        opts = GridOptions(**{k: kwargs.pop(k) for k in names})
        return command(opts=opts, **kwargs)

    wrapper.__signature__ = own.replace(parameters=[*params, *shared])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        p.name: p.annotation for p in wrapper.__signature__.parameters.values()
    }  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # typer reads the new signature, not the command's
    return wrapper
