"""Several `kengele serve` processes on one PostgreSQL database: every step is done exactly once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.config import Settings
from app.models import AuditLog, Incident, Message
from app.services import gazetteer
from app.services.runtime import Runtime
from tests.fakes import FakeProvider
from tests.helpers import TWILIO_TOKEN, at_form
from tests.server import Server
from tests.test_corpus import CORPUS, load_roster

pytestmark = pytest.mark.slow  # real server processes, timed: run alone (make test)

ALERTS = [
    ("+243810000001", "A1 Djugu 20"),
    ("+243810000002", "A6 Fataki"),
    ("+243810000003", "TAHADHARI SHAMBULIO Beni"),
    ("+243810000004", "A3 Kpandroma"),
    ("+243810000006", "A7 Oicha"),
    ("+243810000008", "A2 Mbau"),
]


def provider_env(fake: FakeProvider) -> dict[str, str]:
    return {
        "KENGELE_GATEWAY": "twilio",
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM": "+15005550006",
        "KENGELE_TWILIO_API_BASE": fake.url,
        # Tests of what is sent, not of pacing: a long code's 1 SMS/s would make them wait.
        "KENGELE_SEND_RATE": "100",
    }


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite deployments run one process
def test_two_servers_send_every_escalation_step_exactly_once(
    db_url: str, tmp_path: Path, make_settings: Callable[..., Settings], twilio_fake: FakeProvider
) -> None:
    setup = Runtime(make_settings())
    gazetteer.store(setup.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    load_roster(setup)
    env = provider_env(twilio_fake) | {"KENGELE_ACK_TIMEOUT": "1", "KENGELE_ESCALATION_POLL": "0.1"}
    servers = [Server(db_url, tmp_path, **env).start() for _ in range(2)]
    try:
        for n, (sender, text) in enumerate(ALERTS):
            target = servers[n % 2]
            r = httpx.post(f"{target.url}/webhooks/africastalking/-/sms", data=at_form(sender, text, f"R{n}"))
            assert r.status_code == 200
        time.sleep(6)  # about five escalation steps per incident, raced for by both servers
    finally:
        for server in servers:
            server.stop()
    with setup.factory() as session:
        incidents = session.scalars(select(Incident)).all()
        steps = session.scalars(select(AuditLog).where(AuditLog.action.in_(["forward", "escalate"]))).all()
        sent = session.scalars(
            select(Message).where(Message.direction == "outbound", Message.status.in_(["sent", "delivered"]))
        ).all()
    assert len(incidents) == len(ALERTS)
    per_incident = Counter(a.entity_id for a in steps)
    by_step = Counter((a.entity_id, a.details["step"]) for a in steps)
    assert max(by_step.values()) == 1, "an escalation step was taken twice"
    for incident in incidents:
        taken = sorted(step for (entity, step) in by_step if entity == str(incident.id))
        assert taken == list(range(1, len(taken) + 1)), f"{incident.code}: steps {taken}"
        assert per_incident[str(incident.id)] >= 3, f"{incident.code} escalated too little: {taken}"
    received = Counter((r.form["To"][0], r.form["Body"][0]) for r in twilio_fake.requests)
    assert received == Counter((m.recipient, m.text) for m in sent), "an SMS was sent twice (or lost)"
    setup.stop()
