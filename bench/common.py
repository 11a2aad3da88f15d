"""What every benchmark needs: checks that fail loudly, percentiles, scratch space, a throwaway database."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import ColumnElement, Engine, create_engine, func, select, text

from app.crypto import Keyring, attach
from app.models import Message
from tests.server import TEST_SECRET_KEY

# Every benchmark encrypts phone numbers under this key, the servers it starts included.
SECRET_KEY = TEST_SECRET_KEY
KEYRING = Keyring([SECRET_KEY])

PG_URL = os.environ.get("KENGELE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class BenchError(AssertionError):
    """A benchmark's result is wrong (not slow: wrong), so its numbers mean nothing."""


def expect(condition: bool, message: str) -> None:
    """Fail the benchmark unless `condition` holds."""
    if not condition:
        raise BenchError(message)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values` by rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def reader(url: str) -> Engine:
    """An engine that only reads, beside a running server: plain transactions, no write lock taken."""
    return attach(create_engine(url), KEYRING)


def count_messages(engine: Engine, *where: ColumnElement[bool]) -> int:
    """Rows of `messages` matching every condition."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Message).where(*where)).scalar_one())


def any_message(engine: Engine, *where: ColumnElement[bool]) -> bool:
    """Whether some row of `messages` matches every condition (cheap enough to poll)."""
    with engine.connect() as conn:
        return conn.execute(select(Message.id).where(*where).limit(1)).first() is not None


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A directory for one benchmark's databases and logs: removed after a success, kept after a failure."""
    path = Path(tempfile.mkdtemp(prefix=f"kengele-bench-{prefix}-"))
    try:
        yield path
    except BaseException:
        print(f"  (databases and server logs kept in {path})")
        raise
    shutil.rmtree(path, ignore_errors=True)


def postgres_reachable(url: str = PG_URL) -> bool:
    engine = create_engine(url)
    try:
        engine.connect().close()
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def postgres_required() -> bool:
    """CI sets this: a PostgreSQL benchmark may not be skipped there (as for the tests)."""
    return os.environ.get("KENGELE_TEST_REQUIRE_PG") == "1"


@contextmanager
def postgres_database(label: str, url: str = PG_URL) -> Iterator[str]:
    """A throwaway PostgreSQL database for one run (its URL), dropped afterwards whatever happens."""
    name = f"kengele_bench_{label}_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url.rsplit("/", 1)[0] + "/" + name
        finally:
            with admin.connect() as conn:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": name},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()
