"""PostgreSQL connections killed under steady webhook load: 503s, never a 500, nothing acknowledged lost.

A real `kengele serve` on a fresh PostgreSQL database takes signed Twilio SMS, Africa's Talking SMS
and USSD steps at a steady rate while another thread terminates every backend of the database
every few hundred milliseconds. Then: no answer was a 500, every message answered 2xx is stored
(by provider message id), the server answers again without a restart, and every stored message
is processed. The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from app.models import Message
from tests.conftest import PG_ADMIN_URL, throwaway_pg
from tests.helpers import AT_SECRET, TWILIO_TOKEN, at_form, signed_headers, twilio_form, wait_for
from tests.server import Server

pytestmark = pytest.mark.slow

THREADS = 8
KILL_EVERY = 0.3  # seconds between two rounds of pg_terminate_backend
BLACKOUT_EVERY, BLACKOUT = 4.0, 1.0  # seconds: how often, and how long, no connection is accepted


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """A fresh PostgreSQL database of its own (its backends are killed: no other test may share it)."""
    with throwaway_pg("kengele_outage") as url:
        yield url


@dataclass
class Tally:
    """What the load saw: the status of every answer, and the messages answered 2xx."""

    statuses: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    ussd_unavailable: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, status: str, message_id: str | None, body: str = "") -> None:
        with self.lock:
            self.statuses[status] += 1
            self.statuses[f"{kind}:{status}"] += 1
            if status.startswith("2") and message_id is not None:
                self.accepted.add(message_id)
            if kind == "ussd" and body.startswith("END "):
                self.ussd_unavailable += 1


def send_one(client: httpx.Client, base: str, i: int, tally: Tally) -> None:
    """Send the i-th webhook of the load: 6 in 10 Twilio SMS, 3 Africa's Talking SMS, 1 USSD step."""
    kind = ("twilio", "twilio", "at", "twilio", "at", "twilio", "ussd", "twilio", "at", "twilio")[i % 10]
    message_id: str | None
    try:
        if kind == "twilio":
            url = f"{base}/webhooks/twilio/sms"
            form = twilio_form(sender=f"+24381{i % 100_000:07d}", body=f"A{1 + i % 10} Djugu {i}")
            message_id = form["MessageSid"]
            r = client.post(url, data=form, headers=signed_headers(form, url))
        elif kind == "at":
            form = at_form(sender=f"+24382{i % 100_000:07d}", text=f"a{1 + i % 10} Bunia")
            message_id = form["id"]
            r = client.post(f"{base}/webhooks/africastalking/{AT_SECRET}/sms", data=form)
        else:
            message_id = None  # a first USSD step stores no message
            form = {"sessionId": f"ATUid_{uuid.uuid4().hex}", "serviceCode": "*384#", "text": ""}
            form["phoneNumber"] = f"+24383{i % 100_000:07d}"
            r = client.post(f"{base}/webhooks/africastalking/{AT_SECRET}/ussd", data=form)
        tally.note(kind, str(r.status_code), message_id, r.text if kind == "ussd" else "")
    except httpx.HTTPError as exc:
        tally.note(kind, type(exc).__name__, None)


def load(base: str, *, rate: float, seconds: float, tally: Tally) -> None:
    """Send `rate` webhooks a second for `seconds`, from THREADS threads on a shared schedule."""
    start = time.monotonic()
    total = int(rate * seconds)

    def worker(n: int) -> None:
        with httpx.Client(timeout=20) as client:
            for i in range(n, total, THREADS):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                send_one(client, base, i, tally)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def chaos(db_name: str, stop: threading.Event) -> int:
    """Kill the database's backends until `stop`; how many were killed.

    Every KILL_EVERY seconds every backend is terminated (connections dropped mid-query and
    mid-commit); every BLACKOUT_EVERY seconds the database also refuses new connections for
    BLACKOUT seconds, so that requests meet a database that is away, not only a dropped connection.
    """
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    kill = text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = :d AND pid <> pg_backend_pid()"
    )
    killed, began = 0, time.monotonic()
    try:
        with admin.connect() as conn:
            while not stop.wait(KILL_EVERY):
                blackout = (time.monotonic() - began) % BLACKOUT_EVERY < BLACKOUT
                allow = "false" if blackout else "true"
                conn.execute(text(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS {allow}'))
                killed += len(conn.execute(kill, {"d": db_name}).all())
            conn.execute(text(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS true'))
    finally:
        admin.dispose()
    return killed


def run_outage(url: str, workdir: Path, *, rate: float, seconds: float) -> None:
    """Drive the server through the outage and check what providers and the database saw."""
    server = Server(
        url,
        workdir,
        TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        KENGELE_AT_WEBHOOK_SECRET=AT_SECRET,
        KENGELE_PROCESSING_LEASE="3",  # rows stored by a commit answered 503 wait out their claim
    ).start()
    engine = create_engine(url)
    try:
        tally = Tally()
        stop = threading.Event()
        kills: list[int] = []
        killer = threading.Thread(target=lambda: kills.append(chaos(url.rsplit("/", 1)[1], stop)))
        began = time.monotonic()
        killer.start()
        try:
            load(server.url, rate=rate, seconds=seconds, tally=tally)
        finally:
            stop.set()
            killer.join()
        took = time.monotonic() - began

        # Back by itself, without a restart: the next webhook of each kind is stored.
        after = Tally()
        with httpx.Client(timeout=20) as client:
            for i in range(10):
                send_one(client, server.url, 10_000_000 + i, after)
        assert after.statuses["500"] == 0 and after.ussd_unavailable == 0, after.statuses
        assert sum(n for s, n in after.statuses.items() if s.startswith("2")) == 10, after.statuses

        inbound = Message.direction == "inbound"
        with engine.connect() as conn:
            stored = set(conn.execute(select(Message.provider_message_id).where(inbound)).scalars())

        samples: list[int] = []

        def unprocessed() -> int:
            with engine.connect() as conn:
                left = int(
                    conn.execute(
                        select(func.count())
                        .select_from(Message)
                        .where(inbound, Message.processed_at.is_(None))
                    ).scalar_one()
                )
            samples.append(left)
            return left

        waited = time.monotonic()
        # Processing (not the outage) sets the pace here: a few dozen a second on a busy 2-core machine.
        wait_for(lambda: unprocessed() == 0, timeout=60 + rate * seconds / 10, interval=0.5)
        waited = time.monotonic() - waited
        with engine.connect() as conn:
            processed = int(
                conn.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(inbound, Message.processed_at.is_not(None))
                ).scalar_one()
            )
            outcome_error = Message.outcome == "error"
            parked = int(
                conn.execute(
                    select(func.count()).select_from(Message).where(inbound, outcome_error)
                ).scalar_one()
            )
        log = server.log.read_text(encoding="utf-8", errors="replace").splitlines()
        warnings = [line for line in log if "database unavailable" in line]
        tracebacks = [line for line in log if "Traceback" in line or "Exception in ASGI" in line]
        statuses = tally.statuses
        sent = sum(n for s, n in statuses.items() if ":" not in s)
        ok = sum(n for s, n in statuses.items() if ":" not in s and s.startswith("2"))
        figures = {
            "seconds": round(took, 1),
            "processing_wait": round(waited, 1),
            "unprocessed_each_second": samples[::2],
            "sent": sent,
            "2xx": ok,
            "503": statuses["503"],
            "500": statuses["500"],
            "other": {s: n for s, n in statuses.items() if ":" not in s and s not in ("200", "204", "503")},
            "ussd_end_dial_again": tally.ussd_unavailable,
            "sms_accepted": len(tally.accepted),
            "stored": len(stored),
            "processed": processed,
            "parked_as_error": parked,
            "backends_killed": sum(kills),
            "by_kind": {s: n for s, n in statuses.items() if ":" in s},
            "log_outage_warnings": len(warnings),
            "log_tracebacks": len(tracebacks),
        }
        print("\ndb outage:", json.dumps(figures))
        for line in tracebacks[:3]:
            print("traceback:", line[:3000])
        assert statuses["500"] == 0, figures
        missing = tally.accepted - stored
        assert not missing, f"{len(missing)} messages answered 2xx were not stored: {figures}"
        assert sum(kills) > 0 and statuses["503"] > 0, figures  # there was an outage
        assert ok >= sent // 2, figures  # and most of the load got through it
        assert processed == len(stored), figures
        request_paths = ('"kengele.webhooks"', '"kengele.intake"', '"kengele.ussd"', '"uvicorn.error"')
        assert not [line for line in tracebacks if any(name in line for name in request_paths)], figures
        assert parked == 0, figures  # an outage is not the message's fault: none parked as a failure
        assert len(warnings) <= 1 + int(took / BLACKOUT_EVERY), figures  # a warning an episode at most
    finally:
        server.stop()
        engine.dispose()


def test_db_connections_killed_under_load(fresh_pg: str, tmp_path: Path) -> None:
    run_outage(fresh_pg, tmp_path, rate=60, seconds=8)


@pytest.mark.fault_long
def test_db_connections_killed_under_load_long(fresh_pg: str, tmp_path: Path) -> None:
    run_outage(fresh_pg, tmp_path, rate=150, seconds=20)
