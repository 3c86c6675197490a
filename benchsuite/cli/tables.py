"""The command line's tables: registered methods, shipped presets, the best tuned trials."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.table import Table


def methods_table(reg: Any) -> Table:
    """Every registered method, its package, paper, hyperparameters, defaults and sources."""
    from benchsuite.core.method import hparam_fields

    table = Table(title="Registered pruning methods", show_lines=True)
    for col in ("method", "package", "paper", "hyperparameters (default — source)"):
        table.add_column(col, overflow="fold")
    for name, cls in sorted(reg.entries.items()):
        lines = []
        for f in hparam_fields(cls.Hparams):
            space = ""
            if f.metadata.get("choices"):
                space = f" ∈ {{{', '.join(map(str, f.metadata['choices']))}}}"
            elif f.metadata.get("low") is not None:
                space = f" ∈ [{f.metadata['low']}, {f.metadata['high']}]" + (
                    " log" if f.metadata.get("log") else ""
                )
            lines.append(f"{f.name} = {f.default!r}{space} — {f.metadata.get('source', '?')}")
        paper = cls.source + (
            "" if cls.targets_sparsity else "\n(sparsity emerges from hyperparameters)"
        )
        if not cls.one_per_seed:
            paper += "\npatterns: " + ", ".join(cls.patterns)
        table.add_row(name, reg.sources[name], paper, "\n".join(lines) or "—")
    return table


def presets_table() -> Table:
    """Dataset, model, budget, optimizer and schedule of each shipped preset."""
    from benchsuite.presets import list_presets, load_preset

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
    return table


def best_table(best: dict[str, dict[str, dict[str, Any]]]) -> Table:
    """The chosen configuration per method and target (``search.select_best``) beside the
    defaults' validation accuracy."""
    table = Table(title="Tuned configurations (mean validation accuracy over the tuning seeds)")
    for col in (
        "method",
        "sparsity",
        "trials",
        "finished",
        "defaults",
        "chosen",
        "hyperparameters",
    ):
        table.add_column(col, overflow="fold")

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}%"

    for method, per_target in best.items():
        for target, entry in per_target.items():
            chosen = entry.get("chosen")
            values = ", ".join(f"{k}={v}" for k, v in sorted((entry.get("hparams") or {}).items()))
            table.add_row(
                method,
                target,
                str(entry["trials"]),
                str(entry["finished"]),
                pct(entry.get("default_val_accuracy")),
                pct(entry.get("val_accuracy")),
                "—" if chosen is None else ("the defaults" if chosen == 0 else values),
            )
    return table
