"""The options several ``benchsuite`` commands share, declared once (no torch imported)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
