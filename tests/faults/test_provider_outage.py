"""A provider outage against a real `kengele serve`: 5xx, then timeouts, then 429 with Retry-After.

The server sends through Africa's Talking's official SDK to the fake provider, paced at 10 SMS/s.
Check-ins and replies are queued before the outage, forwards and escalations during it. When the
provider recovers: nothing is lost (every SMS is sent, once), forwards and escalations go before
the check-ins still waiting, no second holds more than 10 requests, and after each 429 nothing
reaches the provider before its Retry-After is over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from app.config import Settings
from app.db import transaction
from app.enums import Purpose
from app.models import Message
from app.services.outbox import enqueue
from app.services.runtime import Runtime
from tests.fakes import FakeProvider, Received
from tests.helpers import wait_for
from tests.server import Server

pytestmark = pytest.mark.slow  # a real server, timed against the provider's clock: run alone (make test)

RATE = 10
RETRY_AFTER = 1.0
# The dispatcher's parallel sends (KENGELE_DISPATCH_CONCURRENCY's default), and how long after a 429
# one of them, already past its look for a pause, may still reach the provider.
CONCURRENCY, IN_FLIGHT = 4, 0.25
URGENT = ("f", "e")  # the keys of forwards and escalations


def max_in_one_second(times: Sequence[float]) -> int:
    """The most requests any one-second window [t, t + 1) holds."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def key_of(request: Received) -> str:
    return request.form["message"][0]


@pytest.fixture
def pg_url(db_url: str) -> str:
    """PostgreSQL, as in production (the server is a process of its own beside the test's engine)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("the outage runs against PostgreSQL")
    return db_url


@pytest.fixture
def queue_side(pg_url: str, make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    """The test's own engine on the server's database (no workers), to queue SMS and read rows."""
    runtime = Runtime(make_settings())
    yield runtime
    runtime.stop()


def queue(runtime: Runtime, purpose: Purpose, keys: Sequence[str]) -> None:
    with transaction(runtime.factory) as session:
        for n, key in enumerate(keys):
            phone = f"+2438{1 + len(key) % 9}{n:07d}"
            assert enqueue(session=session, recipient=phone, text=key, purpose=purpose, key=key)


def rows(runtime: Runtime) -> dict[str, Message]:
    with runtime.factory() as session:
        return {
            m.idempotency_key or "": m
            for m in session.scalars(select(Message).where(Message.direction == "outbound"))
        }


def run_outage(
    *, at_fake: FakeProvider, runtime: Runtime, db_url: str, tmp_path: Path, phase: float, checkins: int
) -> None:
    """Queue, break the provider for three phases of `phase` seconds, and check what it received."""
    server = Server(
        db_url,
        tmp_path,
        "--no-scheduler",
        KENGELE_GATEWAY="africastalking",
        AT_USERNAME="kengele",
        AT_API_KEY="at-key-0123456789",
        AT_SENDER="KENGELE",
        KENGELE_AT_API_BASE=at_fake.url,
        KENGELE_SEND_RATE=f"africastalking={RATE}",
        KENGELE_SEND_TIMEOUT="1",
        # Enough tries, a second or two apart, to outlast the outage on the one gateway.
        KENGELE_SEND_MAX_ATTEMPTS="500",
        KENGELE_SEND_BACKOFF_BASE="0.2",
        KENGELE_SEND_BACKOFF_MAX="1.5",
        KENGELE_DISPATCH_POLL="0.1",
        KENGELE_DISPATCH_CONCURRENCY=str(CONCURRENCY),
    )
    at_fake.retry_after = str(int(RETRY_AFTER))
    try:
        server.start()
        queue(runtime, Purpose.CHECKIN, [f"c{i}" for i in range(checkins)])
        queue(runtime, Purpose.REPLY, [f"r{i}" for i in range(5)])
        wait_for(lambda: len(at_fake.requests) >= 3, timeout=10)
        at_fake.fail_for(phase, "500").fail_for(phase, "timeout").fail_for(phase, "429ra")
        wait_for(lambda: any(r.answered == "timeout" for r in at_fake.requests), timeout=phase * 2 + 5)
        queue(runtime, Purpose.ALERT_FORWARD, [f"f{i}" for i in range(5)])
        queue(runtime, Purpose.ESCALATION, [f"e{i}" for i in range(3)])
        total = checkins + 5 + 5 + 3
        drain = total / RATE * 1.5 + phase * 3 + 10
        wait_for(lambda: [m.status for m in rows(runtime).values()].count("sent") == total, timeout=drain)
    finally:
        server.stop()

    requests = list(at_fake.requests)
    answers = {r.answered for r in requests}
    assert {"500", "timeout", "429ra", "ok"} <= answers, answers
    # Nothing lost, nothing sent twice: each SMS was accepted exactly once (a timed-out request
    # may have reached the provider too; the server could not know, and sent it again).
    accepted = [key_of(r) for r in requests if r.answered == "ok"]
    final = rows(runtime)
    assert sorted(accepted) == sorted(final), "every queued SMS accepted once"
    assert {m.status for m in final.values()} == {"sent"}
    # The pace holds through the outage and the catch-up after it.
    assert max_in_one_second([r.at for r in requests]) <= RATE
    # Retry-After: after each 429, nothing new is sent before it is over. Only sends already under
    # way when the 429 was answered may still arrive: the other dispatcher threads (at most
    # concurrency - 1 = 3), which looked for a pause before this answer was read, so within IN_FLIGHT.
    times = sorted(r.at for r in requests)
    for limited in (r for r in requests if r.answered == "429ra"):
        early = [t - limited.at for t in times if limited.at < t < limited.at + RETRY_AFTER - 0.01]
        assert len(early) <= CONCURRENCY - 1, f"{len(early)} sends within Retry-After of a 429: {early}"
        late = [d for d in early if d > IN_FLIGHT]
        assert not late, f"a send {max(late or [0]):.3f} s after a 429, before its Retry-After"
    # The queue drains forwards and escalations first: the check-ins wait for them.
    recovered = [key_of(r) for r in requests if r.answered == "ok" and r.at >= at_fake.outage_over]
    last_urgent = max(i for i, key in enumerate(recovered) if key.startswith(URGENT))
    waiting = sum(1 for key in recovered[last_urgent:] if key.startswith("c"))
    assert waiting >= checkins // 3, f"only {waiting} check-ins after the last urgent SMS: {recovered}"


def test_provider_outage_loses_nothing(
    at_fake: FakeProvider, queue_side: Runtime, pg_url: str, tmp_path: Path
) -> None:
    """A 4.5-s outage (1.5 s of 5xx, of timeouts, of 429 with Retry-After 1 s): about 15 s."""
    run_outage(at_fake=at_fake, runtime=queue_side, db_url=pg_url, tmp_path=tmp_path, phase=1.5, checkins=30)


@pytest.mark.fault_long
def test_a_two_minute_provider_outage_loses_nothing(
    at_fake: FakeProvider, queue_side: Runtime, pg_url: str, tmp_path: Path
) -> None:
    """Two minutes: 40 s of 5xx, 40 s of timeouts, 40 s of 429 with Retry-After; then recovery."""
    run_outage(
        at_fake=at_fake, runtime=queue_side, db_url=pg_url, tmp_path=tmp_path, phase=40.0, checkins=200
    )
