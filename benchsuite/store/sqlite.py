"""The tracking store's file checked, created and locked, so several commands can share it.

Checked: a bad ``--tracking-uri``, a file that is not a database, a SQLite database that is
not an MLflow store (checked read-only, before MLflow's migrations could add their tables to
it), a folder that cannot be written are one line (``StoreError``, exit 2) before Ray starts
or anything trains.

Read without being written: a command that only reads (``leaderboard``, ``publish``) opens the
file read-only (``read_only_uri``), takes no lock and creates nothing, so it works on a store
on a read-only mount and leaves a folder without a store as it was.

Created once: MLflow migrates a new SQLite schema on first open; two processes doing that
at once corrupt the file for good. Every open of a SQLite store, and every claim
(``claims.py``), holds an exclusive ``flock`` on ``<db>.lock`` beside it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")
# Tables every MLflow store has had since its first schema (with alembic's version table): a
# SQLite file holding tables but not these is someone else's database.
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def no_store_yet(uri: str) -> bool:
    """A SQLite store whose file does not exist yet: nothing has run there, and reading it
    must not create it."""
    return is_sqlite(uri) and not Path(uri.removeprefix("sqlite:///")).exists()


def absolute_uri(uri: str) -> str:
    """A relative sqlite path means the command's directory, wherever a trial runs."""
    if is_sqlite(uri):
        path = uri.removeprefix("sqlite:///")
        if path and not os.path.isabs(path) and path != ":memory:":
            return "sqlite:///" + os.path.abspath(path)
    return uri


class StoreError(ValueError):
    """The tracking store cannot be used: one line naming it, exit code 2."""


class NoStore(StoreError):
    """There is no store to read (no file, or an empty database): nothing has run there."""


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


def read_only_uri(uri: str) -> str:
    """The URI MLflow reads a SQLite store through without any write (SQLite's ``mode=ro``):
    a reader cannot create, migrate or change it, whatever MLflow tries. Spelled with the
    driver (``sqlite+pysqlite``) because MLflow makes the "parent folder" of a ``sqlite:///``
    path, which for a ``file:`` URI is a folder named ``file:`` in the working directory."""
    db = sqlite_path(uri)
    if db is None:
        return uri
    return f"sqlite+pysqlite:///file:{quote(str(db.resolve()), safe='/')}?mode=ro&uri=true"


def check_store(uri: str, *, write: bool = True) -> None:
    """Open the store once, now: create (migrate) it under the lock, or say why it cannot be.

    Raises ``StoreError`` naming the path. ``write=False`` (leaderboards): an existing MLflow
    store, opened read-only, with no lock; a missing or empty one is an error, never created.
    """
    check_uri(uri)
    db = sqlite_path(uri)
    if db is None:
        return
    db = db.resolve()
    if not write:
        _check_readable(uri, db)
        return
    _check_sqlite_file(db, write=True)
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


def _check_readable(uri: str, db: Path) -> None:
    """A store to read: it exists, is an MLflow store, and MLflow opens it read-only."""
    if not db.exists():
        raise NoStore(
            f"there is no store at {uri} (no file {db}); run `benchsuite run` first, or give "
            "--tracking-uri of an existing store"
        )
    if not store_tables(db):
        raise NoStore(f"{db} is an empty database, not an MLflow store yet (nothing has run there)")
    try:
        open_store(read_only_uri(uri))
    except Exception as exc:  # noqa: BLE001 - MLflow wraps SQLAlchemy's errors in its own
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise StoreError(f"--tracking-uri {uri}: cannot read the store {db}: {reason}") from None


def store_tables(db: Path) -> set[str]:
    """The tables of an existing SQLite file, read-only (``StoreError`` when the file is not a
    SQLite database, or is one that is not an MLflow store): nothing is written to it."""
    try:
        with sqlite3.connect(f"file:{quote(str(db), safe='/')}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"--tracking-uri: {db} is not a usable SQLite database ({exc})") from None
    tables = {name for (name,) in rows}
    if tables and not MLFLOW_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
        raise StoreError(
            f"--tracking-uri: {db} is a SQLite database but not an MLflow store (its tables: "
            f"{shown}); give the path of an MLflow store or of a new file"
        )
    return tables


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
    store_tables(db)


def check_mlflow_file(uri: str) -> None:
    """Refuse an existing SQLite file that is not an MLflow store before MLflow opens it (its
    migrations would add their tables to the user's file); other stores pass."""
    db = sqlite_path(uri)
    if db is not None and db.exists():
        store_tables(db)


def open_store(uri: str) -> None:
    """Open the store once: a new SQLite store is created (its schema migrated) here, quietly
    (the migrations' log lines are not the user's news)."""
    import logging

    from mlflow.tracking import MlflowClient

    log = logging.getLogger("mlflow.store.db.utils")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    finally:
        log.setLevel(level)
