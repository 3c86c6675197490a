"""The Table 2 study on a hand-made board (no MLflow) whose statistics are computed by hand,
its grid, and the command end to end on digits.

The hand-made 90 % column: BIMP's accuracy is 80 + e per seed (e = 0, 0.3, −0.2); DPF is BIMP
+ 1, DNW BIMP − 2 (constant paired differences: no spread, p = 0), GMP BIMP + d with
d = 0.5, −0.1, 0.2 (mean 0.2, sample std of d − its mean 0.3, so every pair with GMP has
t = mean·√3/0.3 on 2 degrees of freedom, where the two-sided p is 1 − |t|/√(2 + t²)). The
floor is BIMP − 0.3, RigL BIMP + 0.1.
"""

from __future__ import annotations

import json
import math

import pytest

from benchsuite.boards.leaderboard import UnfairComparison
from benchsuite.core.errors import BadInput
from benchsuite.core.record import RunRecord
from benchsuite.studies.table2 import (
    aggregate_table2,
    is_table2,
    parse_methods,
    publish,
    render_rich,
    table2_configs,
    to_json,
    to_markdown,
)
from benchsuite.studies.table2_plot import table2_plot

NOISE = (0.0, 0.3, -0.2)
GMP_D = (0.5, -0.1, 0.2)
COMMAND = "benchsuite study table2 --preset digits --seeds 3 --sparsity 0.9"
EXPERIMENT = "digits-10ep-table2"


def p_df2(t: float) -> float:
    """Two-sided p of Student's t on 2 degrees of freedom (its CDF has a closed form)."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


def t_gmp(mean: float) -> float:
    return mean * math.sqrt(3) / 0.3


def rec(method, target, seed, acc, *, i=[0], command=COMMAND, **extra) -> RunRecord:  # noqa: B006
    i[0] += 1
    tags = {
        "benchsuite.kind": "run",
        "benchsuite.version": "0.1.0",
        "benchsuite.run_key": f"{method}|{target}|{seed}",
        "benchsuite.data": "fp",
        "benchsuite.device": "cpu:1 threads",
        "benchsuite.command": command,
        **extra.get("tags", {}),
    }
    return RunRecord(
        run_id=f"r{i[0]}",
        start_time=1_700_000_000_000 + i[0] * 1000,
        params={
            "method": method,
            "variant": extra.get("variant", "default"),
            "target_sparsity": f"{target:g}",
            "preset": "digits",
            "dataset": "digits",
            "model": "small-cnn",
            "epochs": "10",
            "batch_size": "32",
            "seed": str(seed),
        },
        metrics={
            "test_accuracy": acc,
            "sparsity": target,
            "theoretical_speedup": 4.0,
            "train_steps": 400.0,
            "collapsed_layers": float(len(extra.get("collapsed", ()))),
        },
        tags=tags,
    )


def throughput(method, rounds, *, i=[0]) -> RunRecord:  # noqa: B006
    i[0] += 1
    return RunRecord(
        run_id=f"t{i[0]}",
        start_time=1_800_000_000_000 + i[0],
        params={"method": method, "variant": "default", "preset": "digits"},
        metrics={"img_per_s": sum(rounds) / len(rounds)},
        tags={
            "benchsuite.kind": "throughput",
            "benchsuite.device": "cpu:1 threads",
            "benchsuite.threads": "1",
            "benchsuite.img_per_s_rounds": json.dumps(list(rounds)),
        },
    )


def records(collapse: bool = True) -> list[RunRecord]:
    offsets = {
        "bimp": (0.0, 0.0, 0.0),
        "dpf": (1.0, 1.0, 1.0),
        "dnw": (-2.0, -2.0, -2.0),
        "gmp": GMP_D,
        "oneshot": (-0.3, -0.3, -0.3),
        "rigl": (0.1, 0.1, 0.1),
    }
    out = []
    for method, off in offsets.items():
        for seed, (e, o) in enumerate(zip(NOISE, off)):
            collapsed = ("layer3.conv",) if collapse and method == "dnw" and seed == 0 else ()
            tags = {"benchsuite.collapsed": ",".join(collapsed)}
            out.append(rec(method, 0.9, seed, 80 + e + o, collapsed=collapsed, tags=tags))
    out += [rec("dense", 0.0, s, 85.0 + e) for s, e in enumerate(NOISE)]
    base = (1000.0, 1010.0, 990.0)
    for method, off in (("bimp", 0), ("dpf", 50), ("gmp", -100), ("dnw", -600)):
        out.append(throughput(method, [b + off for b in base]))
    return out


def test_a_column_against_the_paper_by_hand():
    board = aggregate_table2(records(), EXPERIMENT)
    col = next(c for c in board.columns if c.column == "90%")
    assert col.paper_order == ["dnw", "dpf", "bimp", "gmp"]  # 74.29 > 74.05 > 73.53 > 72.80
    assert col.board_order == ["dpf", "gmp", "bimp", "dnw"]
    # pairs (paper order): 2 concordant (dpf-bimp, dpf-gmp) and 4 discordant of 6: τ = −1/3;
    # exact p for n = 4: inversion counts 0..6 occur 1,3,5,6,5,3,1 times in 24 orders, and
    # |τ| ≥ 1/3 leaves out only the 6 orders with 3 inversions: p = 18/24
    assert col.tau == pytest.approx(-1 / 3) and col.tau_p == pytest.approx(0.75)
    pairs = {(p.upper, p.lower): p for p in col.pairs}
    p_dnw_gmp, p_dpf_gmp, p_bimp_gmp = (p_df2(t_gmp(m)) for m in (2.2, 0.8, 0.2))
    assert pairs[("dnw", "gmp")].p == pytest.approx(p_dnw_gmp)  # 0.00613
    assert pairs[("dpf", "gmp")].p == pytest.approx(p_dpf_gmp)  # 0.0438: below α before Holm
    # Holm over 6: three p = 0, then 3·0.00613, 2·0.0438, 1·0.368
    expected = {
        ("dnw", "dpf"): ("disagrees", 0.0),
        ("dnw", "bimp"): ("disagrees", 0.0),
        ("dpf", "bimp"): ("agrees", 0.0),
        ("dnw", "gmp"): ("disagrees", 3 * p_dnw_gmp),
        ("dpf", "gmp"): ("within noise", 2 * p_dpf_gmp),
        ("bimp", "gmp"): ("within noise", p_bimp_gmp),
    }
    assert {k: (p.status, pytest.approx(p.p_holm)) for k, p in pairs.items()} == expected
    assert pairs[("dnw", "dpf")].diff == pytest.approx(-3.0)
    assert pairs[("bimp", "gmp")].reversed_by_mean and not pairs[("dpf", "gmp")].reversed_by_mean
    floor = {f.method: f.status for f in col.floor}
    assert floor == {"dnw": "below", "dpf": "above", "bimp": "above", "gmp": "within noise"}
    gmp_floor = next(f for f in col.floor if f.method == "gmp")
    assert gmp_floor.p_holm == pytest.approx(p_df2(t_gmp(0.5)))  # the largest p: times 1


def test_the_generated_sentences():
    board = aggregate_table2(records(), EXPERIMENT)
    text = "\n".join(board.findings)
    assert board.headline.startswith(
        "Kendall's τ between the paper's order and the board's: 90% τ = -0.33 (p = 0.75). Of 6 "
        "method pairs: 1 in the paper's order beyond noise, 3 reversed beyond noise, 2 within "
        "noise (paired t-tests over seeds, Holm-corrected per column, α = 0.05)"
    )
    assert (
        "90%: the paper's order DNW 74.29 > DPF 74.05 > BIMP 73.53 > GMP 72.80; the board's "
        "(by mean) DPF 81.03 > GMP 80.23 > BIMP 80.03 > DNW 78.03. Kendall's τ = -0.33 (p = "
        "0.75, 4 methods): more pairs reversed than in the paper's order, not significant at "
        "α = 0.05."
    ) in text
    assert (
        "90%: of 6 pairs, in the paper's order beyond noise: 1; reversed beyond noise: 3; within "
        "noise (order not established by these seeds): 2, of them 1 in the paper's order by mean "
        "and 1 reversed (paired t-tests, Holm-corrected, α = 0.05)."
    ) in text
    assert (
        "90%: the small scale disagrees with the paper: GMP is above DNW by 2.20 points "
        "(Holm-adjusted p = 0.0184), where the paper has DNW 1.49 points above GMP."
    ) in text
    assert "DPF is above DNW by 3.00 points (Holm-adjusted p = 0)" in text
    assert (
        "90%: against the one-shot floor (paired t-tests, Holm over 4 methods): above it beyond "
        "noise: DPF and BIMP; within noise of it: GMP; below it beyond noise: DNW."
    ) in text
    # img/s: the same order as the paper's, every difference constant over the rounds
    assert (
        "img/s: of 6 pairs, in the paper's order beyond noise: 6; reversed beyond noise: 0; "
        "within noise (order not established by these timing rounds): 0 (paired t-tests"
    ) in text
    assert "Kendall's τ = 1.00 (p = 0.0833, 4 methods)" in text  # 2 of 24 orders have |τ| = 1
    assert (
        "DNW's training throughput relative to BIMP's: 0.40× here (400 vs 1000 img/s), 0.36× "
        "in the paper (530 vs 1454)."
    ) in text
    assert "DNW at 90%: layer collapse: layer3.conv (1 of 3 seeds)" in text
    assert "RigL (not in the paper's table; a reference row, never ranked) would place by " in text
    assert "at 90%: 80.13, place 3 of 5." in text
    assert "the board's top three by mean: 90%: DPF, GMP and BIMP (2 of the paper's three)" in text


def test_within_noise_is_never_agreement():
    """Every pair within noise of another: nothing confirmed, nothing contradicted."""
    recs = [r for r in records(collapse=False) if r.params["method"] in ("bimp", "gmp")]
    board = aggregate_table2(recs)
    text = "\n".join(board.findings)
    assert "in the paper's order beyond noise: 0; reversed beyond noise: 0; within noise" in text
    assert "90%: no pair is ordered beyond noise, so this column neither confirms nor " in text
    one_seed = aggregate_table2([r for r in recs if r.seed == 0])
    col = next(c for c in one_seed.columns if c.column == "90%")
    assert [p.status for p in col.pairs] == ["untested"]
    assert "; untested (fewer than 2 shared seeds): 1" in "\n".join(one_seed.findings)


def test_layout_marks_and_reference_rows():
    board = aggregate_table2(records(), EXPERIMENT)
    assert [r.method for r in board.rows] == [
        "bimp",
        "gmp",
        "dpf",
        "dnw",
        "dense",
        "oneshot",
        "rigl",
    ]
    marks = {r.method: r.cells[0.9].marks["test_accuracy"] for r in board.rows if 0.9 in r.cells}
    # among the eight: DNW is footnoted (collapse); the best's family is DPF − BIMP (no spread:
    # p = 0) and DPF − GMP (p = 0.0438, the larger of two: Holm leaves it), so DPF's best group
    # is DPF alone; GMP − BIMP (diffs 0.5, −0.1, 0.2) is noise: both second. RigL and the floor
    # are never ranked
    assert marks["dpf"].best and marks["dpf"].group_size == 1
    assert not marks["gmp"].best and not marks["bimp"].best
    assert marks["gmp"].rank == marks["bimp"].rank == 2
    assert marks["rigl"].rank is None and not marks["rigl"].best
    assert marks["oneshot"].rank is None and marks["dnw"].rank is None
    md = to_markdown(board)
    assert md.startswith("# Table 2 study (the paper's layout): digits-10ep-table2")
    assert "| Method | img/s | 90% Acc | 90% Speedup | 90% Sparsity |" in md
    assert "| DPF | **1050** | **81.03 ± 0.25** | **4.00×** | 90.00% |" in md
    assert "| BIMP | 1000 ² | 80.03 ± 0.25 ² |" in md
    assert "| DNW | 400 ⁴ | seeds 78.00 / 78.30 / 77.80 [1] |" in md
    assert "| RigL (reference) | — | 80.13 ± 0.25 | 4.00× | 90.00% |" in md
    assert "| One-shot (floor) |" in md and "| Dense (reference) | — | 85.03 ± 0.25 |" in md
    assert "| STR | 1396 | 70.66 (at 75.34%) | 70.70 (at 80.93%) | 70.13 |" in md  # the paper's
    assert COMMAND in md
    table = render_rich(board)
    assert table.row_count == 7


def test_json_plot_publish_and_fairness(tmp_path):
    board = aggregate_table2(records(), EXPERIMENT)
    data = json.loads(to_json(board))
    assert data["schema"] == "benchsuite.table2/1"
    assert [r["role"] for r in data["rows"]][-3:] == ["reference", "floor", "reference"]
    col = data["columns"][0]
    assert col["column"] == "90%" and col["tau"] == pytest.approx(-1 / 3)
    assert data["paper"]["test_accuracy"]["0.9"]["dnw"] == 74.29
    assert len(table2_plot(board).axes) == 2  # 90 % and img/s
    paths = publish(board, tmp_path)
    first = [p.read_bytes() for p in paths]
    assert [p.read_bytes() for p in publish(board, tmp_path)] == first  # byte-identical
    assert "[digits-10ep-table2](digits-10ep-table2.md)" in (tmp_path / "README.md").read_text()
    unfair = records() + [rec("gmp", 0.9, 3, 80.0)]
    unfair[-1].metrics["train_steps"] = 500.0
    with pytest.raises(UnfairComparison, match="train_steps"):
        publish(aggregate_table2(unfair), tmp_path)


def test_which_experiments_are_table2_and_what_is_left_out():
    assert is_table2(records())
    assert not is_table2([rec("gmp", 0.9, 0, 80.0, command="benchsuite run --methods gmp")])
    extra = [
        rec("cs", 0.9, 0, 70.0, command="benchsuite run --methods cs"),
        rec("gmp", 0.9, 0, 70.0, variant="pruning_interval=2"),
    ]
    board = aggregate_table2(records() + extra)
    assert {r.method for r in board.rows} == {
        "bimp",
        "dpf",
        "dnw",
        "gmp",
        "dense",
        "oneshot",
        "rigl",
    }
    assert any("left out: cs, gmp (pruning_interval=2)" in n for n in board.notes)
    none = aggregate_table2([rec("gmp", 0.95, s, 80.0 + s) for s in range(2)])
    assert none.headline.startswith("None of the board's sparsities is one of the paper's")


def test_grid_and_input(tiny_preset, tiny_data):
    assert parse_methods("rigl, GMP,bimp") == ["bimp", "gmp", "rigl"]  # the board's order
    assert len(parse_methods("all")) == 11
    with pytest.raises(BadInput, match="--methods cs: choose from all, bimp, gmp"):
        parse_methods("gmp,cs")
    preset = tiny_preset.replace(epochs=5)
    configs = table2_configs(preset, tiny_data, [0.7, 0.9], ["gmp", "dense", "oneshot"], [0, 1])
    assert len(configs) == 2 * 2 + 2 + 2 * 2  # dense once per seed
    assert {c.method for c in configs} == {"gmp", "dense", "oneshot"}
    assert all(c.hparams == () for c in configs)  # default hyperparameters
    with pytest.raises(BadInput, match="bimp: a budget of 4 epochs"):
        table2_configs(tiny_preset, tiny_data, [0.9], ["bimp"], [0])


@pytest.mark.slow
def test_study_table2_runs_resumes_and_publishes_on_digits(tmp_path):
    import os
    import subprocess
    import sys

    def benchsuite(*args):
        return subprocess.run(
            [sys.executable, "-m", "benchsuite.cli", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "COLUMNS": "200"},
        )

    study = (
        "study",
        "table2",
        "--preset",
        "digits",
        "--epochs",
        "5",
        "--seeds",
        "2",
        "--sparsity",
        "0.9",
        "--methods",
        "gmp,dpf,oneshot",
        "--in-process",
    )
    done = benchsuite(*study)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 finished, 0 failed" in done.stdout
    again = benchsuite(*study, "--no-throughput")
    assert again.returncode == 0 and "6 skipped" in again.stdout
    published = benchsuite("publish", "--experiment", "digits-5ep-table2", "--out", "boards")
    assert published.returncode == 0, published.stdout + published.stderr
    md = (tmp_path / "boards" / "digits-5ep-table2.md").read_text()
    assert md.startswith("# Table 2 study (the paper's layout): digits-5ep-table2")
    assert "90%: the paper's order DPF 74.05 > GMP 72.80" in md
