"""Engine, sessions and migrations for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Engine, Insert, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

import migrations
from app.crypto import Keyring, attach

log = logging.getLogger("kengele.db")

PG_CONNECT_TIMEOUT = 3  # seconds


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_durability = threading.local()


@contextmanager
def durable() -> Iterator[None]:
    """Transactions begun inside are fsynced on commit even where others are not (SQLite)."""
    _durability.on = True
    try:
        yield
    finally:
        _durability.on = False


def make_engine(
    url: str,
    *,
    keyring: Keyring | None = None,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 10,
    max_overflow: int = 10,
    background_checkpoints: bool = False,
) -> Engine:
    """Create an engine with the pragmas and pool the service needs on each backend.

    `keyring` seals and opens the encrypted columns (app/crypto.py); an engine without one can
    still migrate an empty database, read and write everything else.
    """
    engine = _make_engine(url, sqlite_synchronous, pool_size, max_overflow, background_checkpoints)
    return attach(engine, keyring) if keyring is not None else engine


def private_file(path: str) -> None:
    """Create the SQLite file readable by its owner only; warn if an existing one is not.

    SQLite gives the -wal and -shm files the mode of the database file, so they are private too.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileNotFoundError:  # no such folder: SQLite says so when it connects, as it always did
        return
    except FileExistsError:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "the database file %s can be read by other users (mode %o): `chmod 600` it", path, mode
            )


def _make_engine(
    url: str, sqlite_synchronous: str, pool_size: int, max_overflow: int, background_checkpoints: bool
) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path:
            private_file(path)
        # SQLite has one writer at a time. One connection per process makes threads queue in
        # Python (woken at once) instead of in SQLite's busy handler (which sleeps up to 100 ms),
        # and BEGIN IMMEDIATE takes the write lock up front, so a transaction that reads and then
        # writes never fails on a lock upgrade when another process (the CLI) writes too.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA busy_timeout=30000")
            if background_checkpoints:  # a Checkpointer thread does it, off the commit path
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()
            # SQLite's own lower() folds ASCII only ("Élodie" stays "Élodie"); PostgreSQL's folds
            # every letter. Searches by name and sign-in compare lower() to Python's str.lower().
            # No index is built on lower(), so replacing it changes no stored order.
            dbapi_conn.create_function("lower", 1, _lower, deterministic=True)

        # With synchronous=FULL, only what the service promised is durable pays for an fsync:
        # inbound messages (committed before the provider gets its 2xx, inside `durable()`).
        # Other commits are written to the WAL without waiting for the disk; the next durable
        # commit fsyncs them too. After a power cut the few lost are redone: a message not
        # marked processed is processed again, an outbound row not marked sent is sent again.
        relaxed = "NORMAL" if sqlite_synchronous == "FULL" else sqlite_synchronous

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            level = sqlite_synchronous if getattr(_durability, "on", False) else relaxed
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # pre_ping: a connection the server dropped (restart, failover, admin kill) is replaced at
    # checkout, so the service recovers by itself. connect_timeout: an unreachable host answers
    # the request 503 in seconds, well inside the providers' webhook timeouts (libpq waits forever).
    connect_args = {} if "connect_timeout=" in url else {"connect_timeout": PG_CONNECT_TIMEOUT}
    return create_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True, connect_args=connect_args
    )


class Checkpointer:
    """Copies SQLite's write-ahead log into the database file from its own thread and connection.

    SQLite otherwise checkpoints inside whichever commit crosses 1,000 WAL pages, so that one
    commit (and every webhook waiting on it) pays for copying and fsyncing megabytes. A PASSIVE
    checkpoint never waits for readers or writers.
    """

    def __init__(self, path: str, every: float = 1.0) -> None:
        self.path = path
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kengele-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=10)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self.every):
                try:
                    conn = conn or sqlite3.connect(self.path, timeout=30, isolation_level=None)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    log.warning("wal checkpoint failed", exc_info=True)
        finally:
            if conn is not None:
                conn.close()


def _lower(value: object) -> object:
    """lower() as PostgreSQL has it, for every letter: what SQLite's is given for its connections."""
    return value.lower() if isinstance(value, str) else value


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL, None for other databases and in-memory ones."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?")[0]
    return path if path and path != ":memory:" else None


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


T = TypeVar("T")


def per_transaction(session: Session, key: str, read: Callable[[], T]) -> T:
    """`read()`, once per transaction of `session`: what a batch's messages all ask for alike.

    On PostgreSQL each query is a round trip; a batch of 32 alerts asking who the officers are,
    or whether anyone subscribed to changes, asks once. A new transaction reads again.
    """
    current = session.get_transaction()
    kept = session.info.get(key)
    if current is not None and kept is not None and kept[0] is current:
        return kept[1]
    value = read()
    session.info[key] = (current, value)
    return value


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session, one transaction: committed on success, rolled back on any error."""
    with factory() as session, session.begin():
        yield session


@lru_cache(maxsize=32)
def insert_ignoring_conflicts(dialect_name: str, table: Table) -> Insert:
    """An INSERT that skips rows violating a unique constraint (provider retries, idempotency keys).

    Built once per dialect and table, and executed with parameters: building a statement costs
    several times more than running it, and this one is on the hottest paths.
    """
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    raise RuntimeError(f"unsupported database {dialect_name}")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, *, keyring: Keyring | None = None) -> None:
    """Apply every migration to the database at `url`; `keyring` encrypts rows stored in clear (0004)."""
    path = sqlite_path(url)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(url)
    cfg.attributes["keyring"] = keyring
    command.upgrade(cfg, "head")
    if cfg.attributes.get("sealed"):  # numbers were stored in clear before: leave no old copy behind
        compact(url, cfg.attributes["sealed"])


def compact(url: str, tables: list[str]) -> None:
    """Rewrite the tables (SQLite: the whole file, and empty its WAL) so no old copy of a row remains.

    An UPDATE leaves the previous version of a row in free pages (SQLite) or as a dead tuple
    (PostgreSQL) until the space is reused: after numbers are sealed, their clear text would stay
    readable in the file. Locks the tables while it runs (VACUUM FULL) and needs autocommit.
    """
    path = sqlite_path(url)
    if path:
        file = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            file.execute("VACUUM")
            file.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            file.close()
        return
    if url.startswith("sqlite"):
        return
    engine = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM FULL " + ", ".join(f'"{t}"' for t in tables))
    finally:
        engine.dispose()
