"""Leaderboard: statistics, marks, fairness, and the published files.

Expected numbers are computed by hand from the formulas. With 3 seeds (df = 2) Student's t has
closed forms: CDF F(t) = 1/2 + t / (2 √(2 + t²)), so the two-sided p = 1 − |t| / √(2 + t²),
and the quantile t_q = (2q − 1) / √(2q(1 − q)).
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path

import pytest

from benchsuite.boards.aggregation import aggregate
from benchsuite.boards.leaderboard import Throughput, UnfairComparison
from benchsuite.boards.plot import plot
from benchsuite.boards.publish import experiments, load_runs, newest_experiment, publish
from benchsuite.boards.render import render_rich, to_json, to_markdown
from benchsuite.boards.stats import Mark, rank_column
from benchsuite.core.record import RunRecord

T975_DF2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)  # 4.3027 (table value 4.303)


def p_df2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(2 + t * t)


def paired_t(d: list[float]) -> float:
    n = len(d)
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    return m / (sd / math.sqrt(n))


_counter = iter(range(1_000_000))


def rec(
    method: str,
    target: float,
    seed: int,
    acc: float | None,
    *,
    variant: str = "default",
    speedup: float = 2.0,
    sparsity: float | None = None,
    status: str = "FINISHED",
    start: int | None = None,
    run_key: str | None = None,
    steps: int = 1000,
    ips: float = 50.0,
    version: str = "0.1.0",
    preset: str = "digits",
    data: str = "fp1",
    tuned: str = "false",
    error: str | None = None,
    collapsed: str | None = None,
    classes: int | None = None,
) -> RunRecord:
    """A run with the harness's MLflow schema, as plain data."""
    i = next(_counter)
    start = 1_700_000_000_000 + i * 1000 if start is None else start
    params = {
        "method": method,
        "variant": variant,
        "target_sparsity": f"{target:g}",
        "preset": preset,
        "dataset": "digits",
        "model": "smallcnn",
        "epochs": "10",
        "batch_size": "64",
        "lr": "0.1",
        "seed": str(seed),
    }
    metrics: dict[str, float] = {}
    if status == "FINISHED" and acc is not None:
        metrics = {
            "test_accuracy": acc,
            "test_top5": 99.0,
            "val_accuracy": acc,
            "sparsity": target if sparsity is None else sparsity,
            "theoretical_speedup": speedup,
            "flops_dense": 1e6,
            "flops_sparse": 1e6 / speedup,
            "train_cost": 1.0 / speedup,
            "train_img_per_s": ips,
            "train_steps": steps,
            "train_images": steps * 64,
            "wall_time_s": 12.0,
        }
    tags = {
        "benchsuite.version": version,
        "benchsuite.kind": "run",
        "benchsuite.run_key": run_key or f"{method}|{variant}|{target}|{seed}",
        "benchsuite.device": "cpu:1 threads",
        "benchsuite.node": "n1",
        "benchsuite.tuned": tuned,
        "benchsuite.cached_dense": "false",
        "benchsuite.data": data,
        "benchsuite.command": "benchsuite run --methods a,b,c,d,e --sparsity 0.9,0.95,0.98",
    }
    if error:
        tags["benchsuite.error"] = error
    if classes is not None and metrics:
        metrics["num_classes"] = float(classes)
    if collapsed is not None and metrics:  # what train_run records: a count and the names
        tags["benchsuite.collapsed"] = collapsed
        metrics["collapsed_layers"] = float(len([n for n in collapsed.split(",") if n]))
    return RunRecord(
        run_id=f"r{i:04d}",
        status=status,
        start_time=start,
        end_time=start + 500,
        params=params,
        metrics=metrics,
        tags=tags,
    )


def tp(
    method: str, img_per_s: float, variant: str = "default", rounds: list[float] | None = None
) -> RunRecord:
    i = next(_counter)
    tags = {"benchsuite.kind": "throughput", "benchsuite.device": "cpu", "benchsuite.threads": "1"}
    if rounds is not None:
        tags["benchsuite.img_per_s_rounds"] = json.dumps(rounds)
    return RunRecord(
        run_id=f"t{i:04d}",
        start_time=1_800_000_000_000 + i,
        end_time=1_800_000_000_000 + i + 10,
        params={"method": method, "variant": variant, "preset": "digits", "batch_size": "64"},
        metrics={"img_per_s": img_per_s},
        tags=tags,
    )


# Column 0.9: a ¹ | b ≈ (noise to c) | c ≈ (tie with d) | d | e.
# Column 0.95: a ¹ b ² c ³ (each separated) | d | e.  Column 0.98: a vs b share 1 seed.
ACC = {
    0.9: {
        "a": [95.0, 96.0, 97.0],
        "b": [94.0, 94.9, 96.1],
        "c": [93.5, 94.9, 95.1],
        "d": [94.5, 94.0, 95.0],
        "e": [89.5, 88.8, 90.2],
    },
    0.95: {
        "a": [90.0, 91.0, 92.0],
        "b": [89.0, 89.9, 91.1],
        "c": [88.0, 88.8, 90.2],
        "d": [87.0, 87.7, 89.3],
        "e": [86.5, 87.7, 88.3],
    },
}
SPEEDUP_09 = {"a": [2.0] * 3, "b": [3.0] * 3, "c": [2.0] * 3, "d": [1.0, 1.2, 1.1], "e": [1.0] * 3}
DENSE = [98.0, 98.5, 99.0]


def table_runs() -> list[RunRecord]:
    runs = [rec("dense", 0, s, a, speedup=1.0, sparsity=0.0) for s, a in enumerate(DENSE)]
    for target, by_method in ACC.items():
        for m, accs in by_method.items():
            for s, a in enumerate(accs):
                sp = SPEEDUP_09[m][s] if target == 0.9 else 5.0 + s * 0.1
                runs.append(
                    rec(m, target, s, a, speedup=sp, sparsity=target - 0.001 * s, ips=40.0 + s)
                )
    runs += [rec("a", 0.98, s, 80.0 + s, speedup=20.0) for s in range(3)]
    runs.append(rec("b", 0.98, 0, 70.0, speedup=20.0))
    runs += [
        rec("b", 0.98, s, None, status="FAILED", error="RuntimeError: nan loss") for s in (1, 2)
    ]
    runs += [tp("dense", 2000.0), tp("a", 1000.0), tp("b", 900.0), tp("c", 880.0), tp("e", 500.0)]
    return runs


@pytest.fixture(scope="module")
def board():
    return aggregate(table_runs(), experiment="digits-10ep")


def test_cell_statistics_match_hand_computation(board) -> None:
    cell = board.row("a").cells[0.95]
    acc = cell.stats["test_accuracy"]
    assert acc.mean == pytest.approx(91.0)
    assert acc.std == pytest.approx(1.0)  # sqrt(((-1)^2 + 0 + 1^2) / 2)
    half = T975_DF2 * 1.0 / math.sqrt(3)
    assert T975_DF2 == pytest.approx(4.302653, abs=1e-6)
    assert acc.ci95 == pytest.approx((91.0 - half, 91.0 + half))
    assert cell.n == 3 and cell.seeds == (0, 1, 2) and not cell.short
    assert cell.stats["sparsity"].mean == pytest.approx(0.95 - 0.001)
    assert cell.stats["theoretical_speedup"].mean == pytest.approx(5.1)
    assert set(cell.run_ids) == {0, 1, 2}
    dense = board.rows[0]
    assert dense.reference and dense.label == "dense"
    assert dense.cell(0.9) is dense.cell(0.98)  # the one reference cell, shown in every group
    assert dense.cell(0.9).stats["test_accuracy"].mean == pytest.approx(98.5)
    assert [r.label for r in board.rows] == ["dense", "a", "b", "c", "d", "e"]
    assert board.targets == [0.9, 0.95, 0.98]


def _comparison(board, metric: str, target: float, upper: str):
    return next(
        c
        for c in board.comparisons
        if c.metric == metric and c.target == target and c.upper == upper
    )


def test_paired_tests_match_hand_computation(board) -> None:
    sep = _comparison(board, "test_accuracy", 0.9, "a")  # diffs 1.0, 1.1, 0.9
    t = paired_t([1.0, 1.1, 0.9])
    assert t == pytest.approx(10 * math.sqrt(3))
    assert (sep.lower, sep.shared_seeds, sep.status) == ("b", 3, "separated")
    assert sep.diff == pytest.approx(1.0)
    assert sep.t == pytest.approx(t) and sep.p == pytest.approx(p_df2(t))
    assert sep.p < 0.05

    noise = _comparison(board, "test_accuracy", 0.9, "b")  # diffs 0.5, 0.0, 1.0
    t = paired_t([0.5, 0.0, 1.0])
    assert t == pytest.approx(math.sqrt(3))
    assert noise.lower == "c" and noise.status == "noise"
    assert noise.p == pytest.approx(1 - math.sqrt(3) / math.sqrt(5))  # 0.2254

    tie = _comparison(board, "test_accuracy", 0.9, "c")  # 94.5 == 94.5
    assert (tie.lower, tie.status, tie.p) == ("d", "tie", None)

    untested = _comparison(board, "test_accuracy", 0.98, "a")
    assert (untested.lower, untested.shared_seeds, untested.status) == ("b", 1, "untested")

    const = _comparison(board, "theoretical_speedup", 0.9, "b")  # 3 - 2 on every seed
    assert (const.lower, const.status, const.p) == ("a", "separated", 0.0)


def marks(board, target: float, metric: str = "test_accuracy") -> dict[str, tuple]:
    """label → (in the best group, rank with ties) of one column's cells."""
    return {
        r.label: (r.cells[target].marks[metric].best, r.cells[target].marks[metric].rank)
        for r in board.rows
        if not r.reference and target in r.cells
    }


class _Row:
    def __init__(self, label: str) -> None:
        self.label = label


def _p_by_hand(col: dict[str, list[float]], a: str, b: str) -> float:
    """Two-sided paired t-test on three seeds, closed form (df = 2)."""
    d = [u - v for u, v in zip(col[a], col[b])]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    return 0.0 if sd == 0 else p_df2(mean / (sd / math.sqrt(3)))


def _holm_by_hand(raw: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """Holm: the k-th smallest p × (m − k + 1), capped at 1, running maximum."""
    holm, running = {}, 0.0
    for k, pair in enumerate(sorted(raw, key=raw.get)):
        running = max(running, min(1.0, raw[pair] * (len(raw) - k)))
        holm[pair] = running
    return holm


def _rank(col: dict[str, list[float]]) -> tuple[dict, list]:
    entries = [(_Row(k), dict(enumerate(v)), Mark()) for k, v in col.items()]
    comps = {(c.upper, c.lower): c for c in rank_column(entries, "test_accuracy", 0.9)}
    return comps, entries


def test_the_best_group_and_ranks_follow_holm_corrected_p_values_computed_by_hand() -> None:
    """Four rows, three seeds: the best's three tests are one family, the other three pairs
    another; paired-t p-values in closed form (df = 2), Holm by hand in each. x beats y and w
    on their own tests (p 0.038, 0.028) but not after the correction (0.028 × 2 of three
    tests): the best group is x, y, w; z is separated from all three."""
    col = {"x": [10, 11, 12], "y": [9, 10.5, 11.0], "w": [9.3, 10.2, 10.8], "z": [5, 6, 7]}
    comps, entries = _rank(col)
    best = [("x", "y"), ("x", "w"), ("x", "z")]
    rest = [("y", "w"), ("y", "z"), ("w", "z")]
    raw = {pair: _p_by_hand(col, *pair) for pair in best + rest}
    assert raw[("x", "y")] == pytest.approx(1 - 5 / math.sqrt(27))  # t = 5
    holm = _holm_by_hand({p: raw[p] for p in best}) | _holm_by_hand({p: raw[p] for p in rest})
    for pair in best + rest:
        assert comps[pair].family == ("best" if pair in best else "rest")
        assert comps[pair].p == pytest.approx(raw[pair], abs=1e-12)
        assert comps[pair].p_holm == pytest.approx(holm[pair], abs=1e-12)
    assert raw[("x", "y")] < 0.05 and raw[("x", "w")] < 0.05  # separated alone ...
    assert comps[("x", "y")].status == comps[("x", "w")].status == "noise"  # ... not corrected
    assert {k: comps[k].status for k in [("x", "z"), ("y", "z"), ("w", "z")]} == dict.fromkeys(
        [("x", "z"), ("y", "z"), ("w", "z")], "separated"
    )
    got = {row.label: (m.best, m.rank, m.group_size) for row, _, m in entries}
    assert got == {"x": (True, 1, 3), "y": (True, 1, 3), "w": (True, 1, 3), "z": (False, 4, 3)}


def test_pairs_below_the_best_do_not_dilute_the_best_group() -> None:
    """x − y (diffs 1.0, 1.3, 0.7: t = 5.77, p = 0.0287) is the largest p of the best's family,
    so Holm leaves it at 0.0287: y is outside the best group. Corrected with the three pairs
    below the best (one family of six) it would be the 5th smallest, × 2 = 0.057: not
    separated. The pairs the best group never asks about no longer decide it."""
    col = {"x": [10, 11, 12], "y": [9, 9.7, 11.3], "z": [5, 6, 7], "w": [4.9, 6.2, 6.8]}
    comps, entries = _rank(col)
    raw = {(a, b): _p_by_hand(col, a, b) for a, b in comps}
    assert raw[("x", "y")] == pytest.approx(1 - (1 / (0.3 / math.sqrt(3))) / math.sqrt(2 + 100 / 3))
    one_family = _holm_by_hand(raw)
    assert one_family[("x", "y")] > 0.05  # the old family: not separated
    assert comps[("x", "y")].p_holm == pytest.approx(raw[("x", "y")], abs=1e-12)
    assert comps[("x", "y")].status == "separated"
    got = {row.label: (m.best, m.rank, m.group_size) for row, _, m in entries}
    assert got == {"x": (True, 1, 1), "y": (False, 2, 1), "z": (False, 3, 1), "w": (False, 3, 1)}


def test_marks_on_the_board(board) -> None:
    # 0.9, the best's family (a against b, e, c, d: p 0.0033, 0.0062, 0.023, 0.096; Holm × 4,
    # 3, 2, 1 → 0.013, 0.018, 0.046, 0.096): b, e and c are separated from a, d is not. Below
    # the best (five tested pairs, c = d a tie): e is separated from b, c and d (p 0.0083 × 4,
    # 0.014 × 3, ~0 × 5), b from neither c nor d (0.23, 0.42).
    assert marks(board, 0.9) == {
        "a": (True, 1),
        "b": (False, 2),
        "c": (False, 2),
        "d": (True, 1),
        "e": (False, 5),
    }
    # a and b share one seed at 0.98: b is untested against the best, so nothing is marked
    assert marks(board, 0.98) == {"a": (False, None), "b": (False, None)}
    # speedup at 0.9: b 3.0 beats every other row on every seed (constant differences: p = 0)
    assert marks(board, 0.9, "theoretical_speedup")["b"] == (True, 1)
    # img/s without per-round figures cannot be tested: no marks
    assert all(r.img_per_s.mark.rank is None for r in board.rows if r.img_per_s)
    assert board.row("d").img_per_s.value == pytest.approx(41.0)  # median of 40, 41, 42 x2
    md = to_markdown(board)
    a_row = next(line for line in md.splitlines() if line.startswith("| a |"))
    b_row = next(line for line in md.splitlines() if line.startswith("| b |"))
    assert "**96.00 ± 1.00**" in a_row and "95.00 ± 1.05 ²" in b_row


def test_failed_runs_are_counted_and_shown(board) -> None:
    cell = board.row("b").cells[0.98]
    assert (cell.n, cell.n_expected, cell.short) == (1, 3, True)
    assert [f["seed"] for f in cell.failed] == [1, 2]
    assert cell.failed[0]["error"] == "RuntimeError: nan loss"
    md = to_markdown(board)
    b_row = next(line for line in md.splitlines() if line.startswith("| b |"))
    assert "_(n=1 of 3, 2 failed)_" in b_row
    assert "(n=3)" in next(line for line in md.splitlines() if line.startswith("| a |"))


def test_latest_attempt_per_run_key_counts() -> None:
    base = [rec("dense", 0, s, 98.0) for s in range(2)]
    retry_ok = [
        rec("a", 0.9, 0, 91.0, run_key="k0", start=2_000),
        rec("a", 0.9, 0, None, status="FAILED", run_key="k0", start=1_000),
    ]
    retry_bad = [
        rec("a", 0.9, 1, 90.0, run_key="k1", start=1_000),
        rec("a", 0.9, 1, None, status="FAILED", run_key="k1", start=3_000),
    ]
    board = aggregate(base + retry_ok + retry_bad, experiment="x")
    cell = board.row("a").cells[0.9]
    assert cell.seeds == (0,) and cell.stats["test_accuracy"].mean == 91.0
    assert [f["seed"] for f in cell.failed] == [1]
    assert cell.run_ids[0] == retry_ok[0].run_id
    assert any("2 earlier attempt(s) superseded" in n for n in board.notes)


def _parse_md_table(md: str) -> tuple[list[str], dict[str, list[str]]]:
    """The board's main table: the first run of table lines."""
    lines = []
    for ln in md.splitlines():
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:
            break
    lines = [ln for ln in lines if ln.startswith("| ")]
    titles = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = {}
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip()[2:-2].split(" | ")]
        rows[cells[0].removesuffix(" (reference)")] = cells
    return titles, rows


SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
ACC_RE = re.compile(
    r"^(?P<bold>\*\*)?(?P<mean>[\d.]+)( ± (?P<std>[\d.]+))?(\*\*)?( (?P<rank>[⁰¹²³⁴⁵⁶⁷⁸⁹]+))? "
    r"_?\(n=(?P<n>\d+)( of (?P<of>\d+))?(, (?P<failed>\d+) failed)?\)_?( \[(?P<note>\d+)\])?$"
)


def test_markdown_parses_back_and_json_numbers_equal_the_table(board) -> None:
    md, data = to_markdown(board), json.loads(to_json(board))
    titles, rows = _parse_md_table(md)
    assert titles[:2] == ["Method", "img/s"]
    assert titles[2:8] == [
        "90% Acc",
        "90% CI",
        "90% Speedup",
        "90% Measured",
        "90% Train cost",
        "90% Sparsity",
    ]
    assert len(titles) == 2 + 6 * 3
    assert list(rows) == [r["label"] for r in data["rows"]] == ["dense", "a", "b", "c", "d", "e"]
    marks_seen = 0
    for jrow in data["rows"]:
        cells = rows[jrow["label"]]
        assert len(cells) == len(titles)
        ips = jrow["img_per_s"]
        ips_text = cells[1].replace("**", "").rstrip("¹²³ ≈†")
        v = ips["value"]
        assert ips_text == (f"{v:.0f}" if v >= 100 else f"{v:.1f}")
        assert cells[1].endswith("†") == (ips["source"] == "in-trial")
        for i, target in enumerate(data["targets"]):
            key = "0.0" if jrow["reference"] else repr(target)
            acc_t, ci_t, sp_t, meas_t, cost_t, spars_t = cells[2 + 6 * i : 8 + 6 * i]
            if key not in jrow["cells"]:  # c, d, e were not run at 0.98
                assert [acc_t, ci_t, sp_t, meas_t, cost_t, spars_t] == ["—"] * 6
                continue
            jcell = jrow["cells"][key]
            m = ACC_RE.match(acc_t)
            assert m, acc_t
            acc = jcell["test_accuracy"]
            assert m["mean"] == f"{acc['mean']:.2f}"
            assert m["std"] == (None if acc["std"] is None else f"{acc['std']:.2f}")
            assert int(m["n"]) == jcell["n"] == acc["n"]
            assert int(m["of"] or jcell["n"]) == jcell["n_expected"]
            assert int(m["failed"] or 0) == len(jcell["failed"])
            mark = acc["mark"]
            if mark and mark["best_group"]:
                marks_seen += 1
                assert m["bold"] and m["rank"] is None
            elif mark and mark["rank"]:
                marks_seen += 1
                assert not m["bold"] and m["rank"] == str(mark["rank"]).translate(SUPERSCRIPT)
            else:
                assert not m["bold"] and m["rank"] is None
            if acc["ci95"] is None:
                assert ci_t == "—"
            else:
                assert ci_t == f"[{acc['ci95'][0]:.2f}, {acc['ci95'][1]:.2f}]"
            sp = jcell["theoretical_speedup"]
            assert sp_t.replace("**", "").rstrip("⁰¹²³⁴⁵⁶⁷⁸⁹ ") == f"{sp['mean']:.2f}×"
            assert meas_t == "—" and jcell["measured_speedup"] is None  # none recorded here
            assert cost_t == f"{jcell['train_cost']['mean']:.3g}×"
            assert spars_t == f"{jcell['sparsity']['mean'] * 100:.2f}%"
    assert marks_seen == 10  # every compared accuracy cell of 0.9 and 0.95 (0.98 is untested)
    # JSON keeps the unrounded numbers and where each came from
    a95 = data["rows"][1]["cells"]["0.95"]
    assert a95["test_accuracy"]["mean"] == pytest.approx(91.0)
    assert a95["run_ids"] == {str(s): board.row("a").cells[0.95].run_ids[s] for s in range(3)}
    assert "Reproduce" in md and "benchsuite run --methods a,b,c,d,e" in md
    assert "no (default hyperparameters, untuned)" in md
    assert "theoretical" in md.lower() and "paired t-test" in md


def test_figure_has_one_line_per_method(board) -> None:
    fig = plot(board)
    ax = fig.axes[0]
    assert len(ax.containers) == 5  # a..e: one error-bar line each
    handles, labels = ax.get_legend_handles_labels()
    assert sorted(labels) == sorted(["dense (reference)", "a", "b", "c", "d", "e"])
    a = next(c for c in ax.containers if c.get_label() == "a")
    x, y = a.lines[0].get_data()
    assert list(x) == pytest.approx([89.9, 94.9, 98.0])  # achieved sparsity, %, not the target
    assert list(y) == pytest.approx([96.0, 91.0, 81.0])
    dense = next(ln for ln in ax.lines if ln.get_label() == "dense (reference)")
    assert list(dense.get_ydata()) == pytest.approx([98.5, 98.5])
    assert "achieved sparsity" in ax.get_xlabel()


def test_mixed_budgets_are_detected_and_publish_refuses(tmp_path: Path) -> None:
    runs = [rec("dense", 0, s, 98.0 + s) for s in range(2)]
    runs += [rec("a", 0.9, s, 90.0 + s) for s in range(2)]
    runs += [rec("b", 0.9, 0, 89.0, steps=2000), rec("b", 0.9, 1, 89.5, version="0.2.0")]
    board = aggregate(runs, experiment="mixed")
    assert len(board.problems) == 2
    assert "train_steps: 1000 (5 runs), 2000 (1 runs)" in board.problems[0]
    assert "benchsuite.version" in board.problems[1]
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_rich(board))
    assert "⚠ unfair comparison: runs differ in train_steps" in console.export_text()
    with pytest.raises(UnfairComparison, match="train_steps"):
        publish(board, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    paths = publish(board, tmp_path / "out", force=True)
    assert [p.name for p in paths] == ["mixed.md", "mixed.json", "mixed.png", "README.md"]
    assert "Warning: unfair comparison" in paths[0].read_text()
    assert json.loads(paths[1].read_text())["problems"] == board.problems
    fair = aggregate([rec("a", 0.9, s, 90.0 + s, preset="p") for s in range(2)], "fair")
    assert fair.problems == []


@pytest.mark.integration  # a real MLflow store
def test_publishing_twice_gives_identical_bytes(tmp_path: Path) -> None:
    runs = table_runs()
    out = tmp_path / "lb"
    first = publish(aggregate(runs, "digits-10ep"), out)
    before = {p.name: p.read_bytes() for p in first}
    random.Random(0).shuffle(runs)  # the order MLflow returns runs in must not matter
    second = publish(aggregate(runs, "digits-10ep"), out)
    assert {p.name: p.read_bytes() for p in second} == before
    assert before["digits-10ep.png"].startswith(b"\x89PNG")
    assert b"Software" not in before["digits-10ep.png"]
    # the header's date is the newest run's, and the index lists every published experiment
    newest = max(r.end_time for r in runs)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest / 1000))
    assert f"**Newest run:** {stamp}" in before["digits-10ep.md"].decode()
    (out / "README.md").write_text(
        "# Ours\n\nintro\n\n" + before["README.md"].decode().split("\n\n", 2)[2] + "\nfooter\n"
    )
    publish(aggregate([rec("a", 0.9, 0, 90.0)], "zeta"), out, header={"command": "cmd z"})
    index = (out / "README.md").read_text()
    assert index.startswith("# Ours\n\nintro\n") and index.endswith("\nfooter\n")
    entries = [ln for ln in index.splitlines() if ln.startswith("- [")]
    assert [e.split("]")[0] for e in entries] == ["- [digits-10ep", "- [zeta"]
    assert "digits, smallcnn, 10 epochs (1000 steps)" in entries[0]
    assert "cmd z" in (out / "zeta.md").read_text()


# ----------------------------------------------------------------------------- real MLflow


def _log(
    method: str,
    target: float,
    seed: int,
    acc: float | None,
    *,
    status: str = "FINISHED",
    run_key: str | None = None,
    kind: str = "run",
) -> None:
    import mlflow

    mlflow.start_run()
    if kind == "throughput":
        mlflow.log_params(
            {"method": method, "variant": "default", "preset": "digits", "batch_size": 64}
        )
        mlflow.log_metrics({"img_per_s": acc})
        mlflow.set_tags(
            {"benchsuite.kind": "throughput", "benchsuite.device": "cpu", "benchsuite.threads": "1"}
        )
        mlflow.end_run()
        return
    mlflow.log_params(
        {
            "method": method,
            "variant": "default",
            "target_sparsity": target,
            "preset": "digits",
            "dataset": "digits",
            "model": "smallcnn",
            "epochs": 10,
            "batch_size": 64,
            "lr": 0.1,
            "seed": seed,
        }
    )
    tags = {
        "benchsuite.version": "0.1.0",
        "benchsuite.kind": "run",
        "benchsuite.run_key": run_key or f"{method}-{target}-{seed}",
        "benchsuite.device": "cpu:1 threads",
        "benchsuite.tuned": "false",
        "benchsuite.data": "fp",
        "benchsuite.command": "benchsuite run",
    }
    if status == "FAILED":
        mlflow.set_tags({**tags, "benchsuite.error": "boom"})
        mlflow.end_run(status="FAILED")
        return
    mlflow.log_metric("sparsity", 0.5, step=0)  # a curve: the final value is logged last
    mlflow.log_metrics(
        {
            "test_accuracy": acc,
            "sparsity": target,
            "theoretical_speedup": 3.0,
            "train_steps": 100,
            "train_img_per_s": 10.0 + seed,
        },
        step=1,
    )
    mlflow.set_tags(tags)
    mlflow.end_run()


@pytest.mark.integration  # a real MLflow store
def test_real_mlflow_store(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("older")
        _log("dense", 0, 0, 97.0)
        mlflow.set_experiment("newer")
        for s in range(2):
            _log("dense", 0, s, 98.0 + s)
        _log("gmp", 0.9, 0, 90.0)
        _log("gmp", 0.9, 1, None, status="FAILED", run_key="gmp-k1")
        time.sleep(0.01)
        _log("gmp", 0.9, 1, 92.0, run_key="gmp-k1")  # the retry
        _log("gmp", 0.9, 2, None, status="FAILED")
        _log("gmp", 0, 0, 1234.0, kind="throughput")
    finally:
        mlflow.set_tracking_uri(previous)

    assert experiments(uri) == ["newer", "older"]
    assert newest_experiment(uri) == "newer"
    runs = load_runs(uri, "newer")
    assert len(runs) == 7
    board = aggregate(runs)
    assert board.experiment == "newer"  # carried by the records
    gmp = board.row("gmp")
    cell = gmp.cells[0.9]
    assert cell.seeds == (0, 1) and cell.stats["test_accuracy"].mean == pytest.approx(91.0)
    assert cell.stats["sparsity"].mean == pytest.approx(0.9)  # latest value, not the curve's first
    assert [f["seed"] for f in cell.failed] == [2] and cell.failed[0]["error"] == "boom"
    assert (cell.n_expected, cell.short) == (3, True)
    assert (gmp.img_per_s.source, gmp.img_per_s.value) == ("isolated", 1234.0)
    dense = board.row("dense")
    assert (dense.img_per_s.source, dense.img_per_s.value) == ("in-trial", 10.5)
    assert board.problems == [] and board.header["train_steps"] == "100"
    with pytest.raises(KeyError):
        load_runs(uri, "missing")


def test_img_per_s_neighbours_are_compared_over_the_timing_rounds() -> None:
    """Rounds pair the figures (same spell of the machine): a steady 3 % lead is separated,
    a 10 % lead that flips between rounds is noise; the 5 % rule no longer decides."""
    runs = [rec(m, 0.9, s, 90.0 + s) for m in "abc" for s in range(3)]
    runs += [
        tp("a", 1100.0, rounds=[1000.0, 1400.0, 900.0]),  # 10 % ahead of b on average
        tp("b", 1000.0, rounds=[1050.0, 1000.0, 950.0]),  # 3 % ahead of c in every round
        tp("c", 970.0, rounds=[1018.5, 970.0, 921.5]),
    ]
    board = aggregate(runs)
    pairs = {(c.upper, c.lower): c for c in board.comparisons if c.metric == "img_per_s"}
    d = [1000 - 1050, 1400 - 1000, 900 - 950]  # a − b per round
    assert pairs[("a", "b")].p == pytest.approx(p_df2(paired_t(d)))
    assert pairs[("a", "b")].status == "noise" and pairs[("b", "c")].status == "separated"
    ips = {r.label: (r.img_per_s.mark.best, r.img_per_s.mark.rank) for r in board.rows}
    # b is not separated from the best (a): both in the best group
    assert ips["a"] == (True, 1) and ips["b"] == (True, 1)


# ----------------------------------------------------------------------------- failures shown


def flagged_runs() -> list[RunRecord]:
    """Column 0.9: x collapses (seed 1) and y overshoots (92 %), both above everyone else;
    a > b > oneshot are separated (paired diffs 2.0/2.2/1.9 and 3.0/2.8/3.1); oneshot
    lands at 90.5 %, exactly on the 0.5 pp line (not an overshoot)."""
    runs = [rec("dense", 0, s, 98.0 + s, speedup=1.0, sparsity=0.0) for s in range(3)]
    accs = {"a": [95.0, 96.0, 97.0], "b": [93.0, 93.8, 95.1], "oneshot": [90.0, 91.0, 92.0]}
    for m, vals in accs.items():
        spars = 0.905 if m == "oneshot" else 0.9
        runs += [rec(m, 0.9, s, v, sparsity=spars, collapsed="") for s, v in enumerate(vals)]
    runs += [
        rec("x", 0.9, s, 99.0 + s * 0.4, speedup=9.0, collapsed="conv2,fc1" if s == 1 else "")
        for s in range(3)
    ]
    runs += [rec("y", 0.9, s, 98.0 + s * 0.2, speedup=12.0, sparsity=0.92) for s in range(3)]
    return runs


def test_collapsed_and_overshooting_cells_are_footnoted_and_not_ranked() -> None:
    board = aggregate(flagged_runs(), experiment="flags")
    x, y = board.row("x").cells[0.9], board.row("y").cells[0.9]
    assert x.collapsed == {1: ("conv2", "fc1")} and not x.overshoot and not x.ranked
    assert y.overshoot and not y.collapsed and not y.ranked
    assert not board.row("oneshot").cells[0.9].overshoot  # 90.5 %: on the line, not over it
    assert x.flags() == ["layer collapse: conv2, fc1 (1 of 3 seeds)"]
    assert y.flags() == ["sparsity 92.00 % > target 90 % + 0.5 pp: not the same comparison"]
    # neither is compared nor marked, in either marked column; the others keep their ranks
    assert marks(board, 0.9) == {
        "a": (True, 1),
        "b": (False, 2),
        "oneshot": (False, 3),
        "x": (False, None),
        "y": (False, None),
    }
    assert marks(board, 0.9, "theoretical_speedup") == {
        "a": (True, 1),
        "b": (True, 1),
        "oneshot": (True, 1),
        "x": (False, None),
        "y": (False, None),
    }
    assert not {c.upper for c in board.comparisons} & {"x", "y"}
    assert not {c.lower for c in board.comparisons} & {"x", "y"}

    md = to_markdown(board)
    titles, rows = _parse_md_table(md)
    for label, note in (("y", "2"), ("a", None)):
        m = ACC_RE.match(rows[label][2])
        assert m and m["note"] == note and bool(m["bold"]) == (note is None)
    # a cell with a failed seed (here a collapse) is printed seed by seed, not as mean ± std
    assert rows["x"][2] == "seeds 99.00 / 99.40 / 99.80 (n=3) [1]"
    assert "- [1] x at 90%: layer collapse: conv2, fc1 (1 of 3 seeds)" in md
    assert "- [2] y at 90%: sparsity 92.00 % > target 90 % + 0.5 pp: not the same comparison" in md
    legend = md.split("## Legend", 1)[1]
    assert "Layer collapse" in legend and "Sparsity overshoot" in legend
    assert "`oneshot` is the floor" in legend

    data = json.loads(to_json(board))
    jx = next(r for r in data["rows"] if r["label"] == "x")["cells"]["0.9"]
    jy = next(r for r in data["rows"] if r["label"] == "y")["cells"]["0.9"]
    assert (jx["left_out"], jx["footnote"], jx["collapsed"]) == (True, 1, {"1": ["conv2", "fc1"]})
    assert (jy["left_out"], jy["footnote"], jy["overshoot"]) == (True, 2, True)
    assert jx["test_accuracy"]["mark"] == {"best_group": False, "rank": None, "best_group_size": 0}
    assert [f["number"] for f in data["footnotes"]] == [1, 2]
    ja = next(r for r in data["rows"] if r["label"] == "a")["cells"]["0.9"]
    assert (ja["left_out"], ja["footnote"], ja["flags"]) == (False, None, [])

    from rich.console import Console

    console = Console(record=True, width=250)
    console.print(render_rich(board))
    text = console.export_text()
    assert "[1] x at 90%: layer collapse: conv2, fc1 (1 of 3 seeds)" in text
    assert "[2] y at 90%: sparsity 92.00 %" in text


def test_a_collapse_counted_without_names_is_still_shown() -> None:
    runs = [rec("a", 0.9, s, 90.0 + s) for s in range(2)]
    runs[0].metrics["collapsed_layers"] = 2.0  # an older record: the count, no names
    board = aggregate(runs)
    flags = board.row("a").cells[0.9].flags()
    assert flags == ["layer collapse: 2 unnamed layer(s) (1 of 2 seeds)"]


def test_figure_zoom_shows_drops_from_dense_on_log_scales_without_collapsed_cells() -> None:
    """Full panel: every cell (x crossed at chance, y ringed); zoom: the drop from dense on a
    log scale, x left out and said so, a method above dense drawn at the floor."""
    from benchsuite.boards.plot import DROP_FLOOR_PP

    runs = flagged_runs() + [rec("z", 0.9, s, 99.5 + s, collapsed="") for s in range(3)]
    fig = plot(aggregate(runs, "flags"))
    full, zoom = fig.axes[:2]
    assert full.get_xscale() == zoom.get_xscale() == "function"  # log of 1 − sparsity
    assert zoom.get_yscale() == "log" and full.get_yscale() == "linear"
    assert {c.get_label() for c in full.containers} == {"a", "b", "oneshot (floor)", "x", "y", "z"}
    drops = {c.get_label(): list(c.lines[0].get_ydata()) for c in zoom.containers}
    assert set(drops) == {"_a", "_b", "_oneshot", "_y", "_z"}  # x: collapsed, left out
    assert drops["_a"] == pytest.approx([99.0 - 96.0])
    assert drops["_y"] == pytest.approx([99.0 - 98.2])
    assert drops["_z"] == [DROP_FLOOR_PP]  # 0.5 above dense: drawn at the floor
    assert any(ln.get_marker() == "X" for ln in full.lines)  # the collapsed cell, crossed
    assert (
        sum(
            ln.get_marker() == "o" and ln.get_markerfacecolor() == "none"
            for ax in (full, zoom)
            for ln in ax.lines
        )
        == 2
    )  # y's overshoot, ringed twice
    notes = " ".join(t.get_text() for t in zoom.texts)
    assert "left out (layer collapse): x at 90%" in " ".join(notes.split())
    legend = [t.get_text() for t in zoom.get_legend().get_texts()]
    assert "layer collapse (not ranked)" in legend and "oneshot (floor)" in legend


def test_tuned_rows_and_the_tuning_section(tmp_path) -> None:
    """A tuned method's targets chose different values but are one row; the board says what was
    searched, over which ranges, with how many trials, and publishes the configurations."""
    from benchsuite.boards.tuning_section import tuning_for
    from benchsuite.core.errors import BadInput

    runs = [rec("dense", 0.0, s, 95.0, tuned="false") for s in range(3)]
    for target, variant in ((0.9, "ramp_end=0.5"), (0.95, "default")):
        runs += [rec("gmp", target, s, 90.0 + s, variant=variant, tuned="true") for s in range(3)]
        runs += [rec("dst", target, s, 89.0 + s, tuned="false") for s in range(3)]
    board = aggregate(runs, experiment="digits-10ep-tuned")
    assert [r.label for r in board.rows] == ["dense", "dst", "gmp (tuned)"]
    assert set(board.row("gmp (tuned)").cells) == {0.9, 0.95}

    def config(index: int, hparams: dict, scores: tuple[float, float]) -> dict:
        return {"index": index, "hparams": hparams, "val_accuracy": sum(scores) / 2}

    chosen = {
        "0.9": {
            "hparams": {"ramp_end": 0.5},
            "chosen": 1,
            "val_accuracy": 91.25,
            "default_val_accuracy": 90.0,
            "configs": [config(0, {}, (90.0, 90.0)), config(1, {"ramp_end": 0.5}, (91.0, 91.5))],
            "trials": 4,
            "finished": 4,
            "space": {"ramp_end": "uniform real in [0.2, 0.9]"},
        },
        "0.95": {
            "hparams": {},
            "chosen": 0,
            "val_accuracy": 90.5,
            "default_val_accuracy": 90.5,
            "configs": [config(0, {}, (90.0, 91.0)), config(1, {"ramp_end": 0.7}, (90.0, 90.5))],
            "trials": 4,
            "finished": 3,
            "space": {"pruning_interval": "uniform integer in [1, 5]"},
        },
    }
    configs = tmp_path / "digits-10ep.json"
    configs.write_text(
        json.dumps(
            {
                "preset": "digits",
                "epochs": 10,
                "dataset": "digits",
                "model": "smallcnn",
                "data": "fp1",
                "configs_per_method": 2,
                "seeds": [1000, 1001],
                "methods": {"gmp": chosen},
            }
        )
    )
    board.tuning = tuning_for(board, root=tmp_path)
    md = to_markdown(board)
    assert "(see **Tuning** below)" in md
    assert "up to 2 configurations per method and target, the defaults first" in md
    assert "the same tuning seeds (1000, 1001, none of them a benchmark seed)" in md
    assert "dst: its only knobs are calibrated per target" in md
    row = next(line for line in md.splitlines() if line.startswith("| gmp |"))
    assert "ramp_end: uniform real in [0.2, 0.9]" in row
    assert "pruning_interval: uniform integer in [1, 5]" in row
    assert "ramp_end=0.5 (val 91.25 % vs defaults 90.00 %; 2 configurations, 4/4 trials)" in row
    assert "the defaults (val 90.50 % vs defaults 90.50 %; 2 configurations, 3/4 trials)" in row
    paths = publish(board, tmp_path / "out")
    published = json.loads((tmp_path / "out" / "digits-10ep-tuned.configs.json").read_text())
    assert published["methods"]["gmp"]["0.9"]["hparams"] == {"ramp_end": 0.5}
    assert tmp_path / "out" / "digits-10ep-tuned.configs.json" in paths
    assert json.loads((tmp_path / "out" / "digits-10ep-tuned.json").read_text())["tuning"]
    assert "digits-10ep-tuned.configs" not in (tmp_path / "out" / "README.md").read_text()

    other = {"preset": "digits", "epochs": 20, "dataset": "digits", "model": "smallcnn"}
    configs.write_text(json.dumps({**other, "data": "fp1", "methods": {}}))
    with pytest.raises(BadInput, match="tuned for epochs 20"):
        tuning_for(board, root=tmp_path)
    with pytest.raises(BadInput, match="cannot read"):
        tuning_for(board, tmp_path / "missing.json")
    assert tuning_for(aggregate(runs[:3], experiment="x")) is None  # no tuned rows


def test_reproduce_lines_leave_out_where_results_go() -> None:
    """Paths and scheduling never change a run's numbers (the run key says what does): the
    published command is what a user types, not the paths of the machine that ran it."""
    from benchsuite.boards.aggregation import reproducing

    ran = (
        "benchsuite run --preset fashion-mnist --methods str --seeds 3 --max-concurrent 1 "
        "--tracking-uri sqlite:////work/board/mlflow.db --experiment e --cache-dir=/w/cache "
        "--no-throughput --cpus-per-trial 2 --retries 1 --in-process --device cpu"
    )
    assert reproducing(ran) == (
        "benchsuite run --preset fashion-mnist --methods str --seeds 3 "
        "--experiment e --cpus-per-trial 2 --device cpu"
    )
    assert reproducing("benchsuite run --hp 'imp.schedule=ft, llr'") == (
        "benchsuite run --hp 'imp.schedule=ft, llr'"
    )


def test_a_dense_only_board_shows_its_accuracy() -> None:
    """``run --methods dense`` has no target column: the board still shows the reference's
    accuracy (one column group without a target), in the terminal and in the markdown."""
    from rich.console import Console

    board = aggregate(
        [rec("dense", 0, s, a, speedup=1.0, sparsity=0.0) for s, a in enumerate(DENSE)]
    )
    assert board.targets == []
    console = Console(record=True, width=200)
    console.print(render_rich(board))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "Method" in line)
    assert "Acc" in header and "Sparsity" in header
    dense = next(line for line in text.splitlines() if line.strip("│ ").startswith("dense"))
    assert "98.50 ± 0.50 (n=3)" in dense and "[97.26, 99.74]" in dense
    md = to_markdown(board)
    assert "| Method | img/s | Acc | CI | Speedup | Measured | Train cost | Sparsity |" in md
    assert "| dense (reference) | 50.0† | 98.50 ± 0.50 (n=3) | [97.26, 99.74] |" in md


def test_measured_speedup_column_marks_and_unavailable_cells() -> None:
    """Measured speedups are cell statistics ranked like the theoretical ones (paired over
    seeds); a cell without a figure says why (‡), and a structured board gets the speed figure."""
    import dataclasses

    from benchsuite.boards.plot import plot_speed, structured

    def timed(r, large, one=None, why=None, pattern=None):
        metrics = dict(r.metrics)
        tags = dict(r.tags)
        params = dict(r.params)
        if large is not None:
            metrics |= {"measured_speedup": large, "measured_speedup_b1": one or large}
            tags |= {"benchsuite.latency_batch": "1024", "benchsuite.latency_dtype": "float32"}
        if why:
            tags["benchsuite.measured_speedup_unavailable"] = why
        if pattern:
            params["pattern"] = pattern
        return dataclasses.replace(r, metrics=metrics, tags=tags, params=params)

    runs = [
        timed(rec("dense", 0, s, 98.0, speedup=1.0, sparsity=0.0), 1.0 + s / 100) for s in range(3)
    ]
    runs += [timed(rec("gmp", 0.5, s, 97.0), 1.0 + s / 100) for s in range(3)]
    runs += [
        timed(rec("l1", 0.5, s, 96.0, variant="channel"), 1.9 + s / 50, 1.2, pattern="channel")
        for s in range(3)
    ]
    why = "no 2:4 sparse kernel on cpu: torch.sparse.to_sparse_semi_structured needs CUDA"
    runs += [
        timed(rec("srste", 0.5, s, 96.5, variant="2:4"), None, why=why, pattern="2:4")
        for s in range(3)
    ]
    board = aggregate(runs, "structured")
    l1 = board.row("l1 (channel)").cells[0.5]
    assert l1.stats["measured_speedup"].mean == pytest.approx(1.92)
    assert l1.marks["measured_speedup"].best  # ahead of gmp's ≈ 1.0 in every seed
    srste = board.row("srste (2:4)").cells[0.5]
    assert "measured_speedup" not in srste.stats and srste.measured_unavailable == why
    md = to_markdown(board)
    row = next(line for line in md.splitlines() if line.startswith("| l1 (channel)"))
    assert "**1.92× / 1.20×**" in row
    assert "n/a‡" in next(line for line in md.splitlines() if line.startswith("| srste (2:4)"))
    assert f"**‡ n/a**: no measured speedup: {why}." in md
    assert "measures ≈ 1.0× whatever its theoretical speedup" in md
    assert board.header["patterns"] == "2:4, channel, unstructured"
    assert board.header["latency"] == "batch 1 and 1024, float32"
    data = json.loads(to_json(board))
    cell = data["rows"][2]["cells"]["0.5"]
    assert cell["measured_speedup"]["mean"] == pytest.approx(1.92)
    assert structured(board) and not structured(aggregate(runs[:6], "plain"))
    fig = plot_speed(board)
    assert [ax.get_xscale() for ax in fig.axes[:2]] == ["log", "log"]


def test_throughput_environment_names_the_thread_count_once():
    """A CPU record's device label already says its threads (``cpu:1 threads``): the board's
    "img/s measured on" header once printed them twice."""
    cpu = Throughput(1900.0, "isolated", ("t1",), "cpu:1 threads", "1")
    gpu = Throughput(9000.0, "isolated", ("t2",), "NVIDIA H100 80GB HBM3", "16")
    assert cpu.environment == "cpu:1 threads"
    assert gpu.environment == "NVIDIA H100 80GB HBM3, 16 threads"
