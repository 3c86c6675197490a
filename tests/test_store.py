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
