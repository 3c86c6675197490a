"""MLflow runs -> aggregated leaderboard -> rich table, markdown, JSON and a plot.

The leaderboard is what people paste into papers, so it is built to be honest about noise
and reproducible byte for byte. Reading MLflow (``load_runs``) is separate from the pure
``aggregate`` step, so all the statistics are testable on hand-made ``RunRecord`` objects.

Layout (like Table 2 of the BIMP paper): one row per method variant, ``dense`` first as the
reference row (shown in every column group, never ranked). For each target sparsity a column
group: test accuracy ``mean ± std (n)``, its 95 % interval, theoretical speedup (mean),
train cost (``train_cost``, × dense, mean) and achieved sparsity (mean, %); plus one training
img/s column.

Which runs count
  Only the latest attempt (by start time, then run id) of each ``benchsuite.run_key``
  counts; earlier attempts were retries. FAILED and KILLED attempts are counted per cell as
  ``failed`` and RUNNING/SCHEDULED ones as ``running``; neither is dropped silently. ``n``
  is the number of FINISHED runs of a cell with a test accuracy. A cell shows ``n of N``
  when ``n`` is below N, the number of distinct seeds among all runs of its column (for the
  dense reference: of the whole experiment).

Statistics
  ``std`` is the sample standard deviation (ddof = 1). The 95 % interval of a mean is
  ``mean ± t(0.975, n-1) · std / √n`` (Student t), clipped to the metric's range (accuracy
  [0, 100]); with n < 2 there is neither.

Marks (accuracy and speedup columns; higher is better)
  Seeds are paired across methods (same seed: same initial weights and batches), so
  neighbours are compared with a two-sided paired t-test (``scipy.stats.ttest_rel``) over
  the seeds both cells have, at α = 0.05. Within one column:

  1. The candidates are the non-reference rows with n ≥ 1 whose cell is not left out (see
     below); they are sorted by mean, best first (means rounded to 12 significant digits;
     equal means keep row order, which is alphabetical, and neither is ranked above the
     other: see *tie*).
  2. Each candidate is compared with the next one in that order. The pair is
     *separated* if the means differ and the test gives p < α; *tie* if the means are
     equal (relative difference ≤ 1e-9), whatever the seeds; *untested* if they share
     fewer than 2 seeds; otherwise *noise*. Paired differences that are all equal have no
     spread: p = 0 if they are non-zero (separated), a tie if they are zero.
  3. The candidate at position k ∈ {1, 2, 3} gets rank mark k (bold, superscript k) only if
     it is separated from its upper neighbour (if any) and from its lower neighbour (if
     any), and the column has at least two candidates.
  4. An unmarked candidate at position 1-3 whose link to a neighbour is *noise* or *tie*
     is shown ``≈`` (within noise of its neighbour). Candidates whose only unseparated
     links are *untested* (fewer than 2 shared seeds) are left unmarked.

Marks (img/s column)
  An isolated throughput figure is the mean over interleaved timing rounds
  (``benchsuite.throughput``); round r of every variant ran in the same spell of the
  machine, so neighbours are compared by the same two-sided paired t-test, over the rounds
  instead of the seeds. A record without per-round figures (older records) falls back to a
  stated relative threshold: separated when the faster is more than 5 % faster
  (``IMG_S_REL_THRESHOLD``). Only isolated measurements are ranked; a row without one
  shows the median in-trial ``train_img_per_s`` of its runs marked ``†`` (measured under
  contention) and is never marked. Achieved sparsity is never marked.

Cells left out of the marks
  A cell is not compared and never marked (accuracy and speedup) when any of its seeds ends
  with a *collapsed* layer (a prunable layer with no non-zero weight: the run's
  ``collapsed_layers`` metric and ``benchsuite.collapsed`` tag), or when its mean achieved
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

import dataclasses
import datetime as _dt
import json
import math
import re
import statistics
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

if TYPE_CHECKING:  # heavy imports stay lazy: the CLI and the tests import this module often
    import rich.table
    from matplotlib.figure import Figure

__all__ = [
    "ALPHA",
    "DROP_FLOOR_PP",
    "IMG_S_REL_THRESHOLD",
    "OVERSHOOT_PP",
    "Cell",
    "Comparison",
    "Leaderboard",
    "Mark",
    "Row",
    "RunRecord",
    "Stat",
    "Throughput",
    "UnfairComparison",
    "aggregate",
    "default_experiment",
    "experiments",
    "leaderboard_for",
    "load_runs",
    "paired_test",
    "plot",
    "publish",
    "render_rich",
    "to_json",
    "to_markdown",
]

ALPHA = 0.05
IMG_S_REL_THRESHOLD = 0.05
# chosen here: half a point of sparsity changes accuracy and speedup measurably at 90-98 %
# (docs/leaderboards.md); a cell beyond it is a different comparison, not a better method
OVERSHOOT_PP = 0.5
FLOOR_METHOD = "oneshot"  # dense training + the harness's projection: the floor row
REFERENCE_METHOD = "dense"
JSON_SCHEMA = "benchsuite.leaderboard/1"
_TIE_REL = 1e-9
_FAILED = {"FAILED", "KILLED"}
_SUPERSCRIPT = {1: "¹", 2: "²", 3: "³"}
_INDEX_START = "<!-- benchsuite:index:start -->"
_INDEX_END = "<!-- benchsuite:index:end -->"
_MARKED_METRICS = ("test_accuracy", "theoretical_speedup")
_INDEX_SCHEMAS = (JSON_SCHEMA, "benchsuite.study/1")  # boards listed in the index (study.py)


class UnfairComparison(Exception):
    """The runs of one table were not produced under the same protocol."""


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain data, so aggregation needs no MLflow."""

    run_id: str
    status: str = "FINISHED"
    start_time: int = 0  # ms since the epoch, as MLflow stores it
    end_time: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    experiment: str = ""  # the MLflow experiment's name, when read from MLflow

    @property
    def kind(self) -> str:
        return self.tags.get("benchsuite.kind", "run")

    @property
    def run_key(self) -> str:
        return self.tags.get("benchsuite.run_key") or self.run_id

    @property
    def method(self) -> str | None:
        return self.params.get("method")

    @property
    def variant(self) -> str:
        return self.params.get("variant") or "default"

    @property
    def target(self) -> float | None:
        return _to_float(self.params.get("target_sparsity"))

    @property
    def seed(self) -> int | None:
        value = _to_float(self.params.get("seed"))
        return None if value is None else int(value)

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @property
    def time(self) -> int:
        return self.end_time if self.end_time is not None else self.start_time

    @classmethod
    def from_mlflow(cls, run: Any, experiment: str = "") -> RunRecord:
        info, data = run.info, run.data
        return cls(
            run_id=info.run_id,
            status=str(info.status),
            start_time=int(info.start_time or 0),
            end_time=None if info.end_time is None else int(info.end_time),
            params=dict(data.params),
            metrics={k: float(v) for k, v in data.metrics.items()},
            tags={k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
            experiment=experiment,
        )


# ----------------------------------------------------------------------------- results


_BOUNDS = {"test_accuracy": (0.0, 100.0), "sparsity": (0.0, 1.0)}  # the metrics' ranges


@dataclass(frozen=True)
class Stat:
    """Mean, sample std and 95 % t-interval of one metric over the seeds of a cell."""

    values: tuple[float, ...]
    mean: float
    std: float | None
    ci95: tuple[float, float] | None

    @property
    def n(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, values: Iterable[float], bounds: tuple[float, float] | None = None) -> Stat:
        """``bounds``: the metric's range (accuracy [0, 100]); the interval is clipped to it,
        since with few seeds mean ± t·std/√n can reach past what the metric can be."""
        vals = tuple(float(v) for v in values)
        mean = float(np.mean(vals))
        if len(vals) < 2:
            return cls(vals, mean, None, None)
        std = float(np.std(vals, ddof=1))
        half = float(stats.t.ppf(0.975, len(vals) - 1)) * std / math.sqrt(len(vals))
        low, high = mean - half, mean + half
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
        return cls(vals, mean, std, (low, high))


@dataclass
class Mark:
    """rank 1-3 if beyond noise; ``within_noise`` for an unranked top-3 next to noise/tie."""

    rank: int | None = None
    within_noise: bool = False

    @property
    def symbol(self) -> str:
        if self.rank is not None:
            return _SUPERSCRIPT[self.rank]
        return "≈" if self.within_noise else ""


@dataclass(frozen=True)
class Comparison:
    """One neighbour comparison in a sorted column (the evidence behind the marks)."""

    metric: str
    target: float | None
    upper: str
    lower: str
    shared_seeds: int
    diff: float  # mean paired difference (upper - lower); relative difference for img/s
    t: float | None
    p: float | None
    status: str  # separated | noise | tie | untested


@dataclass
class Cell:
    target: float
    n_expected: int
    seeds: tuple[int, ...] = ()
    run_ids: dict[int, str] = field(default_factory=dict)  # seed -> run id of finished runs
    failed: list[dict[str, Any]] = field(default_factory=list)  # run_id, seed, status, error
    running: list[str] = field(default_factory=list)
    by_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> value
    stats: dict[str, Stat] = field(default_factory=dict)  # test_accuracy, speedup, sparsity
    marks: dict[str, Mark] = field(default_factory=dict)
    collapsed: dict[int, tuple[str, ...]] = field(default_factory=dict)  # seed -> empty layers
    overshoot: bool = False  # mean achieved sparsity > target + OVERSHOOT_PP

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def ranked(self) -> bool:
        """Compared and marked with the others: no collapsed layer, no sparsity overshoot."""
        return not (self.collapsed or self.overshoot)

    def flags(self) -> list[str]:
        """Why the cell is left out of the marks (the text of its footnote)."""
        out = []
        if self.collapsed:
            names = list(dict.fromkeys(n for s in sorted(self.collapsed)
                                       for n in self.collapsed[s]))
            out.append(f"layer collapse: {', '.join(names)} "
                       f"({len(self.collapsed)} of {self.n} seeds)")
        if self.overshoot:
            mean = self.stats["sparsity"].mean
            out.append(f"sparsity {mean * 100:.2f} % > target {self.target * 100:.4g} % + "
                       f"{OVERSHOOT_PP:g} pp: not the same comparison")
        return out

    @property
    def short(self) -> bool:
        return self.n < self.n_expected


@dataclass
class Throughput:
    value: float
    source: str  # "isolated" | "in-trial"
    run_ids: tuple[str, ...]
    device: str | None = None
    threads: str | None = None
    mark: Mark = field(default_factory=Mark)
    rounds: tuple[float, ...] = ()  # per-round figures of an interleaved measurement


@dataclass
class Row:
    method: str
    variant: str
    reference: bool
    cells: dict[float, Cell] = field(default_factory=dict)
    img_per_s: Throughput | None = None
    tuned: bool | None = None

    @property
    def label(self) -> str:
        return self.method if self.variant == "default" else f"{self.method} ({self.variant})"

    def cell(self, target: float) -> Cell | None:
        """The cell shown in column ``target``: the reference row shows its one cell everywhere."""
        if self.reference:
            return next(iter(self.cells.values()), None)
        return self.cells.get(target)


@dataclass
class Leaderboard:
    experiment: str
    targets: list[float]
    rows: list[Row]
    comparisons: list[Comparison]
    problems: list[str]  # fairness problems: publish refuses unless forced
    notes: list[str]  # worth saying, not unfair
    header: dict[str, str]
    alpha: float = ALPHA

    @property
    def fair(self) -> bool:
        return not self.problems

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)


# ----------------------------------------------------------------------------- MLflow


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _all_runs(client: Any, experiment_ids: list[str]) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def experiments(tracking_uri: str) -> list[str]:
    """Names of the active experiments that hold at least one run, sorted."""
    client = _client(tracking_uri)
    names: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        for exp in page:
            if client.search_runs([exp.experiment_id], max_results=1):
                names.append(exp.name)
        token = page.token
        if not token:
            return sorted(names)


def default_experiment(tracking_uri: str) -> str | None:
    """The experiment whose newest run started last: what the user most likely just ran."""
    client = _client(tracking_uri)
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            break
    if not ids:
        return None
    newest = client.search_runs(ids, max_results=1, order_by=["attributes.start_time DESC"])
    if not newest:
        return None
    return client.get_experiment(newest[0].info.experiment_id).name


def load_runs(tracking_uri: str, experiment: str) -> list[RunRecord]:
    """All runs of one experiment (trial runs and throughput records), every attempt.

    A finished run recorded before ``collapsed_layers`` existed gets it from its
    ``layer_sparsity.json`` artifact, so a board regenerated from resumed runs still shows
    its layer collapses.
    """
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise KeyError(f"no MLflow experiment named {experiment!r} at {tracking_uri}")
    records = [RunRecord.from_mlflow(r, experiment)
               for r in _all_runs(client, [exp.experiment_id])]
    return [_with_collapse(client, r) for r in records]


def _with_collapse(client: Any, rec: RunRecord) -> RunRecord:
    if (rec.kind != "run" or not rec.finished or "collapsed_layers" in rec.metrics
            or "benchsuite.collapsed" in rec.tags):
        return rec
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(rec.run_id, "layer_sparsity.json", tmp)
            densities = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - no artifact (or unreadable): nothing to add
        return rec
    names = [n for n, v in densities.items() if float(v) >= 1.0]  # the artifact's order
    return dataclasses.replace(
        rec, metrics={**rec.metrics, "collapsed_layers": float(len(names))},
        tags={**rec.tags, "benchsuite.collapsed": ",".join(names)})


def leaderboard_for(tracking_uri: str, experiment: str | None = None) -> Leaderboard:
    """Load and aggregate one experiment (the most recent one if none is named)."""
    name = experiment or default_experiment(tracking_uri)
    if name is None:
        raise KeyError(f"no experiment with runs at {tracking_uri}")
    return aggregate(load_runs(tracking_uri, name), experiment=name)


# ----------------------------------------------------------------------------- aggregation


def _to_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _latest(records: Iterable[RunRecord], key: Any) -> tuple[list[RunRecord], int]:
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
    names = tuple(n for n in rec.tags.get("benchsuite.collapsed", "").split(",") if n)
    count = _to_float(rec.metrics.get("collapsed_layers")) or 0.0
    if not names and count > 0:
        return (f"{int(count)} unnamed layer(s)",)
    return names


def _overshoots(sparsity: float, target: float) -> bool:
    # rounded: 0.905 − 0.9 is 0.50000000000000044 pp in floats, which is not an overshoot
    return round((sparsity - target) * 100, 9) > OVERSHOOT_PP


def _row_order(row: Row) -> tuple[int, str, int, str]:
    default_first = 0 if row.variant == "default" else 1
    return (0 if row.reference else 1, row.method, default_first, row.variant)


def _equal(a: float, b: float) -> bool:
    return abs(a - b) <= _TIE_REL * max(abs(a), abs(b), 1.0)


def paired_test(
    upper: dict[int, float], lower: dict[int, float], alpha: float = ALPHA
) -> tuple[int, float, float | None, float | None, str]:
    """Two-sided paired t-test over shared seeds: (shared, mean diff, t, p, status)."""
    seeds = sorted(set(upper) & set(lower))
    a = np.array([upper[s] for s in seeds], dtype=float)
    b = np.array([lower[s] for s in seeds], dtype=float)
    mean_upper = float(np.mean(list(upper.values())))
    mean_lower = float(np.mean(list(lower.values())))
    diff = float(np.mean(a - b)) if seeds else mean_upper - mean_lower
    if _equal(mean_upper, mean_lower):
        return len(seeds), diff, None, None, "tie"
    if len(seeds) < 2:
        return len(seeds), diff, None, None, "untested"
    d = a - b
    if float(np.ptp(d)) <= _TIE_REL * max(float(np.max(np.abs(d))), 1.0):
        # No spread in the differences: the t statistic is infinite (or undefined at zero).
        if _equal(float(d[0]), 0.0):
            return len(seeds), diff, None, None, "tie"
        return len(seeds), diff, math.copysign(math.inf, float(d[0])), 0.0, "separated"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(a, b)
    t, p = float(res.statistic), float(res.pvalue)
    return len(seeds), diff, t, p, ("separated" if p < alpha else "noise")


def _assign_marks(order: list[Mark], links: list[str]) -> None:
    """Rules 3-4 of the module docstring; ``links[i]`` joins positions i and i+1."""
    if len(order) < 2:
        return
    for k in range(min(3, len(order))):
        up = links[k - 1] if k > 0 else None
        down = links[k] if k < len(links) else None
        near = [x for x in (up, down) if x is not None]
        if all(x == "separated" for x in near):
            order[k].rank = k + 1
        elif any(x in ("noise", "tie") for x in near):
            order[k].within_noise = True


def _rank_column(
    entries: list[tuple[Row, dict[int, float], Mark]], metric: str, target: float | None,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Sort one column's candidates, compare neighbours, set their marks."""
    def mean(e: tuple[Row, dict[int, float], Mark]) -> float:
        return float(np.mean(list(e[1].values())))

    # Rounded key (12 significant digits): float noise in a mean must not reorder a tie;
    # the sort is stable, so equal means keep row order.
    ranked = sorted(entries, key=lambda e: -float(f"{mean(e):.12g}"))
    comps: list[Comparison] = []
    links: list[str] = []
    for (row_u, vals_u, _), (row_l, vals_l, _) in zip(ranked, ranked[1:], strict=False):
        if metric == "img_per_s" and min(len(vals_u), len(vals_l)) < 2:  # no rounds: 5 % rule
            hi, lo = mean((row_u, vals_u, Mark())), mean((row_l, vals_l, Mark()))
            rel = hi / lo - 1.0 if lo > 0 else math.inf
            status = "tie" if _equal(hi, lo) else (
                "separated" if rel > IMG_S_REL_THRESHOLD else "noise")
            comps.append(Comparison(metric, target, row_u.label, row_l.label, 0, rel, None, None,
                                    status))
        else:
            shared, diff, t, p, status = paired_test(vals_u, vals_l, alpha)
            comps.append(Comparison(metric, target, row_u.label, row_l.label, shared, diff, t, p,
                                    status))
        links.append(status)
    _assign_marks([e[2] for e in ranked], links)
    return comps


def _distinct(values: Iterable[Any]) -> list[str]:
    return sorted({str(v) for v in values if v is not None and v != ""})


def _fmt_num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _utc(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def aggregate(runs: Iterable[RunRecord], experiment: str = "", *, alpha: float = ALPHA
              ) -> Leaderboard:
    """Group runs into rows and cells, compute stats, marks and fairness problems (pure).

    ``experiment`` defaults to the name carried by the records (set by ``load_runs``).
    """
    runs = list(runs)
    experiment = experiment or next((r.experiment for r in runs if r.experiment), "")
    notes: list[str] = []
    trial_all = [r for r in runs if r.kind == "run"]
    tp_all = [r for r in runs if r.kind == "throughput"]
    trial, superseded = _latest(trial_all, key=lambda r: r.run_key)
    trial.sort(key=lambda r: (r.start_time, r.run_id))
    if superseded:
        notes.append(f"{superseded} earlier attempt(s) superseded by a retry of the same run_key "
                     "(only the latest attempt counts)")
    bad = [r for r in trial if r.method is None or r.target is None or r.seed is None]
    if bad:
        notes.append(f"{len(bad)} run(s) without method/target_sparsity/seed params ignored: "
                     + ", ".join(sorted(r.run_id for r in bad)))
    trial = [r for r in trial if r not in bad]

    # ---- rows and cells
    rows: dict[tuple[str, str], Row] = {}
    per_cell: dict[tuple[str, str, float], list[RunRecord]] = defaultdict(list)
    for r in trial:
        assert r.method is not None and r.target is not None
        key = (r.method, r.variant)
        if key not in rows:
            rows[key] = Row(r.method, r.variant, reference=r.method == REFERENCE_METHOD)
        target = 0.0 if rows[key].reference else r.target
        per_cell[(r.method, r.variant, target)].append(r)
    targets = sorted({t for (m, _, t) in per_cell if m != REFERENCE_METHOD})
    seeds_all = {r.seed for r in trial}
    seeds_in = {t: {r.seed for (m, _, tt), rs in per_cell.items() if tt == t for r in rs}
                for t in targets}

    for (method, variant, target), recs in sorted(per_cell.items()):
        row = rows[(method, variant)]
        n_expected = len(seeds_all) if row.reference else len(seeds_in[target])
        cell = Cell(target=target, n_expected=n_expected)
        recs = sorted(recs, key=lambda r: (r.start_time, r.run_id))
        done: dict[int, RunRecord] = {}
        for r in recs:
            assert r.seed is not None
            if r.status in _FAILED:
                cell.failed.append({"run_id": r.run_id, "seed": r.seed, "status": r.status,
                                    "error": r.tags.get("benchsuite.error", "")})
            elif not r.finished:
                cell.running.append(r.run_id)
            elif _to_float(r.metrics.get("test_accuracy")) is None:
                cell.failed.append({"run_id": r.run_id, "seed": r.seed, "status": r.status,
                                    "error": "finished without test_accuracy"})
            else:
                if r.seed in done:
                    notes.append(f"{row.label} at {_fmt_num(target)}: seed {r.seed} has runs with "
                                 f"different run_keys ({done[r.seed].run_id}, {r.run_id}); "
                                 "the newest is used")
                done[r.seed] = r
        cell.seeds = tuple(sorted(done))
        cell.run_ids = {s: done[s].run_id for s in cell.seeds}
        for metric in ("test_accuracy", "theoretical_speedup", "train_cost", "sparsity"):
            vals = {s: _to_float(done[s].metrics.get(metric)) for s in cell.seeds}
            clean = {s: v for s, v in vals.items() if v is not None}
            cell.by_seed[metric] = clean
            if clean:
                cell.stats[metric] = Stat.of((clean[s] for s in sorted(clean)),
                                             _BOUNDS.get(metric))  # fmt: skip
        cell.marks = {m: Mark() for m in _MARKED_METRICS}
        if not row.reference:
            cell.collapsed = {s: names for s in cell.seeds if (names := _collapsed(done[s]))}
            spars = cell.stats.get("sparsity")
            cell.overshoot = spars is not None and _overshoots(spars.mean, target)
        row.cells[target] = cell

    ordered = sorted(rows.values(), key=_row_order)

    # ---- tuned
    tuned_by_row: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in trial:
        if "benchsuite.tuned" in r.tags:
            tuned_by_row[(r.method or "", r.variant)].add(r.tags["benchsuite.tuned"].lower())
    for row in ordered:
        flags = tuned_by_row.get((row.method, row.variant), set())
        row.tuned = None if not flags else "true" in flags

    # ---- throughput: isolated record per (method, variant), else in-trial median
    tp_latest, _ = _latest(tp_all, key=lambda r: (r.method, r.variant))
    tp_by_row = {(r.method, r.variant): r for r in tp_latest
                 if r.finished and _to_float(r.metrics.get("img_per_s")) is not None}
    for row in ordered:
        rec = tp_by_row.get((row.method, row.variant))
        if rec is not None:
            rounds = json.loads(rec.tags.get("benchsuite.img_per_s_rounds") or "[]")
            row.img_per_s = Throughput(float(rec.metrics["img_per_s"]), "isolated", (rec.run_id,),
                                       rec.tags.get("benchsuite.device"),
                                       rec.tags.get("benchsuite.threads"),
                                       rounds=tuple(float(v) for v in rounds))
            continue
        pairs = sorted(
            (r.run_id, v) for r in trial
            if (r.method, r.variant) == (row.method, row.variant) and r.finished
            and (v := _to_float(r.metrics.get("train_img_per_s"))) is not None
        )
        if pairs:
            row.img_per_s = Throughput(float(statistics.median(v for _, v in pairs)), "in-trial",
                                       tuple(i for i, _ in pairs))
    orphan = sorted(f"{m} ({v})" for (m, v) in tp_by_row if (m, v) not in rows)
    if orphan:
        notes.append("throughput records without trial runs: " + ", ".join(orphan))

    # ---- marks
    comparisons: list[Comparison] = []
    candidates = [r for r in ordered if not r.reference]
    for target in targets:
        for metric in _MARKED_METRICS:
            entries = []
            for row in candidates:
                cell = row.cells.get(target)
                if cell is not None and cell.ranked and cell.by_seed.get(metric):
                    entries.append((row, cell.by_seed[metric], cell.marks[metric]))
            comparisons += _rank_column(entries, metric, target, alpha)
    iso = [(row, dict(enumerate(row.img_per_s.rounds)) or {0: row.img_per_s.value},
            row.img_per_s.mark) for row in candidates
           if row.img_per_s is not None and row.img_per_s.source == "isolated"]
    comparisons += _rank_column(iso, "img_per_s", None, alpha)

    # ---- fairness
    problems: list[str] = []
    checks = [
        ("preset", [r.params.get("preset") for r in trial]),
        ("train_steps", [_fmt_num(v) for r in trial if r.finished
                         and (v := _to_float(r.metrics.get("train_steps"))) is not None]),
        ("data fingerprint (benchsuite.data)", [r.tags.get("benchsuite.data") for r in trial]),
        ("benchsuite.version", [r.tags.get("benchsuite.version") for r in trial]),
    ]
    for name, values in checks:
        present = [str(v) for v in values if v not in (None, "")]
        distinct = sorted(set(present))
        if len(distinct) > 1:
            counts = ", ".join(f"{v} ({present.count(v)} runs)" for v in distinct)
            problems.append(f"runs differ in {name}: {counts}")
    iso_env = _distinct(f"{row.img_per_s.device} / {row.img_per_s.threads} threads"
                        for row in ordered if row.img_per_s and row.img_per_s.source == "isolated")
    if len(iso_env) > 1:
        notes.append("isolated img/s measured on different devices: " + "; ".join(iso_env))

    header = _derive_header(experiment, trial, tp_latest, ordered)
    return Leaderboard(experiment, targets, ordered, comparisons, problems, notes, header, alpha)


def _derive_header(experiment: str, trial: list[RunRecord], tp: list[RunRecord],
                   rows: list[Row]) -> dict[str, str]:
    """Everything the published header says, taken from the runs themselves (never 'now')."""
    def joined(values: Iterable[Any]) -> str:
        return ", ".join(_distinct(values)) or "unknown"

    seeds = sorted({r.seed for r in trial if r.seed is not None})
    finished = [r for r in trial if r.finished]
    commands: list[str] = []
    for r in trial:  # trial is sorted by start time: the first command first
        cmd = r.tags.get("benchsuite.command")
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
    iso = _distinct(f"{row.img_per_s.device}, {row.img_per_s.threads} threads"
                    for row in rows if row.img_per_s and row.img_per_s.source == "isolated")
    return {
        "experiment": experiment,
        "dataset": joined(r.params.get("dataset") for r in trial),
        "model": joined(r.params.get("model") for r in trial),
        "preset": joined(r.params.get("preset") for r in trial),
        "epochs": joined(r.params.get("epochs") for r in trial),
        "train_steps": joined(_fmt_num(v) for r in finished
                              if (v := _to_float(r.metrics.get("train_steps"))) is not None),
        "batch_size": joined(r.params.get("batch_size") for r in trial),
        "seeds": f"{len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "none",
        "device": joined(r.tags.get("benchsuite.device") for r in trial),
        "throughput_device": "; ".join(iso) or "none (in-trial figures only)",
        "version": joined(r.tags.get("benchsuite.version") for r in trial),
        "newest_run": _utc(max(times)) if times else "unknown",
        "command": "\n".join(commands) or "unknown",
        "tuned": tuned_s,
    }


# ----------------------------------------------------------------------------- formatting


def _pct(target: float) -> str:
    return f"{target * 100:.4g}%"


def _f2(x: float) -> str:
    return f"{x:.2f}"


def _fmt_ips(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _n_text(cell: Cell) -> str:
    parts = [f"n={cell.n}" + (f" of {cell.n_expected}" if cell.short else "")]
    if cell.failed:
        parts.append(f"{len(cell.failed)} failed")
    if cell.running:
        parts.append(f"{len(cell.running)} running")
    return ", ".join(parts)


def _acc_value(cell: Cell) -> str:
    st = cell.stats.get("test_accuracy")
    if st is None:
        return "—"
    return _f2(st.mean) if st.std is None else f"{_f2(st.mean)} ± {_f2(st.std)}"


def _ci_text(cell: Cell | None) -> str:
    st = None if cell is None else cell.stats.get("test_accuracy")
    if st is None or st.ci95 is None:
        return "—"
    return f"[{_f2(st.ci95[0])}, {_f2(st.ci95[1])}]"


def _speedup_value(cell: Cell) -> str:
    st = cell.stats.get("theoretical_speedup")
    return "—" if st is None else f"{_f2(st.mean)}×"


def _train_cost_text(cell: Cell | None) -> str:
    st = None if cell is None else cell.stats.get("train_cost")
    return "—" if st is None else f"{st.mean:.3g}×"


def _sparsity_text(cell: Cell | None) -> str:
    st = None if cell is None else cell.stats.get("sparsity")
    return "—" if st is None else f"{_f2(st.mean * 100)}%"


def _md_marked(value: str, mark: Mark) -> str:
    if mark.rank is not None:
        return f"**{value}**{mark.symbol}"
    return f"{value} ≈" if mark.within_noise else value


def _column_titles(targets: list[float]) -> list[str]:
    titles = ["Method", "img/s"]
    for t in targets:
        p = _pct(t)
        titles += [f"{p} Acc", f"{p} CI", f"{p} Speedup", f"{p} Train cost", f"{p} Sparsity"]
    return titles


def _footnotes(board: Leaderboard) -> list[tuple[int, Row, Cell]]:
    """The cells left out of the marks, numbered in reading order (row, then column)."""
    out: list[tuple[int, Row, Cell]] = []
    for row in board.rows:
        for t in board.targets:
            cell = None if row.reference else row.cells.get(t)
            if cell is not None and not cell.ranked:
                out.append((len(out) + 1, row, cell))
    return out


def _footnote_numbers(board: Leaderboard) -> dict[tuple[str, float], int]:
    return {(row.label, cell.target): k for k, row, cell in _footnotes(board)}


def _footnote_text(row: Row, cell: Cell) -> str:
    return f"{row.label} at {_pct(cell.target)}: " + "; ".join(cell.flags())


def _uses_in_trial(board: Leaderboard) -> bool:
    return any(r.img_per_s is not None and r.img_per_s.source == "in-trial" for r in board.rows)


def _legend_lines(board: Leaderboard) -> list[str]:
    lines = [
        "**Acc**: test top-1 accuracy (%), mean ± sample std over seeds, with n = seeds that "
        "finished (`n=2 of 3`: fewer seeds than the column has; failed and still-running runs "
        "are counted next to it). **CI**: 95 % interval of the mean, mean ± t(0.975, n−1)·std/√n "
        "(Student t, clipped to [0, 100]; none with n < 2).",
        "**Speedup**: *theoretical* speedup = multiply-adds per sample of the dense model ÷ "
        "those of the finalized sparse model (mean over seeds). It is not a measured inference "
        "speed: the models are only masked, so dense kernels still run on zeros. What a real "
        "sparse kernel gains is measured by `python benchmarks/sparse_inference.py "
        f"--experiment {board.experiment}` (see the README's Performance section).",
        "**Train cost**: multiply-adds of the training steps at the density each step ran "
        "with (forward + backward = 3× the forward; RigL's dense-gradient steps added) ÷ "
        "those of the dense model for the same steps (mean over seeds; dense = 1×). Also "
        "theoretical: masked dense kernels compute every product, so the wall time does not "
        "shrink with it (docs/methods.md, the cost of training).",
        "**Sparsity**: achieved fraction of prunable weights that are exactly zero (mean, %); "
        "never marked.",
        "**img/s**: training throughput, images per second of the method's training steps "
        "(Σ images ÷ Σ step time after warm-up), measured in isolation, one method at a time "
        f"on an otherwise idle device ({board.header.get('throughput_device', 'unknown')}); "
        "the mean over interleaved timing rounds, compared between neighbours by a paired "
        "t-test over the rounds.",
    ]
    if _uses_in_trial(board):
        lines.append("**†**: no isolated measurement for this row; median in-trial "
                     "`train_img_per_s`, measured while trials shared the cores (contended), "
                     "not comparable with isolated figures and never marked.")
    lines.append(
        "**Marks**: within each column the non-reference rows are sorted by mean and each is "
        "compared with the next by a two-sided paired t-test over the seeds both have "
        f"(seeds are paired: same initial weights and batches), α = {board.alpha}. "
        "**Bold** with ¹ ² ³: that place, separated (p < α) from both neighbours. "
        "≈: within noise of (or tied with) a neighbour, so not ranked. Unmarked top-3 cells "
        "share fewer than 2 seeds with their neighbour (untested). img/s: the same test over "
        "the timing rounds (a record without rounds: separated when the faster is more than "
        f"{IMG_S_REL_THRESHOLD:.0%} faster)."
    )
    lines.append(
        "**[n]**: a footnoted cell is left out of the marks: neither compared with its "
        "neighbours nor ranked (accuracy and speedup); the other cells of its column are ranked "
        "among themselves. *Layer collapse*: in at least one seed a prunable layer ends with "
        "no non-zero weight, so no signal passes it and the network is broken (often at "
        "chance): the method's failure, not noise; the footnote names the layers. *Sparsity "
        f"overshoot*: the mean achieved sparsity exceeds the target by more than {OVERSHOOT_PP:g} "
        "pp (the harness's projection can only add zeros, never take them back): a sparser "
        "model is not the same comparison (lower accuracy, higher speedup than its column)."
    )
    if any(r.reference for r in board.rows):
        lines.append(f"`{REFERENCE_METHOD}` is the unpruned reference (sparsity 0), shown in every "
                     "column group and never ranked.")
    if any(r.method == FLOOR_METHOD for r in board.rows):
        lines.append(f"`{FLOOR_METHOD}` is the floor: dense training for the whole budget, then "
                     "the harness's final projection to the target, no retraining. It is ranked "
                     "like any method; a method that does not beat it gained nothing over "
                     "pruning the trained dense model once.")
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(board: Leaderboard) -> list[str]:
    notes = _footnote_numbers(board)
    titles = _column_titles(board.targets)
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in board.rows:
        tp = row.img_per_s
        if tp is None:
            ips = "—"
        elif tp.source == "in-trial":
            ips = _fmt_ips(tp.value) + "†"
        else:
            ips = _md_marked(_fmt_ips(tp.value), tp.mark)
        cells = [_md_escape(row.label + (" (reference)" if row.reference else "")), ips]
        for t in board.targets:
            cell = row.cell(t)
            if cell is None:
                cells += ["—", "—", "—", "—", "—"]
                continue
            acc = _md_marked(_acc_value(cell), cell.marks["test_accuracy"])
            n = _n_text(cell)
            acc += f" _({n})_" if cell.short or cell.failed or cell.running else f" ({n})"
            if (row.label, t) in notes and not row.reference:
                acc += f" [{notes[(row.label, t)]}]"
            cells += [acc, _ci_text(cell),
                      _md_marked(_speedup_value(cell), cell.marks["theoretical_speedup"]),
                      _train_cost_text(cell), _sparsity_text(cell)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(board: Leaderboard, header: dict[str, str] | None = None) -> str:
    """The published document: header, table, legend, and any problems published with force."""
    h = {**board.header, **(header or {})}
    out = [f"# Leaderboard: {h.get('experiment') or board.experiment}", ""]
    out += [
        f"- **Dataset:** {h['dataset']}",
        f"- **Model:** {h['model']}",
        f"- **Preset:** {h['preset']}",
        f"- **Budget:** {h['epochs']} epochs = {h['train_steps']} optimizer steps per run "
        f"(batch size {h['batch_size']}), the same for every method",
        f"- **Seeds:** {h['seeds']}",
        f"- **Hardware / device (trials):** {h['device']}",
        f"- **img/s measured on:** {h['throughput_device']}",
        f"- **benchsuite version:** {h['version']}",
        f"- **Newest run:** {h['newest_run']}",
        f"- **Hyperparameters tuned:** {h['tuned']}",
        "- **Reproduce:**",
        "",
        "```",
        *h["command"].splitlines(),
        "```",
        "",
    ]
    if board.problems:
        out += ["> **Warning: unfair comparison** (published with `--force`):"]
        out += [f"> - {p}" for p in board.problems]
        out += [""]
    out += _markdown_table(board)
    marked = _footnotes(board)
    if marked:
        out += ["", "## Cells left out of the marks", ""]
        out += [f"- [{k}] {_md_escape(_footnote_text(row, cell))}" for k, row, cell in marked]
    out += ["", "## Legend", ""]
    out += [f"- {line}" for line in _legend_lines(board)]
    if board.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(out) + "\n"


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _stat_json(st: Stat | None, mark: Mark | None = None) -> dict[str, Any] | None:
    if st is None:
        return None
    out: dict[str, Any] = {"mean": st.mean, "std": st.std, "n": st.n,
                           "ci95": list(st.ci95) if st.ci95 else None}
    if mark is not None:
        out["mark"] = {"rank": mark.rank, "within_noise": mark.within_noise}
    return out


def _board_dict(board: Leaderboard, header: dict[str, str] | None = None) -> dict[str, Any]:
    notes = _footnote_numbers(board)
    rows = []
    for row in board.rows:
        cells = {}
        for target, cell in sorted(row.cells.items()):
            cells[repr(target)] = {
                "target_sparsity": target,
                "n": cell.n,
                "n_expected": cell.n_expected,
                "seeds": list(cell.seeds),
                "run_ids": {str(s): rid for s, rid in sorted(cell.run_ids.items())},
                "failed": cell.failed,
                "running": cell.running,
                "test_accuracy": _stat_json(cell.stats.get("test_accuracy"),
                                            cell.marks.get("test_accuracy")),
                "theoretical_speedup": _stat_json(cell.stats.get("theoretical_speedup"),
                                                  cell.marks.get("theoretical_speedup")),
                "train_cost": _stat_json(cell.stats.get("train_cost")),
                "sparsity": _stat_json(cell.stats.get("sparsity")),
                "collapsed": {str(s): list(v) for s, v in sorted(cell.collapsed.items())},
                "overshoot": cell.overshoot,
                "left_out": not row.reference and not cell.ranked,  # of the marks: footnoted
                "footnote": None if row.reference else notes.get((row.label, target)),
                "flags": [] if row.reference else cell.flags(),
            }
        tp = row.img_per_s
        rows.append({
            "label": row.label,
            "method": row.method,
            "variant": row.variant,
            "reference": row.reference,
            "tuned": row.tuned,
            "img_per_s": None if tp is None else {
                "value": tp.value, "source": tp.source, "device": tp.device,
                "threads": tp.threads, "run_ids": list(tp.run_ids), "rounds": list(tp.rounds),
                "mark": {"rank": tp.mark.rank, "within_noise": tp.mark.within_noise}},
            "cells": cells,
        })
    return {
        "schema": JSON_SCHEMA,
        "experiment": board.experiment,
        "header": {**board.header, **(header or {})},
        "targets": board.targets,
        "alpha": board.alpha,
        "img_per_s_rel_threshold": IMG_S_REL_THRESHOLD,
        "overshoot_pp": OVERSHOOT_PP,
        "footnotes": [{"number": k, "label": row.label, "target_sparsity": cell.target,
                       "text": _footnote_text(row, cell)} for k, row, cell in _footnotes(board)],
        "test": "two-sided paired t-test (scipy.stats.ttest_rel) between neighbours by mean",
        "problems": board.problems,
        "notes": board.notes,
        "rows": rows,
        "comparisons": [
            {"metric": c.metric, "target_sparsity": c.target, "upper": c.upper, "lower": c.lower,
             "shared_seeds": c.shared_seeds, "diff": c.diff, "t": _finite(c.t),
             "t_infinite": c.t is not None and math.isinf(c.t), "p": c.p, "status": c.status}
            for c in board.comparisons
        ],
    }


def to_json(board: Leaderboard, header: dict[str, str] | None = None) -> str:
    """Unrounded numbers behind every table cell, with the MLflow run ids they came from."""
    return json.dumps(_board_dict(board, header), indent=2, ensure_ascii=False,
                      allow_nan=False) + "\n"


def render_rich(board: Leaderboard) -> rich.table.Table:
    """The terminal view: same cells as the markdown, marks as styles, problems in red."""
    from rich.table import Table
    from rich.text import Text

    captions: list[Text] = []
    for p in board.problems:
        captions.append(Text(f"⚠ unfair comparison: {p}", style="bold red"))
    if _uses_in_trial(board):
        captions.append(Text("† in-trial img/s (contended), no isolated measurement",
                             style="yellow"))
    captions.append(Text(f"marks: ¹²³ beyond noise (paired t-test, α={board.alpha}), "
                         "≈ within noise of a neighbour", style="dim"))
    marked = _footnotes(board)
    for k, row, cell in marked:
        captions.append(Text(f"[{k}] {_footnote_text(row, cell)} (not ranked)",
                             style="red" if cell.collapsed else "yellow"))
    if marked:
        captions.append(Text("[n] cells are left out of the marks: layer collapse, or achieved "
                             f"sparsity above the target + {OVERSHOOT_PP:g} pp", style="dim"))
    for n in board.notes:
        captions.append(Text(n, style="dim"))
    notes = {(row.label, cell.target): k for k, row, cell in marked}
    h = board.header
    title = (f"benchsuite leaderboard: {board.experiment}\n{h['dataset']}, {h['model']}, "
             f"{h['epochs']} epochs = {h['train_steps']} steps, seeds {h['seeds']}")
    table = Table(title=title,
                  caption=Text("\n").join(captions), caption_justify="left")
    for i, title in enumerate(_column_titles(board.targets)):
        table.add_column(title.replace(" ", "\n", 1) if i > 1 else title,
                         justify="left" if i == 0 else "right")

    def marked(value: str, mark: Mark) -> Text:
        styles = {1: "bold green", 2: "bold cyan", 3: "bold magenta"}
        if mark.rank is not None:
            return Text(value + mark.symbol, style=styles[mark.rank])
        return Text(value + (" ≈" if mark.within_noise else ""))

    for row in board.rows:
        tp = row.img_per_s
        if tp is None:
            ips = Text("—")
        elif tp.source == "in-trial":
            ips = Text(_fmt_ips(tp.value) + "†", style="yellow")
        else:
            ips = marked(_fmt_ips(tp.value), tp.mark)
        cells: list[Text] = [Text(row.label, style="italic" if row.reference else ""), ips]
        for t in board.targets:
            cell = row.cell(t)
            if cell is None:
                cells += [Text("—")] * 5
                continue
            acc = marked(_acc_value(cell), cell.marks["test_accuracy"])
            style = "bold red" if cell.failed else ("yellow" if cell.short or cell.running
                                                    else "dim")
            acc.append(f" ({_n_text(cell)})", style=style)
            if not row.reference and (row.label, t) in notes:
                acc.append(f" [{notes[(row.label, t)]}]",
                           style="bold red" if cell.collapsed else "bold yellow")
            cells += [acc, Text(_ci_text(cell)),
                      marked(_speedup_value(cell), cell.marks["theoretical_speedup"]),
                      Text(_train_cost_text(cell)), Text(_sparsity_text(cell))]
        table.add_row(*cells, end_section=row.reference)
    return table


# chosen here: drops below a tenth of a point are below what 3 seeds resolve (stds 0.1-0.5 pp)
DROP_FLOOR_PP = 0.1
_SPARSITY_TICKS = (0, 50, 80, 90, 95, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.98, 99.99)


def _density_scale(x: Any) -> Any:
    """Sparsity (%) -> −log10(1 − sparsity): equal steps for 90 → 99 → 99.9 %."""
    return -np.log10(np.clip(100.0 - np.asarray(x, dtype=float), 1e-4, None) / 100.0)


def _density_inverse(y: Any) -> Any:
    return 100.0 - 100.0 * np.power(10.0, -np.asarray(y, dtype=float))


def _plot_points(row: Row, targets: list[float]) -> list[tuple[float, float, float, Cell]]:
    """(achieved sparsity %, mean accuracy, std, cell) of a row's cells, sparsest last."""
    pts = []
    for t in targets:
        cell = row.cells.get(t)
        if cell is None or "test_accuracy" not in cell.stats or "sparsity" not in cell.stats:
            continue
        acc = cell.stats["test_accuracy"]
        pts.append((cell.stats["sparsity"].mean * 100, acc.mean, acc.std or 0.0, cell))
    return sorted(pts, key=lambda p: p[0])


def plot(board: Leaderboard) -> Figure:
    """Two panels over achieved sparsity on a log scale of 1 − sparsity (90, 95, 98, 99 %
    evenly spread): test accuracy over the full range, and the accuracy drop from the dense
    reference on a log scale, where methods a few tenths of a point apart stay apart. Cells
    with a collapsed layer are drawn (crossed) only in the full-range panel, so a network at
    chance never squashes the others; sparsity overshoots are ringed in both."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    fig = Figure(figsize=(13.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)  # no pyplot: no global state, no GUI backend
    full, zoom = fig.subplots(1, 2)
    ref = next((r for r in board.rows if r.reference), None)
    ref_cell = None if ref is None else ref.cell(0.0)
    ref_acc = None if ref_cell is None else ref_cell.stats.get("test_accuracy")
    markers = "os^DvPX*<>ph"
    colours = [f"C{i}" for i in range(10)]
    xs: list[float] = []
    drops: list[float] = []  # upper and lower whisker ends, for the zoom's limits
    left_out: list[str] = []
    collapsed_pts: list[tuple[float, float]] = []
    overshoot_pts: list[tuple[Any, float, float]] = []  # (axes, x, y)
    methods = [r for r in board.rows if not r.reference]
    for i, row in enumerate(methods):
        pts = _plot_points(row, board.targets)
        if not pts:
            continue
        floor_row = row.method == FLOOR_METHOD
        style = {
            "marker": markers[i % len(markers)], "markersize": 4, "capsize": 3,
            "linewidth": 1.2,
            # beyond ten rows the colour cycle repeats: vary the line style too
            "linestyle": "--" if floor_row or i >= 10 else "-",
            "color": "black" if floor_row else colours[i % 10],
            "label": row.label + (" (floor)" if floor_row else ""),
        }
        x, y, e, cells = zip(*pts, strict=True)
        xs += x
        full.errorbar(x, y, yerr=e, **style)
        for px, py, _, cell in pts:
            if cell.collapsed:
                collapsed_pts.append((px, py))
            if cell.overshoot:
                overshoot_pts.append((full, px, py))
        if ref_acc is None:
            continue
        kept = [p for p in pts if not p[3].collapsed]
        left_out += [f"{row.label} at {_pct(p[3].target)}" for p in pts if p[3].collapsed]
        if not kept:
            continue
        zx, zy, zlo, zhi = [], [], [], []
        for px, acc, std, cell in kept:
            drop = max(ref_acc.mean - acc, DROP_FLOOR_PP)  # at or above dense: the floor
            zx.append(px)
            zy.append(drop)
            zlo.append(min(std, drop - DROP_FLOOR_PP / 2))
            zhi.append(std)
            drops += [drop + std, drop - zlo[-1]]
            if cell.overshoot:
                overshoot_pts.append((zoom, px, drop))
        # "_label": found by name, kept out of the legend (the full panel's lines carry it)
        zoom.errorbar(zx, zy, yerr=[zlo, zhi], **{**style, "label": f"_{row.label}"})

    if ref_acc is not None and ref is not None:
        full.axhline(ref_acc.mean, color="0.3", linestyle=":", linewidth=1,
                     label=f"{ref.label} (reference)")
        if ref_acc.std:
            full.axhspan(ref_acc.mean - ref_acc.std, ref_acc.mean + ref_acc.std, color="0.5",
                         alpha=0.15, linewidth=0)
            if ref_acc.std > DROP_FLOOR_PP:  # a drop inside it is within dense's seed spread
                zoom.axhspan(DROP_FLOOR_PP / 2, ref_acc.std, color="0.5", alpha=0.15,
                             linewidth=0)
    extra: list[Any] = []
    if collapsed_pts:
        cx, cy = zip(*collapsed_pts, strict=True)
        full.plot(cx, cy, linestyle="none", marker="X", markersize=11, markeredgecolor="red",
                  markerfacecolor="none", markeredgewidth=1.5)
        extra.append(Line2D([], [], linestyle="none", marker="X", markersize=9,
                            markeredgecolor="red", markerfacecolor="none",
                            label="layer collapse (not ranked)"))
    if overshoot_pts:
        for ax, px, py in overshoot_pts:
            ax.plot([px], [py], linestyle="none", marker="o", markersize=11,
                    markeredgecolor="orange", markerfacecolor="none", markeredgewidth=1.5)
        extra.append(Line2D([], [], linestyle="none", marker="o", markersize=9,
                            markeredgecolor="orange", markerfacecolor="none",
                            label=f"sparsity > target + {OVERSHOOT_PP:g} pp (not ranked)"))

    for ax in (full, zoom):
        ax.set_xscale("function", functions=(_density_scale, _density_inverse))
        if xs:
            lo, hi = _density_scale(min(xs)), _density_scale(max(xs))
            pad = max(0.08 * (hi - lo), 0.05)
            ax.set_xlim(*_density_inverse([lo - pad, hi + pad]))
        ax.xaxis.set_major_locator(FixedLocator(list(_SPARSITY_TICKS)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("achieved sparsity (%), log scale of 1 − sparsity")
        ax.grid(True, alpha=0.3)
    full.set_ylabel("test accuracy (%)")
    full.set_title("full range (error bars: std over seeds)", fontsize="medium")
    zoom.set_yscale("log")
    zoom.set_ylabel(f"accuracy drop from {REFERENCE_METHOD} (pp, log scale)")
    zoom.set_title("where the methods differ: drop from dense", fontsize="medium")
    if drops:
        low = min(drops + ([ref_acc.std] if ref_acc is not None and ref_acc.std else []))
        zoom.set_ylim(max(DROP_FLOOR_PP / 2, 0.7 * low), max(drops) * 1.5)
        zoom.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        for axis_fmt in (zoom.yaxis.set_major_formatter, zoom.yaxis.set_minor_formatter):
            axis_fmt(FuncFormatter(lambda v, _: f"{v:g}"))
        zoom.grid(True, which="minor", alpha=0.15)
    notes = [f"drops ≤ {DROP_FLOOR_PP:g} pp (at or above dense): drawn at {DROP_FLOOR_PP:g}"]
    if ref_acc is None:
        notes = [f"no {REFERENCE_METHOD} reference runs: no drop to show"]
    if ref_acc is not None and ref_acc.std and ref_acc.std > DROP_FLOOR_PP:
        notes.append("grey band: within dense's seed std")
    if left_out:
        notes.append("left out (layer collapse): " + ", ".join(left_out))
    zoom.text(1.01, 0.0, "\n".join(textwrap.fill(n, 48) for n in notes),
              transform=zoom.transAxes, fontsize="x-small", va="bottom", ha="left", color="0.3")
    fig.suptitle(f"{board.experiment}: test accuracy vs achieved sparsity")
    handles, labels = full.get_legend_handles_labels()
    handles += extra
    labels += [h.get_label() for h in extra]
    if handles:
        zoom.legend(handles, labels, fontsize="small", loc="upper left",
                    bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- publishing


def _safe_name(experiment: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"


def _index_lines(out_dir: Path) -> list[str]:
    lines = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("schema") not in _INDEX_SCHEMAS:
            continue
        h = data.get("header", {})
        lines.append(
            f"- [{data.get('experiment', path.stem)}]({path.stem}.md): {h.get('dataset')}, "
            f"{h.get('model')}, {h.get('epochs')} epochs ({h.get('train_steps')} steps), "
            f"seeds {h.get('seeds')}, newest run {h.get('newest_run')}"
        )
    return lines


def _write_index(out_dir: Path) -> Path:
    """Rebuild the index from the published JSON files; keep any text outside the markers."""
    path = out_dir / "README.md"
    block = "\n".join([_INDEX_START, *_index_lines(out_dir), _INDEX_END])
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if _INDEX_START in old and _INDEX_END in old:
        head, rest = old.split(_INDEX_START, 1)
        tail = rest.split(_INDEX_END, 1)[1]
        text = head + block + tail
    else:
        text = ("# Published leaderboards\n\n"
                "Written by `benchsuite publish`; one line per experiment.\n\n" + block + "\n")
    if text != old:
        path.write_text(text, encoding="utf-8")
    return path


def write_published(
    experiment: str, out_dir: Path, markdown: str, json_text: str, figure: Figure
) -> list[Path]:
    """Write <experiment>.md/.json/.png and the README index (the leaderboard's and the study
    board's). Byte-identical on republishing: nothing depends on the clock, ordering is fixed,
    and the PNG carries no software/date metadata.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _safe_name(experiment)
    md, js, png = (out_dir / f"{stem}{ext}" for ext in (".md", ".json", ".png"))
    md.write_text(markdown, encoding="utf-8")
    js.write_text(json_text, encoding="utf-8")
    figure.savefig(png, format="png", metadata={"Software": None})
    return [md, js, png, _write_index(out_dir)]


def publish(board: Leaderboard, out_dir: Path, header: dict[str, str] | None = None, *,
            force: bool = False) -> list[Path]:
    """The leaderboard's published files; an unfair table is refused unless forced."""
    if board.problems and not force:
        raise UnfairComparison("; ".join(board.problems))
    return write_published(
        board.experiment, out_dir, to_markdown(board, header), to_json(board, header), plot(board)
    )
