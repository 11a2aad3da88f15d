"""Check-in rounds at scale, and the dispatcher's send rate.

1. One check-in round for 100,000 focal points (in 20 areas): the time from the schedule firing to
   every check-in and its SMS being queued in the outbox (SQLite, then PostgreSQL when reachable).
2. The outbox dispatcher sending those SMS through the official Twilio SDK to a fake Twilio API (a
   real HTTP server on loopback, in this process): SMS handed to the gateway per second, at the
   default concurrency and at 16.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text

from app.config import Settings
from app.db import upgrade
from app.models import Message, Person
from app.services.runtime import Runtime
from bench.forward import Arrivals

FOCAL_POINTS = 100_000
AREAS = 20
PG_URL = os.environ.get("KENGELE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def fill(url: str, n: int) -> None:
    upgrade(url)
    engine = create_engine(url)
    languages = ("fr", "en", "sw")
    rows = [
        {
            "name": f"Focal Point {i}",
            "phone": f"+24381{i:07d}",
            "phone_valid": True,
            "role": "focal_point",
            "status": "approved",
            "language": languages[i % 3],
            "area": f"Area {i % AREAS}",
            "active": True,
            "opted_out": i % 100 == 0,  # one in a hundred said STOP
            "created_at": datetime.now(UTC),
            "updated_at": datetime.now(UTC),
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        for start in range(0, n, 10_000):
            conn.execute(insert(Person), rows[start : start + 10_000])
    engine.dispose()


def round_time(url: str) -> tuple[float, int]:
    runtime = Runtime(Settings(_env_file=None, database_url=url, log_level="WARNING"))
    started = time.perf_counter()
    queued = runtime.checkins.fire(runtime.settings.checkin_schedule, datetime(2026, 11, 25, 6, tzinfo=UTC))
    elapsed = time.perf_counter() - started
    runtime.stop()
    return elapsed, queued


def send_rate(url: str, concurrency: int, seconds: float = 10.0) -> float:
    fake = Arrivals()
    settings = Settings(
        _env_file=None,
        database_url=url,
        gateway="twilio",
        twilio_account_sid="AC" + "1" * 32,
        twilio_auth_token="bench-twilio-token-0123456789abcdef",
        twilio_from="+15005550006",
        twilio_api_base=fake.url,
        dispatch_concurrency=concurrency,
        log_level="WARNING",
    )
    runtime = Runtime(settings)
    engine = create_engine(url)
    with engine.connect() as conn:
        before = conn.execute(
            select(text("count(*)")).select_from(Message).where(Message.status == "sent")
        ).scalar()
    runtime.dispatcher.start()
    time.sleep(seconds)
    runtime.dispatcher.stop()
    with engine.connect() as conn:
        after = conn.execute(
            select(text("count(*)")).select_from(Message).where(Message.status == "sent")
        ).scalar()
    engine.dispose()
    runtime.stop()
    fake.server.shutdown()
    return (int(after or 0) - int(before or 0)) / seconds


def reachable(url: str) -> bool:
    try:
        create_engine(url).connect().close()
        return True
    except Exception:
        return False


def main(n: int = FOCAL_POINTS) -> None:
    print(f"check-in round: {n} focal points in {AREAS} areas (1% opted out), one firing of the schedule")
    workdir = Path(tempfile.mkdtemp(prefix="kengele-bench-checkins-"))
    sqlite_url = f"sqlite:///{workdir}/bench.db"
    fill(sqlite_url, n)
    elapsed, queued = round_time(sqlite_url)
    print(f"  SQLite:     {queued} check-ins queued in {elapsed:.1f} s (target < 30 s)")
    pg_url = None
    if reachable(PG_URL):
        name = f"kengele_bench_{os.getpid()}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        pg_url = PG_URL.rsplit("/", 1)[0] + "/" + name
        fill(pg_url, n)
        elapsed, queued = round_time(pg_url)
        print(f"  PostgreSQL: {queued} check-ins queued in {elapsed:.1f} s (target < 30 s)")
    print(
        "dispatcher: SMS handed to the gateway per second (Twilio SDK -> fake Twilio on loopback, 10 s each)"
    )
    for concurrency in (4, 16):
        print(f"  SQLite, concurrency {concurrency:>2}: {send_rate(sqlite_url, concurrency):.0f} SMS/s")
    if pg_url is not None:
        for concurrency in (4, 16):
            print(f"  PostgreSQL, concurrency {concurrency:>2}: {send_rate(pg_url, concurrency):.0f} SMS/s")
        with admin.connect() as conn:
            conn.execute(
                text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            )
            conn.execute(text(f'DROP DATABASE "{name}"'))
        admin.dispose()


if __name__ == "__main__":
    main()
