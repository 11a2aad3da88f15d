"""Escalation: the right duty officers are told, the next level when nobody acknowledges."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from app.config import Settings
from app.db import transaction, utcnow
from app.models import Incident, Message
from app.services import gazetteer
from app.services.runtime import Runtime
from gateways.base import InboundSms
from tests.test_corpus import CORPUS, load_roster

DUFOUR, OKELLO, MENON, DIALLO = "+243990000001", "+243990000002", "+243990000003", "+243990000004"


def setup(make_settings: Callable[..., Settings], **overrides: object) -> Runtime:
    runtime = Runtime(make_settings(**overrides))
    gazetteer.store(runtime.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    load_roster(runtime)
    return runtime


def sms(runtime: Runtime, sender: str, text: str, pid: str) -> int:
    stored = runtime.writer.store_now(InboundSms("africastalking", pid, sender, None, text, None, {}))
    assert stored.message_id is not None
    runtime.processor.process([stored.message_id])
    return stored.message_id


def told(runtime: Runtime, purpose: str) -> list[tuple[str | None, str]]:
    with runtime.factory() as session:
        rows = session.scalars(select(Message).where(Message.purpose == purpose).order_by(Message.id))
        return [(m.recipient, m.text) for m in rows]


def test_forward_goes_to_the_areas_level_one(make_settings: Callable[..., Settings]) -> None:
    runtime = setup(make_settings)
    sms(runtime, "+243810000001", "ALERTE ATTAQUE Djugu 20 hommes armés", "f1")
    sms(runtime, "+243810000003", "TAHADHARI SHAMBULIO Beni sasa", "f2")
    sms(runtime, "+243810000003", "A1 Kanyabayonga", "f3")  # no level-1 officer in Lubero
    forwards = told(runtime, "alert_forward")
    assert [r for r, _ in forwards] == [DUFOUR, OKELLO, MENON]
    code = forwards[0][1].split()[0]
    assert forwards[0][1].startswith(f"{code} ATTAQUE Djugu 20 - 1 rapports ")
    assert forwards[0][1].endswith(f"Repondez RECU {code}")
    assert "ACK" in forwards[1][1]  # Lt. Okello's language is English
    assert all("+2438" not in text for _, text in forwards)  # no reporter's number


def test_unacknowledged_incidents_climb_the_levels_until_acknowledged(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = setup(make_settings, ack_timeout=60)
    sms(runtime, "+243810000001", "A1 Djugu", "e1")

    def advance(minutes: int) -> None:
        with transaction(runtime.factory) as session:
            incident = session.scalars(select(Incident)).one()
            incident.next_escalation_at = utcnow() - timedelta(seconds=1)
            incident.created_at = utcnow() - timedelta(minutes=minutes)
        runtime.escalator.run_once()

    advance(1)
    advance(2)
    advance(3)  # at the top: the top level again
    assert [r for r, _ in told(runtime, "escalation")] == [MENON, DIALLO, DIALLO]
    assert runtime.escalator.run_once() == 0  # nothing due: nothing sent twice
    with runtime.factory() as session:
        code = session.scalars(select(Incident.code)).one()
    sms(runtime, DUFOUR, f"RECU {code}", "e2")
    advance(4)
    assert len(told(runtime, "escalation")) == 3  # acknowledged: no more escalation
    sms(runtime, "+243810000007", "A1 Djugu", "e3")
    sms(runtime, "+243820000011", "attaque djugu", "e4")
    updates = told(runtime, "update")
    assert [r for r, _ in updates] == [DUFOUR]  # one update per 15 minutes
    assert "2 rapports" in updates[0][1]  # sent with the first new report


def test_beeps_from_a_focal_point_become_alerts_to_call_back(make_settings: Callable[..., Settings]) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.models import Alert
    from tests.helpers import TWILIO_TOKEN, signed_headers

    settings = make_settings(twilio_auth_token=TWILIO_TOKEN)
    with TestClient(create_app(settings, dispatcher=False, scheduler=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        gazetteer.store(runtime.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
        load_roster(runtime)
        url = "http://testserver/webhooks/twilio/voice"
        for n, caller in enumerate(["+243810000001", "+243810000001", "+243820000099"]):
            form = {"CallSid": f"CA{n}", "From": caller, "To": "+243990001000", "CallStatus": "ringing"}
            r = client.post("/webhooks/twilio/voice", data=form, headers=signed_headers(form, url))
            assert r.status_code == 200 and "<Reject/>" in r.text
        bad = {"CallSid": "CA9", "From": "+243810000001"}
        assert (
            client.post(
                "/webhooks/twilio/voice", data=bad, headers=signed_headers(bad, url + "x")
            ).status_code
            == 403
        )
        for _ in range(2):  # Africa's Talking calls back twice per session: one beep
            r = client.post(
                "/webhooks/africastalking/-/voice",
                data={"sessionId": "S1", "callerNumber": "+243810000002", "isActive": "1"},
            )
            assert r.status_code == 200 and "<Reject/>" in r.text
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with runtime.factory() as session:
                pending = session.scalars(
                    select(Message).where(Message.direction == "inbound", Message.processed_at.is_(None))
                ).all()
            if not pending:
                break
            time.sleep(0.05)
        with runtime.factory() as session:
            alerts = session.scalars(select(Alert).order_by(Alert.id)).all()
            incidents = session.scalars(select(Incident).order_by(Incident.id)).all()
            beeps = session.scalars(select(Message).where(Message.kind == "beep")).all()
        assert len(beeps) == 4
        assert [(a.sender, a.category, a.precision, a.details.get("beep")) for a in alerts] == [
            ("+243810000001", "other", "home", True),
            ("+243810000001", "other", "home", True),
            ("+243810000002", "other", "home", True),
        ]
        assert [i.report_count for i in incidents] == [2, 1]  # repeated beeps join one incident
        forwards = told(runtime, "alert_forward")
        assert forwards and all("BEEP, call back" in text for _, text in forwards)  # Maj. Menon: en
        assert told(runtime, "reply") == []  # nobody is texted back for a beep
        triage = client.get("/api/v1/triage", headers={"Authorization": "Bearer test-admin-token-0123456789"})
        assert [m["sender"] for m in triage.json()["items"]] == ["+243820000099"]
