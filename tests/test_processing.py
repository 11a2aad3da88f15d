"""Processing after the commit: the pipeline's commands, failures isolated, leftovers picked up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.config import Settings
from app.db import transaction, utcnow
from app.models import AuditLog, Incident, Message, Person
from app.services import pipeline
from app.services.runtime import Runtime
from gateways.base import InboundSms

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
    assert out[ids[0]].text.startswith("Kengele: ALERT ") and out[ids[0]].language == "en"
    assert out[ids[1]].text.startswith("Kengele: ALERTE ") and out[ids[1]].language == "fr"
    assert out[ids[2]].text.startswith("Kengele: TAHADHARI ") and out[ids[2]].language == "sw"
    assert out[ids[3]].language == "en"


def test_stop_and_start(runtime: Runtime) -> None:
    stop = inbound(runtime, "+243810000004", "STOP", "s1")
    runtime.processor.process([stop])
    with runtime.factory() as session:
        assert session.scalar(select(Person.opted_out).where(Person.phone == "+243810000004")) is True
    help_ = inbound(runtime, "+243810000004", "HELP", "s2")
    runtime.processor.process([help_])
    assert help_ not in replies(runtime)  # nothing but the STOP confirmation while opted out
    start = inbound(runtime, "+243810000004", "START", "s3")
    runtime.processor.process([start])
    out = replies(runtime)
    assert stop in out and start in out
    with runtime.factory() as session:
        assert session.scalar(select(Person.opted_out).where(Person.phone == "+243810000004")) is False


def test_officer_acknowledges_and_others_are_refused(runtime: Runtime) -> None:
    alert = inbound(runtime, "+243810000004", "ALERT ATTACK Djugu", "a1")
    runtime.processor.process([alert])
    with runtime.factory() as session:
        code = session.scalars(select(Incident.code)).one()
    refused = inbound(runtime, "+243820000021", f"ACK {code}", "a2")
    runtime.processor.process([refused])
    with runtime.factory() as session:
        assert session.scalars(select(Incident.status)).one() == "open"
        assert session.scalars(select(AuditLog.action)).all() == ["ack_refused"]
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


def test_two_processors_never_process_a_message_twice(make_settings: Callable[..., Settings]) -> None:
    import threading

    a, b = Runtime(make_settings()), Runtime(make_settings())
    ids = [inbound(a, "+243820000002", f"A1 Djugu {i}", f"p{i}", claim=False) for i in range(60)]
    threads = [threading.Thread(target=rt.processor.sweep) for rt in (a, b) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with a.factory() as session:
        outbound = session.scalars(select(Message).where(Message.direction == "outbound")).all()
        incidents = session.scalars(select(Incident)).all()
    assert len(outbound) == 60 and len(incidents) == 60
    assert sorted(m.in_reply_to for m in outbound) == sorted(ids)
