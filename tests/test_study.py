"""The Table 1 study board on hand-made run records (no MLflow), and its grid."""

from __future__ import annotations

import json

import pytest

from benchsuite.boards.leaderboard import UnfairComparison
from benchsuite.core.record import RunRecord
from benchsuite.execution.grid import BadInput
from benchsuite.studies.table1 import (
    aggregate_study,
    is_study,
    parse_budgets,
    parse_schedules,
    publish,
    render_rich,
    table1_configs,
    to_json,
    to_markdown,
)
from benchsuite.studies.table1_plot import study_plot as plot

SCHEDULES = ("ft", "lrw", "slr", "clr", "llr", "allr")
NOISE = (0.0, 0.3, -0.2)  # per seed, shared by every schedule (paired)
DENSE = 1000  # T·I of the hand-made preset
COMMAND = "benchsuite study table1 --preset digits --seeds 3"


def rec(schedule, target, budget, seed, acc, *, steps=None, i=[0]) -> RunRecord:  # noqa: B006
    i[0] += 1
    total = DENSE + round(budget * DENSE) if steps is None else steps
    return RunRecord(
        run_id=f"r{i[0]}",
        start_time=1_700_000_000_000 + i[0] * 1000,
        params={
            "method": "imp-retrain",
            "variant": f"retrain_budget={budget},schedule={schedule}",
            "target_sparsity": f"{target:g}",
            "preset": "digits",
            "dataset": "digits",
            "model": "small-cnn",
            "epochs": "10",
            "batch_size": "32",
            "lr": "0.1",
            "seed": str(seed),
            "hp.schedule": schedule,
            "hp.retrain_budget": str(budget),
        },
        metrics={
            "test_accuracy": acc,
            "sparsity": target,
            "theoretical_speedup": 3.0,
            "train_steps": float(total),
        },
        tags={
            "benchsuite.kind": "run",
            "benchsuite.version": "0.1.0",
            "benchsuite.run_key": f"{schedule}|{target}|{budget}|{seed}",
            "benchsuite.data": "fp",
            "benchsuite.device": "cpu:1 threads",
            "benchsuite.command": COMMAND,
        },
    )


def accuracies() -> dict[tuple[str, float, float], list[float]]:
    """Four columns: ALLR first (clear), within noise of LLR, behind CLR, first again."""
    base = {"ft": 80.0, "lrw": 80.0, "slr": 84.0, "clr": 85.0, "llr": 85.5, "allr": 86.0}
    out = {}
    for t in (0.9, 0.95):
        for b in (0.0222, 0.1111):
            for s in SCHEDULES:
                out[(s, t, b)] = [base[s] + e for e in NOISE]
    out[("allr", 0.9, 0.1111)] = [85.5 + e + d for e, d in zip(NOISE, (-0.5, 0.4, -0.2))]
    out[("clr", 0.95, 0.0222)] = [87.0 + e for e in NOISE]
    out[("allr", 0.95, 0.0222)] = [87.0 + e - d for e, d in zip(NOISE, (1.0, 1.1, 0.9))]
    return out


def records(acc=None) -> list[RunRecord]:
    acc = acc or accuracies()
    return [rec(s, t, b, seed, v) for (s, t, b), vals in acc.items() for seed, v in enumerate(vals)]


def test_layout_rows_columns_and_steps():
    board = aggregate_study(records(), "digits-10ep-table1")
    assert board.schedules == list(SCHEDULES)  # Table 1's row order
    assert board.targets == [0.9, 0.95] and board.budgets == [0.0222, 0.1111]
    assert board.retrain_steps == {0.0222: 22, 0.1111: 111} and board.dense_steps == DENSE
    assert board.header["retraining"] == "2.22% = 22, 11.11% = 111"
    assert not board.problems
    cell = board.cell("allr", 0.9, 0.0222)
    assert cell.n == 3 and cell.stats["test_accuracy"].mean == pytest.approx(86.0 + 0.1 / 3)
    md = to_markdown(board)
    assert "| Schedule | 90% · 2.22% | 90% · 11.11% | 95% · 2.22% | 95% · 11.11% |" in md
    rows = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ")][1:]
    assert rows == ["| FT", "| LRW", "| SLR", "| CLR", "| LLR", "| ALLR"]
    assert COMMAND in md


def test_marks_come_from_the_leaderboards_corrected_tests():
    board = aggregate_study(records())
    # 90 % · 2.22 %: every schedule apart by a constant paired difference → ranks 1, 2, 3, ...
    marks = {s: board.cell(s, 0.9, 0.0222).marks["test_accuracy"] for s in ("allr", "llr", "clr")}
    assert [(m.best, m.rank) for m in marks.values()] == [(True, 1), (False, 2), (False, 3)]
    # 90 % · 11.11 %: no corrected test separates ALLR from LLR: both in the best group
    assert board.cell("llr", 0.9, 0.1111).marks["test_accuracy"].best
    assert board.cell("allr", 0.9, 0.1111).marks["test_accuracy"].best
    md = to_markdown(board)
    assert "**86.03 ± 0.25**" in md and "85.53 ± 0.25 ²" in md


def test_allr_per_column_and_the_headline():
    board = aggregate_study(records())
    status = {(c.target, c.budget): (c.allr, c.leader, c.vs_llr) for c in board.columns}
    assert status == {
        (0.9, 0.0222): ("first", "allr", "ahead"),
        (0.9, 0.1111): ("not separated", "llr", "not separated"),
        (0.95, 0.0222): ("behind", "clr", "ahead"),
        (0.95, 0.1111): ("first", "allr", "ahead"),
    }
    assert board.headline.startswith(
        "ALLR has the highest mean in 2 of 4 cells (paper: 9 of 9, ALLR has the highest mean in "
        "every cell of its Table 1). Against LLR, ALLR's mean is lower in 1 of 4 cells; a "
        "Holm-corrected paired t-test separates ALLR behind LLR in 0 and ahead of it in 3"
    )
    assert "FT and LRW have the two lowest means in 4 of 4 cells" in board.headline
    text = "\n".join(board.findings)
    assert "90% · 2.22%: ALLR has the highest mean; ALLR (+0.50 points) is separated ahead" in text
    assert (
        "95% · 2.22%: CLR has the highest mean; ALLR 1.00 points below it, separated behind it "
        "(corrected p = "
    ) in text
    assert (
        "90% · 11.11%: LLR has the highest mean; ALLR 0.10 points below it, not separated" in text
    )


def test_allr_initial_lr_is_published_per_cell():
    recs = records()
    for r in recs:
        if r.params["hp.schedule"] == "allr":
            r.metrics["allr_initial_lr"] = 0.25 * float(r.params["lr"])
    board = aggregate_study(recs)
    assert all(c.allr_lr == pytest.approx(0.25) for c in board.columns)
    assert "ALLR's initial LR 0.25 × η_max" in board.findings[0]
    assert "ALLR's initial learning rate after the prune is 0.25–0.25 × η_max" in board.headline


def test_ft_and_lrw_at_the_highest_sparsity_and_shortest_budget():
    board = aggregate_study(records())
    text = "\n".join(board.findings)
    assert (
        "FT and LRW at 95% · 2.22% (highest sparsity, shortest budget): FT behind (7.00 "
        "points below CLR, corrected p = 0)"
    ) in text
    assert "as in the paper" in text
    assert "FT and LRW give identical accuracies seed by seed in 4 of 4 cells" in text
    acc = accuracies()
    acc[("ft", 0.95, 0.0222)] = [87.0 + e - d for e, d in zip(NOISE, (0.3, -0.3, 0.1))]
    text = "\n".join(aggregate_study(records(acc)).findings)
    assert "FT not separated" in text and "this board does not show what the paper shows" in text


def test_json_plot_and_publish(tmp_path):
    board = aggregate_study(records(), "digits-10ep-table1")
    data = json.loads(to_json(board))
    assert data["schema"] == "benchsuite.study/1" and len(data["cells"]) == 24
    assert data["retrain_steps"] == {"0.0222": 22, "0.1111": 111}
    assert data["columns"][0]["allr"] == "first"
    assert len(plot(board).axes) == 2
    render_rich(board)
    paths = publish(board, tmp_path)
    first = [p.read_bytes() for p in paths]
    assert [p.read_bytes() for p in publish(board, tmp_path)] == first  # byte-identical
    index = (tmp_path / "README.md").read_text()
    assert "[digits-10ep-table1](digits-10ep-table1.md)" in index


def test_unequal_steps_within_a_budget_are_unfair(tmp_path):
    recs = records()
    recs.append(rec("ft", 0.9, 0.0222, 3, 80.0, steps=DENSE + 30))
    board = aggregate_study(recs)
    assert any("2.22%" in p and "train_steps" in p for p in board.problems)
    with pytest.raises(UnfairComparison):
        publish(board, tmp_path)


def test_is_study():
    assert is_study(records()[:1])
    other = RunRecord("x", params={"method": "imp"}, tags={"benchsuite.kind": "run"})
    assert not is_study([other])
    assert not is_study(records()[:1] + [other])  # mixed: the leaderboard flags the budgets


def test_grid_and_input(tiny_preset, tiny_data):
    configs = table1_configs(
        tiny_preset, tiny_data, [0.9, 0.95], [0.1, 0.2], ["ft", "allr"], [0, 1]
    )
    assert len(configs) == 2 * 2 * 2 * 2
    assert {c.method for c in configs} == {"imp-retrain"}
    assert {dict(c.hparams)["retrain_budget"] for c in configs} == {"0.1", "0.2"}
    assert parse_budgets("0.1111, 0.0222,0.0222") == [0.0222, 0.1111]
    assert parse_schedules("ALLR,ft") == ["ft", "allr"]
    with pytest.raises(BadInput, match="--budgets 0 must be"):
        parse_budgets("0")
    with pytest.raises(BadInput, match="--schedules xyz: choose from ft, lrw"):
        parse_schedules("ft,xyz")
    with pytest.raises(BadInput, match="retrain_budget=0.001"):
        table1_configs(tiny_preset, tiny_data, [0.9], [0.001], ["ft"], [0])


@pytest.mark.slow
def test_study_command_runs_resumes_and_publishes_on_digits(tmp_path):
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

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
        "table1",
        "--preset",
        "digits",
        "--epochs",
        "2",
        "--seeds",
        "2",
        "--sparsity",
        "0.9",
        "--budgets",
        "0.05",
        "--schedules",
        "ft,allr",
        "--max-concurrent",
        "1",
    )
    done = benchsuite(*study)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 finished, 0 failed" in done.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("digits-2ep-table1")
    runs = client.search_runs([exp.experiment_id], "tags.`benchsuite.kind` = 'run'")
    assert {r.data.metrics["train_steps"] for r in runs} == {2 * 40 + 4}  # 0.05 · 80 = 4 steps
    assert sorted(r.data.tags["benchsuite.cached_dense"] for r in runs) == [
        "false",
        "false",
        "true",
        "true",
    ]  # one dense run per seed
    again = benchsuite(*study)
    assert again.returncode == 0 and "4 skipped" in again.stdout
    published = benchsuite("publish", "--experiment", "digits-2ep-table1", "--out", "boards")
    assert published.returncode == 0, published.stdout + published.stderr
    md = (tmp_path / "boards" / "digits-2ep-table1.md").read_text()
    assert md.startswith("# Retraining study (Table 1 layout): digits-2ep-table1")
    assert "benchsuite study table1 --preset digits --epochs 2" in md
    assert "| Schedule | 90% · 5% |" in md


def test_one_seed_is_untested_not_within_noise():
    recs = [r for r in records() if r.seed == 0]
    board = aggregate_study(recs)
    text = "\n".join(board.findings)
    assert "90% · 2.22%: ALLR has the highest mean; ALLR (+0.50 points) is untested" in text
    assert board.cell("allr", 0.9, 0.0222).marks["test_accuracy"].rank is None


def test_a_tie_for_the_highest_mean_counts_as_first():
    acc = accuracies()
    acc[("llr", 0.9, 0.0222)] = list(acc[("allr", 0.9, 0.0222)])
    board = aggregate_study(records(acc))
    col = next(c for c in board.columns if (c.target, c.budget) == (0.9, 0.0222))
    assert (col.allr, col.leader, col.vs_llr) == ("first", "llr", "not separated")
