"""Run records -> ``Leaderboard``: rows and cells, statistics, marks, fairness (pure).

The leaderboard is what people paste into papers, so it is built to be honest about noise
and reproducible byte for byte; the statistics and mark rules are ``benchsuite.marks``'s.

Which runs count
  Only the latest attempt (by start time, then run id) of each ``benchsuite.run_key``
  counts; earlier attempts were retries. FAILED and KILLED attempts are counted per cell as
  ``failed`` and RUNNING/SCHEDULED ones as ``running``; neither is dropped silently. ``n``
  is the number of FINISHED runs of a cell with a test accuracy. A cell shows ``n of N``
  when ``n`` is below N, the number of distinct seeds among all runs of its column (for the
  dense reference: of the whole experiment).

Cells left out of the marks
  A cell is not compared and never marked (accuracy and speedup) when any of its seeds ends
  with a *collapsed* layer (a prunable layer with no non-zero weight: the run's
  ``collapsed_layers`` metric and ``benchsuite.collapsed`` tag), when any seed ends *at
  chance* (test accuracy within ``CHANCE_PP`` of 100 / ``num_classes``), or when its mean achieved
  sparsity exceeds the target by more than ``OVERSHOOT_PP`` percentage points (a sparser
  model is not the same comparison). Such a cell gets a numbered footnote that says which
  and why; the other cells of its column are ranked among themselves as above.

Fairness
  If the runs differ in ``preset``, ``train_steps`` (FINISHED runs), data fingerprint
  (``benchsuite.data``) or ``benchsuite.version``, the comparison is unfair: the rich
  table says so, and ``publish`` raises ``UnfairComparison`` unless ``force=True`` (the
  published markdown then lists the problems).
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from benchsuite.boards.leaderboard import (
    CHANCE_PP,
    OVERSHOOT_PP,
    REFERENCE_METHOD,
    Cell,
    Leaderboard,
    Row,
    Throughput,
)
from benchsuite.boards.stats import ALPHA, Comparison, Mark, Stat, rank_column
from benchsuite.core.record import Kinds, Metrics, Params, RunRecord, Tags, to_float

_BOUNDS = {Metrics.TEST_ACCURACY: (0.0, 100.0), Metrics.SPARSITY: (0.0, 1.0)}  # their ranges
_FAILED = {"FAILED", "KILLED"}
_MARKED_METRICS = (Metrics.TEST_ACCURACY, Metrics.THEORETICAL_SPEEDUP, Metrics.MEASURED_SPEEDUP)
_CELL_METRICS = (
    *_MARKED_METRICS,
    Metrics.MEASURED_SPEEDUP_B1,
    Metrics.TRAIN_COST,
    Metrics.SPARSITY,
)


def latest(records: Iterable[RunRecord], key: Any) -> tuple[list[RunRecord], int]:
    """Newest record per key (start time, then run id for determinism); count superseded."""
    best: dict[Any, RunRecord] = {}
    total = 0
    for rec in records:
        total += 1
        k = key(rec)
        cur = best.get(k)
        if cur is None or (rec.start_time, rec.run_id) > (cur.start_time, cur.run_id):
            best[k] = rec
    return list(best.values()), total - len(best)


def _collapsed(rec: RunRecord) -> tuple[str, ...]:
    """The run's collapsed layers by name (tag), or counted only (metric without the tag)."""
    names = tuple(n for n in (rec.tag(Tags.COLLAPSED) or "").split(",") if n)
    count = to_float(rec.metrics.get(Metrics.COLLAPSED_LAYERS)) or 0.0
    if not names and count > 0:
        return (f"{int(count)} unnamed layer(s)",)
    return names


def _at_chance(rec: RunRecord) -> bool:
    """Test accuracy within ``CHANCE_PP`` of 100 / classes (a run that did not learn)."""
    classes = to_float(rec.metrics.get(Metrics.NUM_CLASSES))
    acc = to_float(rec.metrics.get(Metrics.TEST_ACCURACY))
    if not classes or acc is None:
        return False
    return acc <= 100.0 / classes + CHANCE_PP


def _overshoots(sparsity: float, target: float) -> bool:
    # rounded: 0.905 − 0.9 is 0.50000000000000044 pp in floats, which is not an overshoot
    return round((sparsity - target) * 100, 9) > OVERSHOOT_PP


def _row_order(row: Row) -> tuple[int, str, int, str]:
    default_first = 0 if row.variant == "default" else 1
    return (0 if row.reference else 1, row.method, default_first, row.variant)


def _distinct(values: Iterable[Any]) -> list[str]:
    return sorted({str(v) for v in values if v is not None and v != ""})


def _isolated_environments(rows: list[Row]) -> list[str]:
    """Where the board's isolated img/s figures were timed (the header, and the check that
    they were all timed in one place)."""
    return _distinct(
        row.img_per_s.environment
        for row in rows
        if row.img_per_s and row.img_per_s.source == "isolated"
    )


def fmt_num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _utc(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def aggregate(
    runs: Iterable[RunRecord], experiment: str = "", *, alpha: float = ALPHA
) -> Leaderboard:
    """Group runs into rows and cells, compute stats, marks and fairness problems (pure).

    ``experiment`` defaults to the name carried by the records (set by ``load_runs``).
    """
    runs = list(runs)
    experiment = experiment or next((r.experiment for r in runs if r.experiment), "")
    notes: list[str] = []
    trial = _counted(runs, notes)
    rows, targets = _rows(trial, notes)
    ordered = sorted(rows.values(), key=_row_order)
    _set_tuned(ordered, trial)
    tp_latest = _set_throughput(
        ordered, trial, [r for r in runs if r.kind == Kinds.THROUGHPUT], notes
    )
    comparisons = _rank(ordered, targets, alpha)
    problems = _problems(trial, ordered, notes)
    header = {**derive_header(experiment, trial, tp_latest, ordered), **speed_header(trial)}
    return Leaderboard(experiment, targets, ordered, comparisons, problems, notes, header, alpha)


def _counted(runs: list[RunRecord], notes: list[str]) -> list[RunRecord]:
    """The latest attempt of each run key with the params a cell needs, oldest first."""
    trial, superseded = latest((r for r in runs if r.kind == Kinds.RUN), key=lambda r: r.run_key)
    trial.sort(key=lambda r: (r.start_time, r.run_id))
    if superseded:
        notes.append(
            f"{superseded} earlier attempt(s) superseded by a retry of the same run_key "
            "(only the latest attempt counts)"
        )
    bad = [r for r in trial if r.method is None or r.target is None or r.seed is None]
    if bad:
        notes.append(
            f"{len(bad)} run(s) without method/target_sparsity/seed params ignored: "
            + ", ".join(sorted(r.run_id for r in bad))
        )
    return [r for r in trial if r not in bad]


def _rows(
    trial: list[RunRecord], notes: list[str]
) -> tuple[dict[tuple[str, str], Row], list[float]]:
    """Rows by (method, variant), each with its cells; the non-reference targets, sorted."""
    rows: dict[tuple[str, str], Row] = {}
    per_cell: dict[tuple[str, str, float], list[RunRecord]] = defaultdict(list)
    for r in trial:
        assert r.method is not None and r.target is not None
        key = (r.method, r.variant)
        if key not in rows:
            rows[key] = Row(
                r.method, r.variant, reference=r.method == REFERENCE_METHOD, pattern=r.pattern
            )
        target = 0.0 if rows[key].reference else r.target
        per_cell[(r.method, r.variant, target)].append(r)
    targets = sorted({t for (m, _, t) in per_cell if m != REFERENCE_METHOD})
    seeds_all = {r.seed for r in trial}
    seeds_in = {
        t: {r.seed for (m, _, tt), rs in per_cell.items() if tt == t for r in rs} for t in targets
    }
    for (method, variant, target), recs in sorted(per_cell.items()):
        row = rows[(method, variant)]
        n_expected = len(seeds_all) if row.reference else len(seeds_in[target])
        row.cells[target] = _cell(row, target, n_expected, recs, notes)
    return rows, targets


def _cell(
    row: Row, target: float, n_expected: int, recs: list[RunRecord], notes: list[str]
) -> Cell:
    """One cell: its finished seeds' statistics, its failed and running attempts, its flags."""
    cell = Cell(target=target, n_expected=n_expected)
    done: dict[int, RunRecord] = {}
    for r in sorted(recs, key=lambda r: (r.start_time, r.run_id)):
        assert r.seed is not None
        if r.status in _FAILED:
            cell.failed.append(
                {
                    "run_id": r.run_id,
                    "seed": r.seed,
                    "status": r.status,
                    "error": r.tag(Tags.ERROR, ""),
                }
            )
        elif not r.finished:
            cell.running.append(r.run_id)
        elif to_float(r.metrics.get(Metrics.TEST_ACCURACY)) is None:
            cell.failed.append(
                {
                    "run_id": r.run_id,
                    "seed": r.seed,
                    "status": r.status,
                    "error": "finished without test_accuracy",
                }
            )
        else:
            if r.seed in done:
                notes.append(
                    f"{row.label} at {fmt_num(target)}: seed {r.seed} has runs with "
                    f"different run_keys ({done[r.seed].run_id}, {r.run_id}); "
                    "the newest is used"
                )
            done[r.seed] = r
    cell.seeds = tuple(sorted(done))
    cell.run_ids = {s: done[s].run_id for s in cell.seeds}
    for metric in _CELL_METRICS:
        vals = {s: to_float(done[s].metrics.get(metric)) for s in cell.seeds}
        clean = {s: v for s, v in vals.items() if v is not None}
        cell.by_seed[metric] = clean
        if clean:
            cell.stats[metric] = Stat.of((clean[s] for s in sorted(clean)), _BOUNDS.get(metric))
    cell.marks = {m: Mark() for m in _MARKED_METRICS}
    if Metrics.MEASURED_SPEEDUP not in cell.stats:
        reasons = _distinct(done[s].tag(Tags.MEASURED_SPEEDUP_UNAVAILABLE) for s in cell.seeds)
        cell.measured_unavailable = "; ".join(reasons) or None
    if not row.reference:
        cell.collapsed = {s: names for s in cell.seeds if (names := _collapsed(done[s]))}
        cell.at_chance = tuple(s for s in cell.seeds if _at_chance(done[s]))
        spars = cell.stats.get(Metrics.SPARSITY)
        cell.overshoot = spars is not None and _overshoots(spars.mean, target)
    return cell


def _set_tuned(rows: list[Row], trial: list[RunRecord]) -> None:
    tuned_by_row: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in trial:
        if (tuned := r.tag(Tags.TUNED)) is not None:
            tuned_by_row[(r.method or "", r.variant)].add(tuned.lower())
    for row in rows:
        flags = tuned_by_row.get((row.method, row.variant), set())
        row.tuned = None if not flags else "true" in flags


def _set_throughput(
    rows: list[Row], trial: list[RunRecord], tp_all: list[RunRecord], notes: list[str]
) -> list[RunRecord]:
    """Each row's img/s: its isolated record, else its contended one (a timing phase that did
    not have the machine to itself), else the median in-trial figure of its runs.

    Returns the latest throughput record of each (method, variant).
    """
    tp_latest, _ = latest(tp_all, key=lambda r: (r.method, r.variant))
    usable = [
        r for r in tp_all if r.finished and to_float(r.metrics.get(Metrics.IMG_PER_S)) is not None
    ]
    by_row = {
        source: {(r.method, r.variant): r for r in newest}
        for source, newest in (
            ("isolated", latest([r for r in usable if not r.tag(Tags.CONTENDED)], _row_of)[0]),
            ("contended", latest([r for r in usable if r.tag(Tags.CONTENDED)], _row_of)[0]),
        )
    }
    for row in rows:
        key = (row.method, row.variant)
        source = next((s for s, found in by_row.items() if key in found), None)
        if source is not None:
            rec = by_row[source][key]
            rounds = json.loads(rec.tag(Tags.IMG_PER_S_ROUNDS) or "[]")
            row.img_per_s = Throughput(
                float(rec.metrics[Metrics.IMG_PER_S]),
                source,
                (rec.run_id,),
                rec.tag(Tags.DEVICE),
                rec.tag(Tags.THREADS),
                rounds=tuple(float(v) for v in rounds),
            )
            continue
        pairs = sorted(
            (r.run_id, v)
            for r in trial
            if (r.method, r.variant) == (row.method, row.variant)
            and r.finished
            and (v := to_float(r.metrics.get(Metrics.TRAIN_IMG_PER_S))) is not None
        )
        if pairs:
            row.img_per_s = Throughput(
                float(statistics.median(v for _, v in pairs)),
                "in-trial",
                tuple(i for i, _ in pairs),
            )
    labels = {(row.method, row.variant) for row in rows}
    recorded = {k for found in by_row.values() for k in found}
    orphan = sorted(f"{m} ({v})" for (m, v) in recorded if (m, v) not in labels)
    if orphan:
        notes.append("throughput records without trial runs: " + ", ".join(orphan))
    return tp_latest


def _row_of(rec: RunRecord) -> tuple[str | None, str]:
    return (rec.method, rec.variant)


def _rank(rows: list[Row], targets: list[float], alpha: float) -> list[Comparison]:
    """Mark every column (``benchsuite.marks``); the comparisons behind the marks."""
    comparisons: list[Comparison] = []
    candidates = [r for r in rows if not r.reference]
    for target in targets:
        for metric in _MARKED_METRICS:
            entries = []
            for row in candidates:
                cell = row.cells.get(target)
                if cell is not None and cell.ranked and cell.by_seed.get(metric):
                    entries.append((row, cell.by_seed[metric], cell.marks[metric]))
            comparisons += rank_column(entries, metric, target, alpha)
    iso = [
        (row, dict(enumerate(row.img_per_s.rounds)) or {0: row.img_per_s.value}, row.img_per_s.mark)
        for row in candidates
        if row.img_per_s is not None and row.img_per_s.source == "isolated"
    ]
    return comparisons + rank_column(iso, Metrics.IMG_PER_S, None, alpha)


def _problems(trial: list[RunRecord], rows: list[Row], notes: list[str]) -> list[str]:
    """What makes the comparison unfair (see Fairness above)."""
    problems: list[str] = []
    checks = [
        ("preset", [r.params.get(Params.PRESET) for r in trial]),
        (
            "train_steps",
            [
                fmt_num(v)
                for r in trial
                if r.finished and (v := to_float(r.metrics.get(Metrics.TRAIN_STEPS))) is not None
            ],
        ),
        ("data fingerprint (benchsuite.data)", [r.tag(Tags.DATA) for r in trial]),
        ("benchsuite.version", [r.tag(Tags.VERSION) for r in trial]),
    ]
    for name, values in checks:
        present = [str(v) for v in values if v not in (None, "")]
        distinct = sorted(set(present))
        if len(distinct) > 1:
            counts = ", ".join(f"{v} ({present.count(v)} runs)" for v in distinct)
            problems.append(f"runs differ in {name}: {counts}")
    iso_env = _isolated_environments(rows)
    if len(iso_env) > 1:
        notes.append("isolated img/s measured on different devices: " + "; ".join(iso_env))
    return problems


# Options that change where results go or how the grid is scheduled, never a run's numbers
# (the run key holds everything that does): a published board's Reproduce lines leave them out,
# so they read as the command a user types, not the paths of the machine that ran them.
SCHEDULING_OPTIONS = {
    "--tracking-uri": 1,
    "--cache-dir": 1,
    "--max-concurrent": 1,
    "--retries": 1,
    "--address": 1,
    "--no-throughput": 0,
    "--throughput": 0,
    "--in-process": 0,
}


def reproducing(command: str) -> str:
    """``command`` without its scheduling and storage options (``SCHEDULING_OPTIONS``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    kept, skip = [], 0
    for word in words:
        if skip:
            skip -= 1
            continue
        name = word.split("=", 1)[0]
        if name in SCHEDULING_OPTIONS:
            skip = 0 if "=" in word else SCHEDULING_OPTIONS[name]
            continue
        kept.append(word)
    return shlex.join(kept)


def derive_header(
    experiment: str, trial: list[RunRecord], tp: list[RunRecord], rows: list[Row]
) -> dict[str, str]:
    """Everything the published header says, taken from the runs themselves (never 'now')."""

    def joined(values: Iterable[Any]) -> str:
        return ", ".join(_distinct(values)) or "unknown"

    seeds = sorted({r.seed for r in trial if r.seed is not None})
    finished = [r for r in trial if r.finished]
    commands: list[str] = []
    for r in trial:  # trial is sorted by start time: the first command first
        cmd = reproducing(r.tag(Tags.COMMAND) or "")
        if cmd and cmd not in commands:
            commands.append(cmd)
    times = [r.time for r in trial + tp if r.time]
    tuned = [row for row in rows if row.tuned]
    untuned = [row for row in rows if row.tuned is False]
    if tuned and not untuned:
        tuned_s = "yes (all rows tuned on the validation split)"
    elif tuned:
        tuned_s = "mixed: tuned rows: " + ", ".join(r.label for r in tuned)
    elif untuned:
        tuned_s = "no (default hyperparameters, untuned)"
    else:
        tuned_s = "unknown"
    iso = _isolated_environments(rows)
    return {
        "experiment": experiment,
        "dataset": joined(r.params.get(Params.DATASET) for r in trial),
        "model": joined(r.params.get(Params.MODEL) for r in trial),
        "preset": joined(r.params.get(Params.PRESET) for r in trial),
        "epochs": joined(r.params.get(Params.EPOCHS) for r in trial),
        "train_steps": joined(
            fmt_num(v)
            for r in finished
            if (v := to_float(r.metrics.get(Metrics.TRAIN_STEPS))) is not None
        ),
        "batch_size": joined(r.params.get(Params.BATCH_SIZE) for r in trial),
        "seeds": f"{len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "none",
        "device": joined(r.tag(Tags.DEVICE) for r in trial),
        "throughput_device": "; ".join(iso) or "none (in-trial figures only)",
        "version": joined(r.tag(Tags.VERSION) for r in trial),
        "newest_run": _utc(max(times)) if times else "unknown",
        "command": "\n".join(commands) or "unknown",
        "tuned": tuned_s,
    }


def speed_header(trial: list[RunRecord]) -> dict[str, str]:
    """The leaderboard's sparsity patterns and what its measured speedups timed."""
    latency = _distinct(
        f"batch 1 and {r.tag(Tags.LATENCY_BATCH)}, {r.tag(Tags.LATENCY_DTYPE)}"
        for r in trial
        if r.finished and r.tag(Tags.LATENCY_BATCH)
    )
    return {
        "patterns": ", ".join(_distinct(r.pattern for r in trial)) or "unstructured",
        "latency": "; ".join(latency) or "not measured",
    }
