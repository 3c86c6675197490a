"""The tracking store used safely by several commands at once: checked, created and claimed.

Checked: a bad ``--tracking-uri``, a file that is not a database, a folder that cannot be
written are one line (``StoreError``, exit 2) before Ray starts or anything trains.

Created once: MLflow migrates a new SQLite schema on first open; two processes doing that
at once corrupt the file for good. Every open of a SQLite store, and every claim, holds an
exclusive ``flock`` on ``<db>.lock`` beside it.

Claimed once: a run key is trained by one command only. Under the lock a trial looks for a
FINISHED run of its key (done), or a RUNNING one whose claimant lives (someone else is on
it); otherwise it creates its RUNNING run, tagged with the claimant (host, pid, process
start), and trains into it. A RUNNING claim of a process that is gone (same host) is stale:
it is ended KILLED and taken over. A claim from another host cannot be checked and counts as
live. An MLflow server has no shared lock: there the check-then-create is only as atomic as
two nearby requests (see docs/protocol.md, Run identity).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchsuite.core.record import TAG, Tags

if TYPE_CHECKING:
    from benchsuite.store.tracking import TrackedRun, Tracker

SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


class StoreError(ValueError):
    """The tracking store cannot be used: one line naming it, exit code 2."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and ``:memory:``)."""
    if not uri.startswith("sqlite:"):
        return None
    path = uri.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path)


def check_uri(uri: str) -> None:
    """A URI MLflow can open, by its form alone (MLflow's own error is a long traceback)."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.split("+")[0] not in SCHEMES or any(c.isspace() for c in uri):
        raise StoreError(
            f"--tracking-uri {uri!r} is not a tracking URI; give sqlite:///PATH/mlflow.db or "
            "http://HOST:PORT (an MLflow server)"
        )
    if scheme == "sqlite" and not rest.startswith("///"):
        raise StoreError(f"--tracking-uri {uri!r}: a SQLite URI is sqlite:///PATH (three slashes)")
    if scheme in ("http", "https") and not rest.lstrip("/"):
        raise StoreError(f"--tracking-uri {uri!r} names no host; give http://HOST:PORT")


@contextmanager
def locked(uri: str) -> Iterator[None]:
    """Hold the store's exclusive lock (SQLite: ``<db>.lock`` beside it; otherwise none)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    try:
        handle = open(str(db) + ".lock", "a+b")  # noqa: SIM115 - closed below
    except PermissionError:  # a read-only folder: only readers get here (check_store)
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_store(uri: str, *, write: bool = True) -> None:
    """Open the store once, now: create (migrate) it under the lock, or say why it cannot be.

    Raises ``StoreError`` naming the path. ``write=False`` (leaderboards): an existing store
    need only be readable.
    """
    check_uri(uri)
    db = sqlite_path(uri)
    if db is None:
        return
    db = db.resolve()
    _check_sqlite_file(db, write or not db.exists())
    try:
        with locked(f"sqlite:///{db}"):
            if db.exists():
                _open(db)
            else:
                _create(db)
    except OSError as exc:
        raise StoreError(f"--tracking-uri {uri}: cannot lock {db}.lock ({exc.strerror})") from None
    except Exception as exc:  # noqa: BLE001 - MLflow wraps SQLAlchemy's errors in its own
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise StoreError(f"--tracking-uri {uri}: cannot open the store {db}: {reason}") from None


def _open(db: Path) -> None:
    from benchsuite.store.tracking import open_store

    open_store(f"sqlite:///{db}")


def _create(db: Path) -> None:
    """A new store is migrated under another name and renamed into place when complete, so a
    Ctrl-C or a crash while it is created leaves no half-migrated store behind."""
    tmp = db.with_name(f".{db.name}.{os.getpid()}.creating")
    try:
        _open(tmp)
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def _check_sqlite_file(db: Path, write: bool) -> None:
    folder = db.parent
    if not folder.is_dir():
        raise StoreError(f"--tracking-uri: the folder of {db} does not exist")
    if write and not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(
            f"--tracking-uri: cannot write in {folder} (the store {db.name}, its lock and "
            "artifacts go there); run in a writable folder or give --tracking-uri sqlite:///PATH"
        )
    if not db.exists():
        return
    if write and not os.access(db, os.W_OK):
        raise StoreError(f"--tracking-uri: {db} is read-only")
    try:
        with sqlite3.connect(f"file:{db}?mode={'rw' if write else 'ro'}", uri=True) as conn:
            conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"--tracking-uri: {db} is not a usable SQLite database ({exc})") from None


# --------------------------------------------------------------------------- claims


def process_start(pid: int) -> str:
    """The process's start (clock ticks since boot), so a reused pid is not taken for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def claimant(pid: int | None = None) -> dict[str, str]:
    """Who is running a run: this host, this (or the given) process and when it started."""
    pid = os.getpid() if pid is None else pid
    return {
        Tags.CLAIM_HOST: socket.gethostname(),
        Tags.CLAIM_PID: str(pid),
        Tags.CLAIM_START: process_start(pid),
    }


def alive(tags: dict[str, str], prefix: str = "") -> bool:
    """Whether the claimant named in a run's tags still runs (another host: assumed so)."""
    host = tags.get(prefix + Tags.CLAIM_HOST)
    pid = tags.get(prefix + Tags.CLAIM_PID, "")
    if host is None or not pid.isdigit():
        return False  # a run from before claims existed, left RUNNING: stale
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = tags.get(prefix + Tags.CLAIM_START, "")
    return not start or process_start(int(pid)) in ("", start)


def owned_by(tags: dict[str, str], owner: dict[str, str], prefix: str = "") -> bool:
    return all(tags.get(prefix + k) == v for k, v in owner.items() if k != Tags.CLAIM_START)


def claim(
    tracker: Tracker,
    key: str,
    kind: str,
    name: str,
    params: dict[str, Any],
    tags: dict[str, str],
) -> TrackedRun | str:
    """The RUNNING run of ``key`` this process now owns, or why it must not train it.

    ``tags`` carry the claimant (``claimant()``); without them this process is the claimant.
    """
    from benchsuite.store.tracking import TrackedRun

    tags = {**claimant(), **tags}
    with locked(tracker.uri):
        for r in tracker.runs_of(key, kind):
            if r.finished:
                return "already finished"
            if r.status == "RUNNING" and alive(r.tags, TAG):
                return (
                    f"being run by another command (host {r.tag(Tags.CLAIM_HOST)}, "
                    f"pid {r.tag(Tags.CLAIM_PID)})"
                )
            if r.status == "RUNNING":
                TrackedRun(tracker.client, r.run_id).end(
                    "KILLED", "left RUNNING by a command that is gone; taken over"
                )
        return tracker.start_run(name, params, {**tags, Tags.CLAIMED_AT: str(int(time.time()))})
