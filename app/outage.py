"""Database outages: which errors mean "the database is away, retry soon" (503), and one log line each.

A request that meets a database that refused a connection, dropped one mid-commit, or is locked
for longer than the busy timeout is answered 503 with `Retry-After`: the provider (or the API
client) tries again and nothing is half-kept. Any other database error is a bug in the service
and stays a 500 with its traceback. While the database is away every request would log the same
error; `Outage` logs one warning when an episode starts and one line when it is over.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("kengele.db")

RETRY_AFTER = 5  # seconds a 503 asks the provider or client to wait
# An episode is over once no failure was seen for this long: a database whose connections are
# dropped every few hundred ms is one outage, not dozens.
QUIET = 5.0

# SQLite primary result codes that are the storage's state, not the service's bug: busy, locked,
# out of memory, I/O error, disk full, cannot open, lock protocol.
_SQLITE_AWAY = frozenset({5, 6, 7, 10, 13, 14, 15})
# PostgreSQL SQLSTATE classes of the same kind: connection exception, insufficient resources
# (too many connections, disk full), operator intervention (shutdown, admin termination, query
# cancelled by a timeout), system error (I/O), and transaction rollback (serialization, deadlock):
# a retry of the whole request can succeed. Everything else (syntax, constraint, data) is a bug.
_PG_AWAY_CLASSES = frozenset({"08", "53", "57", "58", "40"})
_PG_AWAY_STATES = frozenset({"55P03"})  # lock_timeout


def unavailable(exc: BaseException) -> bool:
    """Tell whether an error means the database is away for now (503) rather than a bug (500)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, PoolTimeout):  # every pooled connection busy: overloaded, not broken
            return True
        if isinstance(current, DBAPIError):
            if current.connection_invalidated:
                return True
            current = current.orig
            continue
        if _driver_away(current):
            return True
        current, seen = current.__cause__, seen + 1
    return False


def dropped(exc: BaseException) -> bool:
    """Tell whether the error is a connection lost or refused, which a retry on a fresh one may cure at once.

    Not a lock waited out or a full disk (SQLite's busy timeout already waited 30 s): retrying
    those would only keep the provider waiting past its timeout.
    """
    orig: BaseException | None = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite-only installs
        return False
    return isinstance(orig, psycopg.OperationalError) and orig.sqlstate is None


def _driver_away(exc: BaseException) -> bool:
    """Tell whether a driver's own exception (sqlite3, psycopg) says the database is away."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and (code & 0xFF) in _SQLITE_AWAY
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite-only installs
        return False
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        # No SQLSTATE: the client library's own failure (refused, closed, lost): the connection.
        return state is None or state[:2] in _PG_AWAY_CLASSES or state in _PG_AWAY_STATES
    if isinstance(exc, psycopg.InterfaceError):  # "the connection is closed/lost"
        return "connection" in str(exc)
    return False


def describe(exc: BaseException) -> str:
    """Name the driver's error in one line: its class and first line, never SQL or parameters."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first[:200]}" if first else type(orig).__name__


class Outage:
    """One warning when the database goes away, one line when it is back: never a traceback per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None  # monotonic start of the episode under way
        self.last = 0.0  # monotonic time of its latest failure
        self.failures = 0

    @property
    def down(self) -> bool:
        """Tell whether an outage episode is under way."""
        return self.since is not None

    def failed(self, *, where: str, exc: BaseException) -> None:
        """Note a request or pass that met the database away; warn if this starts an episode."""
        now = time.monotonic()
        with self._lock:
            fresh = self.since is None or now - self.last >= QUIET
            if fresh:
                self.since, self.failures = now, 0
            self.last = now
            self.failures += 1
        if fresh:
            log.warning(
                "database unavailable: answering 503 until it is back",
                extra={"where": where, "error": describe(exc)},
            )

    def succeeded(self) -> None:
        """Note that the database answered; end the episode once it has been quiet for QUIET seconds."""
        if self.since is None:  # the hot path: no lock
            return
        now = time.monotonic()
        with self._lock:
            if self.since is None or now - self.last < QUIET:
                return
            seconds, failures = self.last - self.since, self.failures
            self.since, self.failures = None, 0
        log.info("database back", extra={"outage_seconds": round(seconds, 1), "failures": failures})
