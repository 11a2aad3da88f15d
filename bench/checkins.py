"""Check-in rounds at scale, and the dispatcher's send rate.

1. One check-in round for 100,000 focal points (in 20 areas): the time from the schedule firing to
   every check-in and its SMS being queued in the outbox (SQLite, then PostgreSQL when reachable).
2. The outbox dispatcher sending those SMS through the official Twilio SDK to a fake Twilio API (a
   real HTTP server on loopback, in this process): SMS handed to the gateway per second, at the
   default concurrency and at 16.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, insert

from app.config import Settings
from app.crypto import attach
from app.db import upgrade
from app.models import Message, Person
from app.services.runtime import Runtime
from bench.common import (
    KEYRING,
    SECRET_KEY,
    any_message,
    count_messages,
    expect,
    postgres_database,
    postgres_reachable,
    postgres_required,
    reader,
    scratch,
)
from bench.forward import Arrivals

FOCAL_POINTS = 100_000
AREAS = 20


def fill(url: str, n: int) -> None:
    """`n` approved focal points in AREAS areas; one in a hundred said STOP."""
    upgrade(url)
    engine = attach(create_engine(url), KEYRING)
    languages = ("fr", "en", "sw")
    rows = [
        {
            "name": f"Focal Point {i}",
            "phone": f"+24381{i:07d}",
            "role": "focal_point",
            "status": "approved",
            "language": languages[i % 3],
            "area": f"Area {i % AREAS}",
            "opted_out": i % 100 == 0,
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        for start in range(0, n, 10_000):
            conn.execute(insert(Person), rows[start : start + 10_000])
    engine.dispose()


def reachable_people(n: int) -> int:
    return n - (n + 99) // 100


def settings(**values: Any) -> Settings:
    """Settings from these values only, not from the environment or a .env file."""
    return Settings(_env_file=None, log_level="WARNING", secret_key=SECRET_KEY, **values)  # type: ignore[call-arg]


def round_time(url: str) -> tuple[float, int]:
    """Seconds for one firing of the default schedule, and the check-ins it queued."""
    runtime = Runtime(settings(database_url=url))
    try:
        started = time.perf_counter()
        queued = runtime.checkins.fire(
            runtime.settings.checkin_schedule, datetime(2026, 11, 25, 6, tzinfo=UTC)
        )
        elapsed = time.perf_counter() - started
    finally:
        runtime.stop()
    return elapsed, queued


def send_rate(url: str, concurrency: int, seconds: float = 10.0) -> float:
    """SMS a second the dispatcher hands to the gateway, over `seconds` or until the outbox is empty."""
    db = reader(url)
    sent = Message.status == "sent"
    queued = (Message.direction == "outbound", Message.status == "queued")
    expect(any_message(db, *queued), "nothing queued to send")
    before = count_messages(db, sent)
    fake = Arrivals()
    runtime = Runtime(
        settings(
            database_url=url,
            gateway="twilio",
            twilio_account_sid="AC" + "1" * 32,
            twilio_auth_token="bench-twilio-token-0123456789abcdef",
            twilio_from="+15005550006",
            twilio_api_base=fake.url,
            dispatch_concurrency=concurrency,
            send_rate="1000",  # the dispatcher's own speed, not a long code's pace (1 SMS/s)
        )
    )
    started = time.perf_counter()
    try:
        runtime.start(intake=False, processor=False, dispatcher=True, scheduler=False)
        while time.perf_counter() - started < seconds and any_message(db, *queued):
            time.sleep(0.2)
    finally:
        runtime.stop()  # the sends in flight finish, and count
        elapsed = time.perf_counter() - started
        fake.server.shutdown()
        fake.server.server_close()
    done = count_messages(db, sent) - before
    db.dispose()
    expect(done > 0, f"the dispatcher sent nothing in {seconds:g} s")
    expect(fake.replies >= done, f"{done} SMS marked sent, {fake.replies} reached the gateway")
    return done / elapsed


def measure(label: str, url: str, n: int, seconds: float) -> dict[int, float]:
    """One round's time, then the dispatcher's rate at each concurrency (returned, by concurrency)."""
    fill(url, n)
    elapsed, queued = round_time(url)
    print(f"  {label + ':':<11} {queued} check-ins queued in {elapsed:.1f} s (target < 30 s)")
    expect(queued == reachable_people(n), f"{queued} check-ins queued for {reachable_people(n)} focal points")
    rates = {}
    for concurrency in (4, 16):
        rates[concurrency] = send_rate(url, concurrency, seconds)
        print(
            f"  {label}, dispatcher at concurrency {concurrency:>2}:"
            f" {rates[concurrency]:.0f} SMS/s handed to the gateway"
        )
    return rates


def main(n: int = FOCAL_POINTS, seconds: float = 10.0) -> None:
    print(
        f"check-in round: {n} focal points in {AREAS} areas (1% opted out), one firing of the schedule;"
        f" then the dispatcher (Twilio SDK -> fake Twilio on loopback, up to {seconds:g} s each)"
    )
    with scratch("checkins") as workdir:
        sqlite = measure("SQLite", f"sqlite:///{workdir}/bench.db", n, seconds)
    if postgres_reachable():
        with postgres_database("checkins") as url:
            pg = measure("PostgreSQL", url, n, seconds)
        ratios = ", ".join(f"{pg[c] / sqlite[c]:.2f} at concurrency {c}" for c in sorted(pg))
        print(f"  dispatcher, PostgreSQL / SQLite: {ratios}")
    else:
        expect(not postgres_required(), "PostgreSQL is not reachable (KENGELE_TEST_REQUIRE_PG=1)")
        print("  PostgreSQL: not reachable, skipped")


def smoke() -> None:
    main(n=1_000, seconds=1.0)


if __name__ == "__main__":
    main()
