"""Bad input: one line naming the bad value and the valid choices, exit 2, nothing written."""

import pytest
from typer.testing import CliRunner

from benchsuite.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sparsity", "0"], "--sparsity 0 is outside (0, 1)"),
        (["--sparsity", "1"], "--sparsity 1 is outside (0, 1)"),
        (["--sparsity", "1.5"], "--sparsity 1.5 is outside (0, 1)"),
        (["--sparsity", "-0.1"], "--sparsity -0.1 is outside (0, 1)"),
        (["--sparsity", "abc"], "--sparsity 'abc' is not a number"),
        (["--sparsity", "0.9,abc"], "--sparsity 'abc' is not a number"),
        (["--methods", "nosuch"], "unknown method 'nosuch'; choose from all, "),
        (["--methods", "imp,nosuch"], "unknown method 'nosuch'"),
        (["--preset", "nosuch"], "unknown preset 'nosuch'; choose from "),
        (["--epochs", "0"], "--epochs 0 is not a budget"),
        (["--methods", "imp", "--epochs", "3"], "imp: a budget of 3 epochs"),
        (["--methods", "bimp", "--epochs", "2"], "bimp: a budget of 2 epochs"),
        (["--preset", "fashion-mnist", "--data-dir", "/nonexistent/fm"], "/nonexistent/fm"),
        (["--preset", "cifar10-resnet56"], "cifar10"),
        (["--model", "nosuch"], "unknown model 'nosuch'"),
        (
            ["--hp", "imp.schedule=xyz", "--methods", "imp"],
            "choose from ft, lrw, slr, clr, llr, allr",
        ),
        (["--hp", "imp.nosuch=1", "--methods", "imp"], "imp has no hyperparameter 'nosuch'"),
        (["--hp", "gmp.x=1", "--methods", "imp"], "method 'gmp' is not in --methods"),
        (["--hp", "imp.schedule", "--methods", "imp"], "is not METHOD.NAME=V1"),
        (["--seeds", "0"], "--seeds 0 must be >= 1"),
        (["--device", "tpu"], "--device 'tpu'; choose from cpu, cuda"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, needle):
    db = tmp_path / "m.db"
    result = runner.invoke(app, ["run", *args, "--tracking-uri", f"sqlite:///{db}"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert not db.exists()
    assert not (tmp_path / ".benchsuite").exists()


def test_missing_fashion_mnist_names_the_package(tmp_path):
    result = runner.invoke(
        app, ["run", "--preset", "fashion-mnist", "--data-dir", str(tmp_path / "no")]
    )
    assert result.exit_code == 2
    assert "dataset-fashion-mnist" in result.stderr


def test_unknown_experiment_for_leaderboard(tmp_path):
    result = runner.invoke(
        app, ["leaderboard", "--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    )
    assert result.exit_code == 2
    assert "--experiment 'x' has no runs" in result.stderr
