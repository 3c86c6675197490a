"""Bad input: one line naming the bad value and the valid choices, exit 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchsuite.cli.app import app

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
        # non-finite and mistyped hyperparameters name the field and the type
        (
            ["--methods", "imp", "--hp", "imp.retrain_fraction=nan"],
            "retrain_fraction='nan': expected a finite number, not nan",
        ),
        (["--methods", "imp", "--hp", "imp.retrain_fraction=inf"], "not inf"),
        (["--methods", "imp", "--hp", "imp.retrain_fraction=-Infinity"], "not -Infinity"),
        (
            ["--methods", "gmp", "--hp", "gmp.pruning_interval=abc"],
            "pruning_interval='abc': expected an integer",
        ),
        (["--methods", "gmp", "--hp", "gmp.pruning_interval=nan"], "expected an integer, not nan"),
        (["--methods", "gmp", "--hp", "gmp.pruning_interval=1.5"], "expected an integer"),
        (["--device", "tpu"], "--device 'tpu'; choose from cpu, cuda"),
        # sparsity patterns
        (["--pattern", "3:2"], "--pattern '3:2' keeps 3 of every 2: N:M needs 1 <= N < M"),
        (["--pattern", "2:2"], "--pattern '2:2' keeps 2 of every 2"),
        (["--pattern", "foo"], "--pattern 'foo' is not a sparsity pattern; choose unstructured"),
        (["--pattern", "2:x"], "--pattern '2:x' is not a sparsity pattern"),
        (
            ["--pattern", "2:4", "--methods", "dpf"],
            "--methods dpf does not train to the 2:4 pattern (it supports unstructured); "
            "for 2:4 choose from",
        ),
        (["--pattern", "channel", "--methods", "srste"], "srste does not train to the channel"),
        (["--methods", "srste"], "--methods srste does not train to the unstructured pattern"),
        (
            ["--pattern", "2:4", "--methods", "gmp", "--sparsity", "0.9"],
            "--sparsity 0.9 with --pattern 2:4: 2:4 keeps 2 of every 4 weights, sparsity 0.5",
        ),
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


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tracking-uri", "not a uri"], "--tracking-uri 'not a uri' is not a tracking URI"),
        (["--tracking-uri", "sqlite:/x.db"], "three slashes"),
        # nothing listens there: fails at once, not after minutes of Ray's reconnects
        (
            ["--address", "127.0.0.1:1", "--tracking-uri", "http://127.0.0.1:9"],
            "--address 127.0.0.1:1: no Ray cluster answers there",
        ),
        (
            ["--address", "nohost", "--tracking-uri", "http://127.0.0.1:9"],
            "--address nohost: give auto, HOST:PORT",
        ),
        (["--tracking-uri", "http://127.0.0.1:9"], "no MLflow server answers there"),
        (["--cpus-per-trial", "nan"], "--cpus-per-trial nan must be > 0"),
        (["--cpus-per-trial", "inf"], "--cpus-per-trial inf must be > 0"),
        (["--gpus-per-trial", "nan"], "--gpus-per-trial nan must be >= 0"),
    ],
)
def test_bad_store_or_cluster_is_one_line(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--methods", "dense", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_address_where_something_else_answers_is_one_line(tmp_path, monkeypatch):
    """A port that answers, but not as Ray (here: HTTP/1): one line, no hang, nothing left."""
    import socket
    import tempfile
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(100)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    before = set(Path(tempfile.gettempdir()).glob("benchsuite-tune-*"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "run",
            "--methods",
            "dense",
            "--address",
            f"127.0.0.1:{port}",
            "--tracking-uri",
            "http://127.0.0.1:9",
        ],
    )
    server.close()
    assert result.exit_code == 2, result.output
    assert "something answers there, but not a Ray cluster" in result.stderr
    assert set(Path(tempfile.gettempdir()).glob("benchsuite-tune-*")) <= before


def test_a_store_that_is_not_a_database_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mlflow.db").write_text("junk " * 100)
    for args in (["run", "--methods", "dense"], ["leaderboard"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "mlflow.db is not a usable SQLite database" in lines[0]
    assert not Path(".benchsuite").exists()


def test_a_read_only_folder_is_one_line_before_training(tmp_path, monkeypatch):
    from benchsuite.store import sqlite as store

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(store.os, "access", lambda path, mode: False)  # as root, chmod is moot
    result = runner.invoke(app, ["run", "--methods", "dense"])
    assert result.exit_code == 2, result.output
    assert f"cannot write in {tmp_path}" in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_bug_is_reported_briefly_with_how_to_report_it(monkeypatch, capsys):
    import benchsuite.cli.app as cli

    def bug() -> None:
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setattr(cli, "report_broken_plugins", bug)
    monkeypatch.setattr(sys, "argv", ["benchsuite", "run"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "TypeError: 'NoneType' object is not subscriptable" in err
    assert "this is a bug in benchsuite; please report it" in err and "Traceback" not in err


def test_ctrl_c_anywhere_in_a_command_exits_130(monkeypatch, capsys):
    import benchsuite.cli.app as cli

    def interrupt() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "report_broken_plugins", interrupt)
    monkeypatch.setattr(sys, "argv", ["benchsuite", "run"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 130
    assert "Traceback" not in capsys.readouterr().err


def test_missing_fashion_mnist_names_the_package(tmp_path):
    result = runner.invoke(
        app, ["run", "--preset", "fashion-mnist", "--data-dir", str(tmp_path / "no")]
    )
    assert result.exit_code == 2
    assert "dataset-fashion-mnist" in result.stderr


@pytest.mark.integration  # a real MLflow store
def test_unknown_experiment_for_leaderboard(tmp_path):
    result = runner.invoke(
        app, ["leaderboard", "--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    )
    assert result.exit_code == 2
    assert "--experiment 'x' has no runs" in result.stderr


def test_the_command_line_imports_no_heavy_library_to_start() -> None:
    """`benchsuite --help` answers at once: torch, Ray and MLflow load inside the commands."""
    code = (
        "import sys, benchsuite.cli; "
        "print(','.join(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "nosuch", "--knob", "x"], "--method: unknown method 'nosuch'; choose from"),
        (
            ["--method", "str", "--knob", "nosuch"],
            "str has no hyperparameter 'nosuch'; choose from",
        ),
        (
            ["--method", "str", "--knob", "weight_decay", "--target", "1.2"],
            "--target 1.2 is outside",
        ),
        (
            ["--method", "str", "--knob", "weight_decay", "--target", "0.8,0.9,x"],
            "--target 'x' is not a number",
        ),
        (
            ["--method", "gmp", "--knob", "weight_decay"],
            "--method gmp reaches the target itself, there is nothing to calibrate; choose a "
            "method whose sparsity emerges from a knob: cs, dst, str",
        ),
        (["--method", "str", "--knob", "weight_decay", "--low", "-1"], "needs both > 0"),
        (["--method", "str", "--knob", "weight_decay", "--high", "1e-3"], "two different"),
        (["--method", "str", "--knob", "weight_decay", "--preset", "nosuch"], "unknown preset"),
    ],
)
def test_calibrate_refuses_bad_input_in_one_line(args, needle):
    base = {"--target": "0.9", "--low": "1e-3", "--high": "2e-3"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    result = runner.invoke(app, ["calibrate", *(part for pair in base.items() for part in pair)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_publish_out_is_checked_before_anything_is_read_or_written(tmp_path, monkeypatch):
    """An existing file, a path under a file, a folder that cannot be written: one line naming
    it, exit 2, before the store is even opened (there is none here)."""
    from benchsuite.cli import checks

    monkeypatch.chdir(tmp_path)
    Path("a-file").write_text("mine")
    cases = [
        ("a-file", "--out a-file is a file, not a folder"),
        ("a-file/boards", "--out a-file/boards: a-file is a file, so no folder can be made"),
    ]
    for out, needle in cases:
        result = runner.invoke(app, ["publish", "--out", out])
        assert result.exit_code == 2 and needle in result.stderr, result.output
    monkeypatch.setattr(checks.os, "access", lambda path, mode: False)  # as root, chmod is moot
    result = runner.invoke(app, ["publish", "--out", "ro/boards"])
    assert result.exit_code == 2, result.output
    assert f"--out ro/boards: cannot write in {Path('.')} (read-only" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert Path("a-file").read_text() == "mine"
