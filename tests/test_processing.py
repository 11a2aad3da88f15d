"""Processing after the commit: the pipeline's commands, failures isolated, leftovers picked up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.db import transaction, utcnow
from app.models import Alert, AuditLog, Incident, Message, Person
from app.services import pipeline
from app.services.runtime import Runtime
from gateways.base import InboundSms
from tests.helpers import phone_is

OFFICER = "+243990000001"


def inbound(runtime: Runtime, sender: str, text: str, pid: str, *, claim: bool = True) -> int:
    stored = runtime.writer.store_now(
        InboundSms("africastalking", pid, sender, None, text, None, {}), claim=claim
    )
    assert stored.message_id is not None
    return stored.message_id


def replies(runtime: Runtime) -> dict[int, Message]:
    with runtime.factory() as session:
        rows = session.scalars(select(Message).where(Message.direction == "outbound"))
        return {m.in_reply_to: m for m in rows if m.in_reply_to is not None}


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    rt = Runtime(settings)
    with transaction(rt.factory) as session:
        session.add(Person(name="Capt. Alain Dufour", phone=OFFICER, role="officer", language="fr", level=1))
        session.add(Person(name="Grace Ndjadi", phone="+243810000004", role="focal_point", language="en"))
    return rt


def test_replies_in_the_senders_language(runtime: Runtime) -> None:
    ids = [
        inbound(runtime, "+243820000014", "HELP", "h1"),
        inbound(runtime, "+243820000015", "AIDE", "h2"),
        inbound(runtime, "+243820000016", "MSAADA", "h3"),
        inbound(runtime, "+243810000004", "AIDE", "h4"),  # Grace's roster language is English
    ]
    assert runtime.processor.process(ids) == 4
    out = replies(runtime)
    assert out[ids[0]].text.startswith("ALERT ") and out[ids[0]].language == "en"
    assert out[ids[1]].text.startswith("ALERTE ") and out[ids[1]].language == "fr"
    assert out[ids[2]].text.startswith("TAHADHARI ") and out[ids[2]].language == "sw"
    assert out[ids[3]].language == "en"


def test_stop_and_start(runtime: Runtime) -> None:
    stop = inbound(runtime, "+243810000004", "STOP", "s1")
    runtime.processor.process([stop])
    with runtime.factory() as session:
        assert session.scalar(select(Person.opted_out).where(phone_is("+243810000004"))) is True
    help_ = inbound(runtime, "+243810000004", "HELP", "s2")
    runtime.processor.process([help_])
    assert help_ not in replies(runtime)  # nothing but the STOP confirmation while opted out
    start = inbound(runtime, "+243810000004", "START", "s3")
    runtime.processor.process([start])
    out = replies(runtime)
    assert stop in out and start in out
    with runtime.factory() as session:
        assert session.scalar(select(Person.opted_out).where(phone_is("+243810000004"))) is False


def test_officer_acknowledges_and_others_are_refused(runtime: Runtime) -> None:
    alert = inbound(runtime, "+243810000004", "ALERT ATTACK Djugu", "a1")
    runtime.processor.process([alert])
    with runtime.factory() as session:
        code = session.scalars(select(Incident.code)).one()
    refused = inbound(runtime, "+243820000021", f"ACK {code}", "a2")
    runtime.processor.process([refused])
    with runtime.factory() as session:
        assert session.scalars(select(Incident.status)).one() == "open"
        assert session.scalars(select(AuditLog.action).where(AuditLog.actor != "escalation")).all() == [
            "ack_refused"
        ]
    ack = inbound(runtime, OFFICER, f"RECU {code}", "a3")
    again = inbound(runtime, OFFICER, f"OK {code.lower()}", "a4")
    runtime.processor.process([ack, again])
    out = replies(runtime)
    assert out[ack].text == f"{code} recu. Merci."
    assert "deja recu par Capt. Alain Dufour" in out[again].text
    with runtime.factory() as session:
        incident = session.scalars(select(Incident)).one()
        assert incident.status == "acknowledged" and incident.acknowledged_by == "Capt. Alain Dufour"


def test_a_failing_message_is_isolated_and_parked(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [inbound(runtime, "+243820000001", f"A1 Djugu {i}", f"f{i}") for i in range(5)]
    real = pipeline.HANDLERS["alert"]

    def explode(item: pipeline.Inbound) -> str:
        if item.message.provider_message_id == "f2":
            raise RuntimeError("boom")
        return real(item)

    monkeypatch.setitem(pipeline.HANDLERS, "alert", explode)
    assert runtime.processor.process(ids) == 4
    for _ in range(3):  # the sweep retries it until it parks it for a human
        with transaction(runtime.factory) as session:
            bad = session.scalars(select(Message).where(Message.provider_message_id == "f2")).one()
            bad.claimed_until = utcnow() - timedelta(seconds=1)
        runtime.processor.sweep()
    with runtime.factory() as session:
        rows = {
            m.provider_message_id: m
            for m in session.scalars(select(Message).where(Message.direction == "inbound"))
        }
    assert all(rows[f"f{i}"].outcome == "alert" for i in (0, 1, 3, 4))
    assert rows["f2"].outcome == "error" and rows["f2"].processed_at is not None
    assert "boom" in (rows["f2"].error or "")


def test_sweep_takes_unclaimed_and_expired_only(runtime: Runtime) -> None:
    free = inbound(runtime, "+243820000001", "RAS", "w1", claim=False)
    mine = inbound(runtime, "+243820000001", "RAS", "w2")
    assert runtime.processor.sweep() == 1  # `mine` is claimed by this process, not yet expired
    with transaction(runtime.factory) as session:
        row = session.get(Message, mine)
        assert row is not None
        row.claim_token, row.claimed_until = "dead-process", utcnow() + timedelta(minutes=5)
    assert runtime.processor.sweep() == 0
    assert runtime.processor.sweep(take_over=True) == 1  # SQLite at start: every claim is a dead one
    with runtime.factory() as session:
        assert session.get(Message, free).processed_at is not None  # type: ignore[union-attr]
        assert session.get(Message, mine).processed_at is not None  # type: ignore[union-attr]


def test_two_processors_never_process_a_message_twice(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from collections import Counter

    handled: Counter[int] = Counter()
    real = pipeline.HANDLERS["alert"]

    def counting(item: pipeline.Inbound) -> str:
        handled[item.message.id] += 1
        return real(item)

    monkeypatch.setitem(pipeline.HANDLERS, "alert", counting)
    many = {"reply_limit": "100/3600"}  # one sender here; the reply limit has its tests (tests/faults)
    a, b = Runtime(make_settings(**many)), Runtime(make_settings(**many))
    ids = [inbound(a, "+243820000002", f"A1 Djugu {i}", f"p{i}", claim=False) for i in range(60)]
    threads = [threading.Thread(target=rt.processor.sweep) for rt in (a, b) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with a.factory() as session:
        outbound = session.scalars(select(Message).where(Message.direction == "outbound")).all()
        alerts = session.scalars(select(Alert)).all()
    assert len(outbound) == 60 and len(alerts) == 60
    assert sorted(m.in_reply_to for m in outbound) == sorted(ids)
    assert set(handled) == set(ids) and set(handled.values()) == {1}


def test_processor_survives_a_database_outage(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    calls = {"n": 0}
    real = runtime.processor.process

    def flaky(ids: list[int]) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database unreachable")
        return real(ids)

    monkeypatch.setattr(runtime.processor, "process", flaky)
    runtime.processor.every = 0.1  # sweep after 0.1 s without messages
    runtime.start(intake=False, processor=True, dispatcher=False)
    try:
        runtime.processor.submit([inbound(runtime, "+243820000001", "RAS", "o1")])
        time.sleep(0.3)
        assert runtime.processor.alive and runtime.dead_parts() == []
        runtime.processor.submit([inbound(runtime, "+243820000001", "RAS", "o2")])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with runtime.factory() as session:
                query = select(Message).where(Message.direction == "inbound", Message.processed_at.is_(None))
                left = session.scalars(query).all()
            if not left:
                break
            time.sleep(0.05)
        assert not left  # the second, and the first once its claim expired, are processed
    finally:
        runtime.stop()


def test_web_only_process_leaves_messages_to_a_worker(runtime: Runtime) -> None:
    runtime.writer.claim = False
    message_id = inbound(runtime, "+243820000001", "RAS", "n1", claim=False)
    with runtime.factory() as session:
        row = session.get(Message, message_id)
        assert row is not None and row.claim_token is None and row.claimed_until is None


def test_one_bad_row_does_not_fail_its_intake_batch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from app.services import intake

    real = intake.store_batch

    def poisoned(engine, rows):  # type: ignore[no-untyped-def]
        if any(r["text"] == "poison" for r in rows):
            raise ValueError("the database refused a row")
        return real(engine, rows)

    monkeypatch.setattr(intake, "store_batch", poisoned)

    async def send_all() -> list[object]:
        sms = [
            InboundSms("twilio", f"SM{i}", "+243820000001", None, "poison" if i == 3 else "RAS", None, {})
            for i in range(8)
        ]
        tasks = [asyncio.ensure_future(runtime.writer.store(s)) for s in sms]
        await asyncio.sleep(0)  # all eight are queued before the writer wakes: one batch
        runtime.writer.start()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(send_all())
    finally:
        runtime.writer.stop()
    assert isinstance(results[3], ValueError)
    assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 3)
    with runtime.factory() as session:
        stored = set(
            session.scalars(select(Message.provider_message_id).where(Message.direction == "inbound"))
        )
    assert stored == {f"SM{i}" for i in range(8) if i != 3}


def test_unregistered_senders_get_no_confirmation_when_turned_off(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = Runtime(make_settings(reply_unregistered=False))
    with transaction(runtime.factory) as session:
        session.add(Person(name="Grace Ndjadi", phone="+243810000004", role="focal_point", language="en"))
    stranger = inbound(runtime, "+243820000031", "A1 Djugu", "u1")
    known = inbound(runtime, "+243810000004", "A1 Djugu", "u2")
    runtime.processor.process([stranger, known])
    out = replies(runtime)
    assert stranger not in out and known in out
    with runtime.factory() as session:  # the alert itself is recorded all the same
        assert len(session.scalars(select(Incident)).all()) == 2


def test_unknown_senders_are_answered_in_their_countrys_language(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = Runtime(make_settings(reply_countries="CD,KE"))  # a network covering Kenya too
    kenyan = inbound(runtime, "+254700000001", "STOP", "c1")
    congolese = inbound(runtime, "+243820000032", "STOP", "c2")
    runtime.processor.process([kenyan, congolese])
    out = replies(runtime)
    assert out[kenyan].language == "sw" and out[congolese].language == "fr"


# -- one batch, one sender: what earlier messages of the batch did counts for the later ones -----
def test_a_batch_of_one_senders_messages_gets_the_reply_limit_once(runtime: Runtime) -> None:
    sender = "+243820000031"  # unregistered: KENGELE_REPLY_LIMIT's 5 an hour
    first = [inbound(runtime, sender, "HELP", f"rl{i}") for i in range(8)]
    assert runtime.processor.process(first) == 8  # one batch: counted once, then as replies queue
    assert sum(m.recipient == sender for m in replies(runtime).values()) == 5
    more = [inbound(runtime, sender, "HELP", f"rl{i}") for i in range(8, 10)]
    assert runtime.processor.process(more) == 2  # the next batch counts the first one's replies
    assert sum(m.recipient == sender for m in replies(runtime).values()) == 5


def test_a_batch_of_one_unregistered_senders_alerts_forwards_the_flood_limit(runtime: Runtime) -> None:
    sender = "+243820000032"  # unregistered: KENGELE_FLOOD_LIMIT's 3 new incidents an hour forwarded
    ids = [inbound(runtime, sender, f"A{code}", f"fl{code}") for code in range(1, 7)]
    assert runtime.processor.process(ids) == 6
    with runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 6
        forwards = session.scalars(select(Message).where(Message.purpose == "alert_forward")).all()
    assert len(forwards) == 3


def test_a_join_then_an_alert_in_one_batch_is_read_as_the_joined_person(runtime: Runtime) -> None:
    sender = "+243820000033"
    ids = [inbound(runtime, sender, "JOIN Djugu", "j1"), inbound(runtime, sender, "A1 Djugu", "j2")]
    assert runtime.processor.process(ids) == 2
    with runtime.factory() as session:
        person = session.scalars(select(Person).where(phone_is(sender))).one()
        assert session.scalars(select(Alert.person_id)).one() == person.id
