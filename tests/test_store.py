"""The store under concurrent commands: created once, checked up front, each run key
trained once. Several-process tests are bounded by timeouts and use tiny workloads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchsuite.store import sqlite as store
from benchsuite.store.claims import claim
from benchsuite.store.owners import claimant
from benchsuite.store.sqlite import StoreError, check_store, check_uri
from benchsuite.store.tracking import TAG, Tracker
from benchsuite.training.loop import RunConfig
from benchsuite.training.runner import execute, key_for

ROOT = Path(__file__).resolve().parent.parent


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def finish(procs: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, out
        outs.append(out)
    return outs


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.slow  # several interpreters importing torch and MLflow
def test_concurrent_commands_create_a_fresh_store_once(tmp_path):
    """Four processes open a store that does not exist yet, at once: none fails, and the store
    works afterwards (MLflow's migrations raced and broke it for good before the lock)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = """
        import sys
        from benchsuite.store.sqlite import check_store
        from benchsuite.store.tracking import Tracker
        check_store(sys.argv[1])
        run = Tracker(sys.argv[1], "exp").start_run("r", {"p": 1}, {"run_key": sys.argv[2]})
        run.end("FINISHED")
    """
    finish([spawn(code, uri, f"k{i}") for i in range(4)])
    runs = MlflowClient(tracking_uri=uri).search_runs(
        [MlflowClient(tracking_uri=uri).get_experiment_by_name("exp").experiment_id]
    )
    assert sorted(r.data.tags[TAG + "run_key"] for r in runs) == ["k0", "k1", "k2", "k3"]


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("not a uri", "is not a tracking URI"),
        ("nothing", "is not a tracking URI"),
        ("ftp://host/x", "is not a tracking URI"),
        ("sqlite:/x.db", "three slashes"),
        ("http://", "names no host"),
    ],
)
def test_malformed_tracking_uris_are_one_line(uri, needle):
    with pytest.raises(StoreError, match=needle):
        check_uri(uri)


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_text("not a database\n" * 10)
    with pytest.raises(StoreError, match=f"{db} is not a usable SQLite database"):
        check_store(f"sqlite:///{db}")
    with pytest.raises(StoreError, match="not a usable"):
        check_store(f"sqlite:///{db}", write=False)
    assert db.read_text().startswith("not a database")  # left as it was


def test_an_unwritable_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(store.os, "access", lambda path, mode: False)  # root may write anywhere
    with pytest.raises(StoreError, match=f"cannot write in {tmp_path}"):
        check_store(f"sqlite:///{tmp_path}/mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(StoreError, match="does not exist"):
        check_store(f"sqlite:///{tmp_path}/no/such/folder/mlflow.db")


@pytest.mark.integration  # a real MLflow store
def test_a_run_key_is_claimed_once(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "exp")
    first = claim(tracker, "k", "run", "r", {}, {"run_key": "k", "kind": "run"})
    assert not isinstance(first, str)
    again = claim(tracker, "k", "run", "r", {}, {"run_key": "k", "kind": "run"})
    assert isinstance(again, str) and "being run by another command" in again
    assert not tracker.mark_stale({"k"})  # a live claim is not stale
    first.end("FINISHED")
    assert claim(tracker, "k", "run", "r", {}, {"run_key": "k"}) == "already finished"
    # another kind (tuning trials) is another claim
    assert not isinstance(
        claim(tracker, "k", "tune", "r", {}, {"run_key": "k", "kind": "tune"}), str
    )


@pytest.mark.integration  # a real MLflow store
def test_a_dead_commands_claim_is_taken_over(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "exp")
    gone = {**claimant(), "claim_pid": str(dead_pid()), "run_key": "k", "kind": "run"}
    stale = tracker.start_run("r", {}, gone)
    legacy = tracker.start_run("r", {}, {"run_key": "k2", "kind": "run"})  # before claims
    mine = claim(tracker, "k", "run", "r", {}, {"run_key": "k", "kind": "run"})
    assert not isinstance(mine, str)
    client = tracker.client
    assert client.get_run(stale.run_id).info.status == "KILLED"
    assert "taken over" in client.get_run(stale.run_id).data.tags[TAG + "error"]
    assert tracker.mark_stale({"k2"}) == 1
    assert client.get_run(legacy.run_id).info.status == "KILLED"
    assert client.get_run(mine.run_id).info.status == "RUNNING"


@pytest.mark.integration  # a real MLflow store
def test_ending_leftovers_spares_other_commands_runs(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "exp")
    other = {**claimant(), "claim_pid": "1", "claim_start": "x"}
    theirs = tracker.start_run("r", {}, {**other, "run_key": "a"})
    ours = tracker.start_run("r", {}, {**claimant(), "run_key": "b"})
    assert tracker.fail_running(None, "interrupted", status="KILLED", owner=claimant())
    assert tracker.client.get_run(ours.run_id).info.status == "KILLED"
    assert tracker.client.get_run(theirs.run_id).info.status == "RUNNING"


@pytest.mark.slow  # several interpreters importing torch and MLflow
def test_two_commands_at_once_train_each_run_once(tmp_path, tiny_preset):
    """The same two runs started by two processes at once on a fresh store: each run key is
    FINISHED exactly once; the other process reports it SKIPPED."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = """
        import sys, torch
        torch.set_num_threads(1)
        from benchsuite.data.base import load_dataset
        from benchsuite.presets import load_preset
        from benchsuite.training.runner import execute
        from benchsuite.store.sqlite import check_store
        from benchsuite.store.tracking import Tracker
        from benchsuite.training.loop import RunConfig
        data = load_dataset("synthetic", n=256, n_test=32, shape=(1, 8, 8))
        preset = load_preset("digits").replace(dataset="synthetic", epochs=1)
        check_store(sys.argv[1])
        tracker = Tracker(sys.argv[1], "exp")
        for seed in (0, 1):
            status, _, why = execute(RunConfig(preset, "dense", 0.0, seed), tracker, dataset=data)
            print(seed, status, why)
    """
    outs = finish([spawn(code, uri) for _ in range(2)])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    finished = Counter(r.data.tags[TAG + "run_key"] for r in runs if r.info.status == "FINISHED")
    assert len(finished) == 2 and set(finished.values()) == {1}, outs
    assert all(r.info.status == "FINISHED" for r in runs), outs  # no duplicate record at all
    lines = "".join(outs).splitlines()
    assert sum("FINISHED" in line for line in lines) == 2, outs
    assert sum("SKIPPED" in line for line in lines) == 2, outs


@pytest.mark.integration
def test_execute_skips_a_finished_key(tmp_path, tiny_preset, tiny_data):
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "exp")
    config = RunConfig(tiny_preset.replace(epochs=1), "dense", 0.0, 0)
    assert execute(config, tracker, dataset=tiny_data)[0] == "FINISHED"
    status, result, why = execute(config, tracker, dataset=tiny_data)
    assert (status, result, why) == ("SKIPPED", None, "already finished")
    assert len(tracker.runs_of(key_for(config, tiny_data))) == 1


def foreign_sqlite(path: Path) -> bytes:
    """Someone else's SQLite database: one table ``runs(x)`` with a row."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs(x)")
        conn.execute("INSERT INTO runs VALUES (1)")
    conn.close()
    return path.read_bytes()


def test_a_foreign_sqlite_file_is_refused_and_left_byte_for_byte(tmp_path):
    """A SQLite file that is not an MLflow store is refused before MLflow's migrations could
    add their tables to it, by the writer's check, the reader's check and the Tracker."""
    db = tmp_path / "mlflow.db"
    before = foreign_sqlite(db)
    uri = f"sqlite:///{db}"
    for write in (True, False):
        with pytest.raises(StoreError, match=r"not an MLflow store \(its tables: runs\)"):
            check_store(uri, write=write)
    with pytest.raises(StoreError, match="not an MLflow store"):
        Tracker(uri, "exp")
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # no lock, no artifacts


def test_the_cli_refuses_a_foreign_store_before_anything_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from benchsuite.cli.app import app

    monkeypatch.chdir(tmp_path)
    before = foreign_sqlite(tmp_path / "mlflow.db")
    for args in (["run", "--methods", "dense", "--epochs", "1"], ["leaderboard"], ["publish"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "is a SQLite database but not an MLflow store" in result.output
        assert (tmp_path / "mlflow.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_reading_commands_create_nothing_where_there_is_no_store(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from benchsuite.cli.app import app

    monkeypatch.chdir(tmp_path)
    for args, what in (
        (["leaderboard"], "no experiment has runs"),
        (["publish"], "no experiment has runs"),
        (["leaderboard", "--experiment", "x"], "--experiment 'x' has no runs"),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"{what}: there is no store at sqlite:///mlflow.db" in result.output
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no lock, no leaderboards/


def hand_store(uri: str) -> None:
    """A store with one experiment of two finished runs, as benchsuite records them."""
    tracker = Tracker(uri, "exp")
    for method, target, acc in (("dense", 0.0, 97.0), ("gmp", 0.9, 95.0)):
        run = tracker.start_run(
            method,
            {"method": method, "variant": "default", "target_sparsity": target, "seed": 0},
            {"run_key": method, "kind": "run"},
        )
        run.log_metrics({"test_accuracy": acc, "sparsity": target, "train_steps": 10})
        run.end("FINISHED")


@pytest.mark.integration  # a real MLflow store
def test_a_leaderboard_reads_without_a_lock_or_a_write(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from benchsuite.cli.app import app

    hand_store(f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "mlflow.db.lock").unlink()
    before = (tmp_path / "mlflow.db").read_bytes()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["leaderboard"])
    assert result.exit_code == 0, result.output
    assert "gmp" in result.output and "95.00" in result.output
    assert (tmp_path / "mlflow.db").read_bytes() == before
    assert not (tmp_path / "mlflow.db.lock").exists()


def unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.slow  # the CLI in a subprocess, in its own mount namespace
@pytest.mark.skipif(not unshare_works(), reason="needs unshare -rm (user and mount namespaces)")
def test_a_store_on_a_read_only_mount_is_read(tmp_path):
    """``leaderboard`` and ``publish --out`` elsewhere on a store whose folder is mounted
    read-only (a real read-only mount, in a user and mount namespace of its own)."""
    store = tmp_path / "store"
    store.mkdir()
    hand_store(f"sqlite:///{store}/mlflow.db")
    (store / "mlflow.db.lock").unlink()
    before = (store / "mlflow.db").read_bytes()
    mount = tmp_path / "ro"
    mount.mkdir()
    cli = f"{sys.executable} -m benchsuite.cli"
    script = (
        f"set -e; mount --bind {store} {mount}; mount -o remount,bind,ro {mount}; cd {mount}; "
        f"{cli} leaderboard; {cli} publish --out {tmp_path}/boards; "
        f"{cli} publish --out {mount}/boards 2>&1 || echo exit $?; "
        f"if touch {mount}/probe 2>/dev/null; then echo writable; else echo read-only; fi"
    )
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "gmp" in out.stdout and out.stdout.rstrip().endswith("read-only")
    assert f"error: --out {mount}/boards: cannot write in {mount} (read-only" in out.stdout
    assert "exit 2" in out.stdout  # publishing into the read-only mount: one line, exit 2
    assert (tmp_path / "boards" / "exp.md").exists()
    assert (store / "mlflow.db").read_bytes() == before
    assert sorted(p.name for p in store.iterdir()) == ["mlflow.db"]  # no lock, nothing new


@pytest.mark.integration  # a real MLflow store
def test_publish_that_cannot_write_a_file_is_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from benchsuite.cli.app import app

    hand_store(f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "boards" / "exp.md").mkdir(parents=True)  # where the markdown would go
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["publish", "--out", "boards"])
    assert result.exit_code == 2, result.output
    assert "error: --out boards: cannot write boards/exp.md (Is a directory)" in result.stderr
