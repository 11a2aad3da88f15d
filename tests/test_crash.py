"""SIGKILL while webhooks arrive: every message answered 2xx survives and is processed after restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from app.models import Message
from tests.helpers import TWILIO_TOKEN, signed_headers, twilio_form
from tests.server import Server

pytestmark = pytest.mark.slow


def test_sigkill_loses_no_acknowledged_message(db_url: str, tmp_path: Path) -> None:
    server = Server(db_url, tmp_path, TWILIO_AUTH_TOKEN=TWILIO_TOKEN, KENGELE_PROCESSING_LEASE="3").start()
    accepted: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    url = server.url + "/webhooks/twilio/sms"

    def sender(n: int) -> None:
        with httpx.Client(timeout=5) as client:
            i = 0
            while not stop.is_set():
                i += 1
                form = twilio_form(sender=f"+2438100{n:02d}{i % 1000:03d}", body=f"A{1 + i % 10} Djugu {i}")
                try:
                    r = client.post(url, data=form, headers=signed_headers(form, url))
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    (accepted if ok else refused).append(form["MessageSid"])

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(accepted) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert len(accepted) >= 300

    engine = create_engine(db_url)
    with engine.connect() as conn:
        stored = set(
            conn.execute(select(Message.provider_message_id).where(Message.direction == "inbound")).scalars()
        )
        unprocessed_at_kill = conn.execute(
            select(func.count())
            .select_from(Message)
            .where(Message.direction == "inbound", Message.processed_at.is_(None))
        ).scalar_one()
    missing = set(accepted) - stored
    assert not missing, f"{len(missing)} messages answered 2xx were lost"

    restarted = Server(db_url, tmp_path, TWILIO_AUTH_TOKEN=TWILIO_TOKEN, KENGELE_PROCESSING_LEASE="3").start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                left = conn.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.direction == "inbound", Message.processed_at.is_(None))
                ).scalar_one()
            if left == 0:
                break
            time.sleep(0.5)
        assert left == 0, f"{left} messages still unprocessed after restart"
        with engine.connect() as conn:
            outcomes = conn.execute(
                select(Message.outcome, func.count())
                .where(Message.direction == "inbound")
                .group_by(Message.outcome)
            ).all()
            replies = conn.execute(
                select(func.count())
                .select_from(Message)
                .where(Message.direction == "outbound", Message.purpose == "reply")
            ).scalar_one()
        assert dict(outcomes) == {"alert": len(stored)}
        assert replies == len(stored)  # exactly one reply per message, even for those processed twice-started
    finally:
        restarted.stop()
        engine.dispose()
    print(f"accepted={len(accepted)} stored={len(stored)} unprocessed_at_kill={unprocessed_at_kill}")
