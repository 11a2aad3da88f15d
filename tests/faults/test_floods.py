"""Floods through the real webhooks: every message stored and processed, the SMS they cost bounded.

A table of senders and bursts, posted to the signed Twilio webhook of a running app (processor and
dispatcher threads), on SQLite and PostgreSQL. What each row may cost is counted from the outbox:
replies to the flooding sender, forwards to officers, flooding notices; and the suppression counters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from app.config import Settings
from app.db import transaction
from app.main import create_app
from app.models import Alert, Incident, Message, Person
from app.services import gazetteer
from app.services.limits import Reason
from app.services.runtime import Runtime
from gateways.base import InboundSms
from tests.helpers import TWILIO_TOKEN, engine, signed_headers, twilio_form, wait_for

pytestmark = pytest.mark.slow  # real server processes: run alone (make test)

TW_URL = "http://testserver/webhooks/twilio/sms"
FOREIGN = "+4915112345678"
LOCAL = "+243820000777"
FOCAL = "+243810000555"
OFFICERS = ("+243990000101", "+243990000102")  # the two level-1 officers of Ituri
# 25 villages of one area, 0.3 degrees (some 33 km) apart: each report's incident is its own.
PLACES = [f"Mbuluku{chr(ord('a') + i)}" for i in range(25)]


@dataclass(frozen=True, slots=True)
class Cost:
    """What one flood cost: SMS to the flooding sender and to officers, and what it left stored."""

    replies: int
    forwards: int  # individual forwards of new incidents, to every officer
    notices: int  # flooding notices
    per_officer: dict[str, tuple[int, int]]  # officer -> (forwards, notices)
    stored: int
    processed: int
    incidents: int


def write_gazetteer(path: Path) -> Path:
    lines = ["name,lat,lon,admin1,admin2,country"]
    lines += [
        f"{name},{1.0 + 0.3 * i:.1f},{30.0 + 0.3 * (i % 5):.1f},Ituri,Djugu,CD"
        for i, name in enumerate(PLACES)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def flood_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    settings = make_settings(twilio_auth_token=TWILIO_TOKEN, twilio_account_sid="AC1")
    prepare(settings, tmp_path)
    return settings


def prepare(settings: Settings, tmp_path: Path) -> None:
    """Load the villages, two officers of Ituri and one focal point."""
    runtime = Runtime(settings)
    try:
        gazetteer.store(runtime.engine, gazetteer.read_csv(write_gazetteer(tmp_path / "places.csv")))
        with transaction(runtime.factory) as session:
            for n, phone in enumerate(OFFICERS, 1):
                session.add(Person(name=f"Officer {n}", phone=phone, role="officer", level=1, area="Ituri"))
            session.add(Person(name="Focal", phone=FOCAL, role="focal_point", language="fr", area="Djugu"))
    finally:
        runtime.stop()


@pytest.fixture
def client(flood_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(flood_settings)) as c:
        yield c


def alert_text(i: int) -> str:
    """The i-th alert of a flood: 25 places in turn, each place with its own category (1 to 9)."""
    place = i % len(PLACES)
    return f"A{1 + place % 9} {PLACES[place]}"


def burst(client: TestClient, sender: str, texts: list[str], *, threads: int = 4) -> None:
    """Post the texts to the signed Twilio webhook from a few threads at once, as a burst arrives."""
    forms = [twilio_form(sender=sender, body=text) for text in texts]

    def post(part: list[dict[str, str]]) -> None:
        for form in part:
            r = client.post("/webhooks/twilio/sms", data=form, headers=signed_headers(form, TW_URL))
            assert r.status_code == 200, r.text

    workers = [threading.Thread(target=post, args=(forms[k::threads],)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def cost(db_url: str, sender: str, sent: int) -> Cost:
    """Count, once all `sent` messages are processed, what the flood cost."""
    db = engine(db_url)
    try:

        def processed() -> int:
            with db.connect() as conn:
                query = select(func.count()).where(
                    Message.direction == "inbound", Message.processed_at.is_not(None)
                )
                return int(conn.execute(query).scalar_one())

        wait_for(lambda: processed() >= sent, timeout=30)
        with db.connect() as conn:
            rows = conn.execute(select(Message).where(Message.direction == "outbound")).all()
            stored = conn.execute(select(func.count()).where(Message.direction == "inbound")).scalar_one()
            incidents = conn.execute(select(func.count()).select_from(Incident)).scalar_one()
        replies = sum(1 for m in rows if m.purpose == "reply" and m.recipient == sender)
        forwards = [m for m in rows if m.purpose == "alert_forward"]
        notices = [
            m for m in rows if m.purpose == "notice" and (m.idempotency_key or "").startswith("flood:")
        ]
        per_officer = {
            phone: (
                sum(1 for m in forwards if m.recipient == phone),
                sum(1 for m in notices if m.recipient == phone),
            )
            for phone in OFFICERS
        }
        return Cost(replies, len(forwards), len(notices), per_officer, stored, processed(), incidents)
    finally:
        db.dispose()


def suppressed_count(reason: str) -> float:
    return REGISTRY.get_sample_value("kengele_suppressed_total", {"reason": reason}) or 0.0


# -- the table ------------------------------------------------------------------------------------
def test_a_foreign_unregistered_number_gets_no_reply_and_bounded_forwards(
    client: TestClient, db_url: str
) -> None:
    before = suppressed_count(Reason.REPLY_COUNTRY), suppressed_count(Reason.FLOOD_FORWARD)
    burst(client, FOREIGN, [alert_text(i) for i in range(60)])
    spent = cost(db_url, FOREIGN, 60)
    assert spent.replies == 0
    assert (spent.stored, spent.processed, spent.incidents) == (60, 60, 25)
    assert spent.per_officer == {phone: (3, 1) for phone in OFFICERS}
    assert suppressed_count(Reason.REPLY_COUNTRY) - before[0] == 60
    assert suppressed_count(Reason.FLOOD_FORWARD) - before[1] == 22  # 25 incidents, 3 forwarded


def test_a_local_unregistered_number_gets_five_replies_three_forwards_and_one_notice(
    client: TestClient, db_url: str
) -> None:
    before = suppressed_count(Reason.REPLY_LIMIT)
    burst(client, LOCAL, [alert_text(i) for i in range(60)])
    spent = cost(db_url, LOCAL, 60)
    assert spent.replies == 5
    assert (spent.stored, spent.processed, spent.incidents) == (60, 60, 25)
    assert spent.per_officer == {phone: (3, 1) for phone in OFFICERS}
    assert suppressed_count(Reason.REPLY_LIMIT) - before == 55
    # the incidents not forwarded wait in the list, visible in the API, and say why in their history
    db = engine(db_url)
    try:
        with db.connect() as conn:
            held = conn.execute(select(Incident).where(Incident.escalation_step == 0)).all()
            reports = conn.execute(select(func.count()).select_from(Alert)).scalar_one()
    finally:
        db.dispose()
    assert len(held) == 22 and reports == 60
    listed = client.get("/api/v1/incidents", params={"limit": 100}, headers=_admin()).json()
    assert listed["total"] == 25
    detail = client.get(f"/api/v1/incidents/{held[0].code}", headers=_admin()).json()
    assert "forward_held" in [step["action"] for step in detail["history"]]


def test_a_registered_focal_point_gets_five_replies_and_every_forward(
    client: TestClient, db_url: str
) -> None:
    burst(client, FOCAL, [alert_text(i) for i in range(60)])
    spent = cost(db_url, FOCAL, 60)
    assert spent.replies == 5
    assert spent.incidents == 25
    assert spent.per_officer == {phone: (25, 0) for phone in OFFICERS}  # vouched for: never held


def test_a_burst_of_empty_messages_gets_five_replies(client: TestClient, db_url: str) -> None:
    burst(client, LOCAL, ["", " ", "."] * 10)
    spent = cost(db_url, LOCAL, 30)
    assert spent.replies <= 5
    assert (spent.stored, spent.processed, spent.forwards) == (30, 30, 0)


def test_an_officer_gets_every_confirmation(client: TestClient, db_url: str) -> None:
    burst(client, LOCAL, [alert_text(i) for i in range(3)])
    cost(db_url, LOCAL, 3)
    db = engine(db_url)
    try:
        with db.connect() as conn:
            codes = [row.code for row in conn.execute(select(Incident.code)).all()]
    finally:
        db.dispose()
    burst(client, OFFICERS[0], [f"ACK {code}" for code in codes] + ["AIDE"] * 5, threads=1)
    spent = cost(db_url, OFFICERS[0], 11)
    assert spent.replies == 8  # officers and admins on the roster are not limited


def test_two_replicas_share_the_reply_limit(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Two processes' pipelines on one database: five replies in all, whichever replica handles which."""
    settings = make_settings()
    if settings.is_sqlite:
        pytest.skip("SQLite deployments run one process")
    prepare(settings, tmp_path)
    a, b = Runtime(settings), Runtime(settings)
    try:
        mine: dict[Runtime, list[int]] = {a: [], b: []}
        for i in range(40):  # half claimed by each replica, as two web replicas would store them
            rt = (a, b)[i % 2]
            sms = InboundSms("twilio", f"SMr{i}", LOCAL, None, alert_text(i), None, {})
            stored = rt.writer.store_now(sms)
            assert stored.message_id is not None
            mine[rt].append(stored.message_id)
        threads = [
            threading.Thread(target=rt.processor.process, args=(ids[k::2],))
            for rt, ids in mine.items()
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        spent = cost(settings.database_url, LOCAL, 40)
    finally:
        a.stop()
        b.stop()
    assert spent.processed == 40 and spent.replies == 5
    assert spent.per_officer == {phone: (3, 1) for phone in OFFICERS}


def _admin() -> dict[str, str]:
    from tests.conftest import ADMIN_TOKEN

    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_a_focal_point_confirming_a_held_incident_has_it_forwarded(client: TestClient, db_url: str) -> None:
    burst(client, LOCAL, [alert_text(i) for i in range(25)])
    assert cost(db_url, LOCAL, 25).per_officer == {phone: (3, 1) for phone in OFFICERS}
    burst(client, FOCAL, [alert_text(24)], threads=1)  # the last place: a held incident
    spent = cost(db_url, FOCAL, 26)
    assert spent.incidents == 25  # joined, not a new one
    assert spent.per_officer == {phone: (4, 1) for phone in OFFICERS}
