"""Retention: messages older than the window lose their texts and numbers; what reports established stays."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, text, update

from app.config import Settings
from app.db import transaction, utcnow
from app.enums import AuditAction
from app.models import (
    Alert,
    AuditLog,
    Base,
    DeliveryEvent,
    Incident,
    Message,
    Person,
    UssdSession,
    Webhook,
    WebhookDelivery,
)
from app.services import gazetteer
from app.services.dedup import refresh
from app.services.outbox import record_delivery
from app.services.retention import KINDS, PSEUDONYM, RetentionJob, last_run, run_retention
from app.services.runtime import Runtime
from app.services.worker import Signals
from gateways.base import DeliveryReport, DeliveryStatus, InboundSms
from tests.helpers import wait_for
from tests.test_corpus import CORPUS

OFFICER = "+243990000001"  # on the roster: forwards go to this number
GRACE = "+243810000004"  # a focal point on the roster
STRANGER = "+243820000031"  # not on the roster; reports twice
OTHER = "+243820000032"  # not on the roster; writes a number into the text
WRITTEN = "0810000099"  # the number OTHER wrote
LATE = "+243820000033"  # not on the roster; writes inside the window


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    gazetteer.store(rt.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    with transaction(rt.factory) as session:
        session.add(Person(name="Capt. Alain Dufour", phone=OFFICER, role="officer", language="fr", level=1))
        session.add(Person(name="Grace Ndjadi", phone=GRACE, role="focal_point", language="en"))
    yield rt
    rt.engine.dispose()


def report(rt: Runtime, sender: str, body: str) -> int:
    sms = InboundSms("africastalking", uuid.uuid4().hex, sender, "12345", body, None, {"from": [sender]})
    stored = rt.writer.store_now(sms)
    assert stored.message_id is not None
    rt.processor.process([stored.message_id])
    return stored.message_id


def sent_and_aged(rt: Runtime, days: float, *ids: int) -> None:
    """Outbound rows sent; these messages (all, without ids), their alerts and answers `days` old."""
    then = utcnow() - timedelta(days=days)
    with transaction(rt.factory) as session:
        session.execute(update(Message).where(Message.direction == "outbound").values(status="sent"))
        mine = Message.id.in_(ids) | Message.in_reply_to.in_(ids) if ids else Message.id.is_not(None)
        session.execute(update(Message).where(mine).values(created_at=then))
        alerts = Alert.message_id.in_(ids) if ids else Alert.id.is_not(None)
        session.execute(update(Alert).where(alerts).values(created_at=then))
        if not ids:
            session.execute(update(DeliveryEvent).values(occurred_at=then))
            session.execute(update(UssdSession).values(updated_at=then))
            session.execute(update(Incident).values(last_reported_at=then, first_reported_at=then))


def everything(engine: Engine) -> str:
    """Every row of every table, as text: what someone who took the database would read."""
    with engine.connect() as conn:
        return json.dumps(
            {
                t.name: [list(map(str, row)) for row in conn.execute(t.select())]
                for t in Base.metadata.sorted_tables
            }
        )


def counts(rt: Runtime) -> list[tuple[int, int, str]]:
    with rt.factory() as session:
        return [
            (i.report_count, i.reporter_count, i.category)
            for i in session.scalars(select(Incident).order_by(Incident.id))
        ]


def test_old_messages_lose_text_and_numbers_and_incident_counts_stay(runtime: Runtime) -> None:
    report(runtime, STRANGER, "ALERTE ATTAQUE Djugu 20 hommes armés")
    report(runtime, STRANGER, "A1 Djugu encore")
    report(runtime, GRACE, "A1 Djugu")
    report(runtime, OTHER, f"A1 Djugu appelez {WRITTEN}")
    with transaction(runtime.factory) as session:
        session.add(
            DeliveryEvent(
                provider="africastalking",
                provider_message_id="ATXid_1",
                status="delivered",
                provider_status="Success",
                raw=json.dumps({"phoneNumber": [STRANGER], "status": ["Success"]}),
            )
        )
        session.add(UssdSession(session_id="ATUid_1", phone=STRANGER, text="1*2", screen="place"))
    before = counts(runtime)
    assert before == [(4, 3, "attack")]
    sent_and_aged(runtime, 91)
    with runtime.factory() as session:
        outbound = session.scalar(select(func.count()).where(Message.direction == "outbound")) or 0
    late = report(runtime, LATE, "A7 Bunia")  # inside the window: left as it is
    with transaction(runtime.factory) as session:
        incident_id = session.scalar(select(Incident.id))
        hook = Webhook(url="http://127.0.0.1:9/h", secret="s" * 32, created_by="test")
        session.add(hook)
        session.flush()
        long_ago, lately = utcnow() - timedelta(days=91), utcnow()
        for state, at in (("delivered", long_ago), ("delivered", lately), ("pending", None)):
            session.add(
                WebhookDelivery(
                    subscription_id=hook.id,
                    incident_id=incident_id,
                    event="incident.updated",
                    payload={},
                    state=state,
                    created_at=long_ago,
                    delivered_at=at,
                )
            )
    snapshot = everything(runtime.engine)

    dry = run_retention(factory=runtime.factory, days=90, actor="test", dry_run=True)
    assert everything(runtime.engine) == snapshot  # a dry run changes nothing, not even the audit log
    done = run_retention(factory=runtime.factory, days=90, actor="test", window=3)
    assert done.complete and done.counts == dry.counts
    assert done.counts == {
        "inbound texts": 4,
        "raw forms": 4,
        "sender numbers": 3,  # Grace is on the roster: her number stays
        "outbound texts": outbound,
        "recipient numbers": 3,  # the replies to the two strangers; the officer's forward keeps his
        "alert texts": 4,
        "alert senders": 3,
        "place names": 0,
        "delivery receipts": 1,
        "ussd sessions": 1,
        "webhook deliveries": 1,  # delivered long ago; the recent one and the undelivered one stay
    }
    with runtime.factory() as session:
        assert sorted(session.scalars(select(WebhookDelivery.state))) == ["delivered", "pending"]

    dump = everything(runtime.engine)
    for number in (STRANGER, OTHER, WRITTEN, STRANGER[4:], OTHER[4:], WRITTEN[1:]):
        assert number not in dump, number
    for words in ("hommes", "encore", "appelez"):
        assert words not in dump, words
    assert counts(runtime)[0] == before[0]  # the incident keeps its reports and reporters
    with transaction(runtime.factory) as session:
        alerts = session.scalars(select(Alert).where(Alert.message_id != late).order_by(Alert.id)).all()
        assert [a.text for a in alerts] == ["", "", "", ""]
        assert all(a.category == "attack" and a.place_name == "Djugu" and a.lat is not None for a in alerts)
        assert alerts[0].details["count"] == 20 and alerts[0].details["words"] == []
        first, again, grace, other = (a.sender for a in alerts)
        assert first == again != other and first.startswith(PSEUDONYM) and other.startswith(PSEUDONYM)
        assert grace == GRACE
        incident = session.get(Incident, alerts[0].incident_id)
        assert incident is not None
        refresh(session, incident)  # counting again (as a merge does) counts the same people
        assert (incident.report_count, incident.reporter_count) == (4, 3)
        inbound = session.scalars(
            select(Message).where(Message.direction == "inbound").order_by(Message.id)
        ).all()
        assert [(m.text, m.raw, m.sender) for m in inbound[:4]] == [
            ("", None, None),
            ("", None, None),
            ("", None, GRACE),
            ("", None, None),
        ]
        assert inbound[0].parse is not None and inbound[0].parse["category"] == "attack"
        assert inbound[0].parse["place_words"] == [] and inbound[0].outcome == "alert"
        assert (inbound[4].text, inbound[4].sender) == ("A7 Bunia", LATE)
        assert session.scalar(select(Message.recipient).where(Message.purpose == "alert_forward")) == OFFICER
        assert session.scalar(select(DeliveryEvent.raw)) is None
        (audit,) = session.scalars(select(AuditLog).where(AuditLog.action == AuditAction.RETENTION)).all()
        assert (
            audit.actor == "test" and audit.details["removed"] == done.counts and audit.details["days"] == 90
        )

    again_run = run_retention(factory=runtime.factory, days=90, actor="test")
    assert again_run.total == 0 and everything(runtime.engine).count(LATE) > 0  # idempotent
    assert set(again_run.counts) == set(KINDS)


def test_an_alert_keeps_its_sender_while_they_report_again_inside_the_window(runtime: Runtime) -> None:
    first = report(runtime, STRANGER, "A1 Djugu")
    sent_and_aged(runtime, 100, first)
    second = report(runtime, STRANGER, "A1 Djugu toujours")
    report(runtime, OTHER, "A1 Djugu")
    sent_and_aged(runtime, 1)  # not old yet: the window is 90 days
    sent_and_aged(runtime, 100, first)
    run_retention(factory=runtime.factory, days=90, actor="test")
    with runtime.factory() as session:
        old, new, other = session.scalars(select(Alert).order_by(Alert.id)).all()
        # the old report loses its text; its sender stays while the later report needs it
        assert (old.text, old.sender, new.sender, new.text) == ("", STRANGER, STRANGER, "A1 Djugu toujours")
        assert session.scalar(select(Message.sender).where(Message.id == first)) is None
    sent_and_aged(runtime, 100)
    run_retention(factory=runtime.factory, days=90, actor="test")
    with transaction(runtime.factory) as session:
        old, new, other = session.scalars(select(Alert).order_by(Alert.id)).all()
        assert old.sender == new.sender != other.sender and old.sender.startswith(PSEUDONYM)
        assert second in (old.message_id, new.message_id)
        incident = session.get(Incident, old.incident_id)
        assert incident is not None
        refresh(session, incident)
        assert (incident.report_count, incident.reporter_count) == (3, 2)


def test_numbers_in_old_place_names_are_masked(runtime: Runtime) -> None:
    report(runtime, STRANGER, "A1 chez Maman")  # no such place: the words are the place name
    with transaction(runtime.factory) as session:  # as if the words had been a number
        session.execute(update(Alert).values(place_name="chez 0810000099"))
        session.execute(update(Incident).values(place_name="chez 0810000099"))
    sent_and_aged(runtime, 91)
    done = run_retention(factory=runtime.factory, days=90, actor="test")
    assert done.counts["place names"] == 2  # the alert's and the incident's
    dump = everything(runtime.engine)
    assert "0810000099" not in dump and "810000099" not in dump


def test_the_daily_job_runs_once_a_day(runtime: Runtime) -> None:
    report(runtime, STRANGER, "A1 Djugu")
    sent_and_aged(runtime, 91)
    job = RetentionJob(
        factory=runtime.factory, engine=runtime.engine, days=90, signals=Signals(), every=0.05, delay=0
    )
    job.start()
    try:
        wait_for(lambda: last_run(runtime.factory) is not None)
        with runtime.factory() as session:
            assert session.scalar(select(Alert.text)) == ""
    finally:
        job.stop()
    job.step()  # a run finished less than a day ago: nothing to do
    with runtime.factory() as session:
        runs = session.scalars(select(AuditLog.id).where(AuditLog.action == AuditAction.RETENTION)).all()
    assert len(runs) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite deployments run one process
def test_a_run_under_way_in_another_replica_is_not_run_twice(runtime: Runtime, db_url: str) -> None:
    job = RetentionJob(factory=runtime.factory, engine=runtime.engine, days=90, signals=Signals())
    with runtime.engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": 0x4B454E52})
        job.step()
        assert last_run(runtime.factory) is None
        other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": 0x4B454E52})
        other.commit()
    job.step()
    assert last_run(runtime.factory) is not None


def test_a_stopped_run_is_not_logged_and_the_next_one_finishes(runtime: Runtime) -> None:
    for n in range(5):
        report(runtime, STRANGER, f"A1 Djugu {n}")
    sent_and_aged(runtime, 91)
    stopped = run_retention(factory=runtime.factory, days=90, actor="test", window=1, pause=lambda _: False)
    assert not stopped.complete and last_run(runtime.factory) is None
    finished = run_retention(factory=runtime.factory, days=90, actor="test", window=1)
    assert finished.complete and finished.counts["inbound texts"] == 4  # the first was done already
    assert last_run(runtime.factory) is not None


def test_every_scheduling_process_runs_the_job(settings: Settings) -> None:
    rt = Runtime(settings)
    rt.start(intake=False, processor=False, dispatcher=False, scheduler=True)
    try:
        assert rt.retention.alive and rt.dead_parts() == []
        assert rt.retention.days == 90 and last_run(rt.factory) is None  # its first look is minutes away
    finally:
        rt.stop()
    assert not rt.retention.alive


def test_a_late_failure_receipt_never_sends_an_emptied_message_again(runtime: Runtime) -> None:
    report(runtime, STRANGER, "AIDE")
    with transaction(runtime.factory) as session:
        session.execute(
            update(Message).where(Message.direction == "outbound").values(provider_message_id="SM1")
        )
    sent_and_aged(runtime, 91)
    run_retention(factory=runtime.factory, days=90, actor="test")
    receipt = DeliveryReport("africastalking", "SM1", DeliveryStatus.FAILED, "Failed", "late", {})
    with transaction(runtime.factory) as session:
        session.execute(
            update(Message).where(Message.direction == "outbound").values(provider="africastalking")
        )
        message = record_delivery(session=session, report=receipt, gateways=2)
        assert message is not None and (message.status, message.text) == ("failed", "")
