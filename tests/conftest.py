"""Test harness: every database test runs on SQLite and on PostgreSQL; no traffic leaves loopback."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app.config import Settings
from app.db import upgrade
from app.logs import JsonFormatter
from app.main import create_app
from app.models import Base
from tests import leaks, server
from tests.fakes import FakeProvider, start_fake
from tests.helpers import AT_SECRET, TWILIO_TOKEN
from tests.server import TEST_SECRET_KEY

PG_ADMIN_URL = os.environ.get("KENGELE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("KENGELE_TEST_REQUIRE_PG") == "1" or os.environ.get("CI") == "true"
ADMIN_TOKEN = "test-admin-token-0123456789"


# -- the harness refuses non-loopback network access -------------------------------------------
_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = ipaddress.ip_address(socket.gethostbyname(host)) if host == "localhost" else None
        if ip is None or not ip.is_loopback:
            raise ConnectionRefusedError(f"tests may only reach loopback, not {host!r}")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


# -- every log line of the run, through the app's formatter, checked for numbers at the end ------
@pytest.fixture(scope="session", autouse=True)
def session_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Write every record of the run (INFO and up) as the app would; at the end, grep it all.

    The servers' own log files (tests/server.py) are read too. A line holding 7 digits in a row,
    or 7 consecutive digits of a phone a property test wrote (in any notation), fails the run.
    """
    path = tmp_path_factory.mktemp("logs") / "session.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    yield path
    root.removeHandler(handler)
    root.setLevel(level)
    handler.close()
    bad = leaks.scan_logs([path, *server.LOGS], leaks.PHONES)
    if bad:
        pytest.fail(f"{len(bad)} log lines hold a number:\n" + "\n".join(bad[:20]), pytrace=False)


# -- databases -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def throwaway_pg(prefix: str) -> Iterator[str]:
    """A migrated PostgreSQL database of its own, dropped afterwards (no server: skipped; in CI failed)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required here but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name}
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throw-away PostgreSQL database for this test run, migrated once."""
    with throwaway_pg("kengele_test") as url:
        yield url


def _truncate(url: str) -> None:
    """Empty every table and restart every id: DELETE, not TRUNCATE (which costs 130-200 ms a test
    here, for new files on disk; DELETE of a test's few rows costs about 30 ms)."""
    engine = create_engine(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]  # children before parents
    with engine.begin() as conn:
        sequences = conn.execute(
            text("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")
        ).scalars()
        statements = [f'DELETE FROM "{name}"' for name in tables]
        statements += [f'ALTER SEQUENCE "{name}" RESTART' for name in sequences]
        conn.execute(text("; ".join(statements)))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database: SQLite file or PostgreSQL (both in CI)."""
    if request.param == "sqlite":
        path = tmp_path / "kengele.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _truncate(url)
    return url


@pytest.fixture
def make_settings(db_url: str) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "database_url": db_url,
            "admin_token": ADMIN_TOKEN,
            "secret_key": TEST_SECRET_KEY,
            "gateway": "console",
            # Outside development a provider's webhooks exist only with their check configured.
            "at_webhook_secret": AT_SECRET,
            "public_url": "http://testserver",
            "log_format": "text",
            "dispatch_poll": 0.05,
            "send_backoff_base": 0.01,
            "send_backoff_max": 0.05,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# -- fake providers (real HTTP servers on loopback) that the official SDKs send to -------------
@pytest.fixture
def twilio_fake() -> Iterator[FakeProvider]:
    fake = start_fake("twilio")
    yield fake
    fake.stop()


@pytest.fixture
def at_fake() -> Iterator[FakeProvider]:
    fake = start_fake("africastalking")
    yield fake
    fake.stop()


@pytest.fixture
def providers(
    make_settings: Callable[..., Settings], twilio_fake: FakeProvider, at_fake: FakeProvider
) -> Callable[..., Settings]:
    def build(order: str = "twilio,africastalking", **overrides: object) -> Settings:
        return make_settings(
            gateway=order,
            twilio_account_sid="AC" + "1" * 32,
            twilio_auth_token=TWILIO_TOKEN,
            twilio_from="+15005550006",
            twilio_api_base=twilio_fake.url,
            at_username="kengele",
            at_api_key="at-key-0123456789",
            at_sender="KENGELE",
            at_api_base=at_fake.url,
            # Tests of sending, not of pacing: the providers' default rates (1/s) would slow them.
            **({"send_timeout": 1.0, "send_max_attempts": 2, "send_rate": "100"} | overrides),
        )

    return build
