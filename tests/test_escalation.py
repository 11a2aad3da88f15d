"""Escalation: the right duty officers are told, the next level when nobody acknowledges."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.crypto import keyring_for
from app.db import make_engine, make_sessionmaker, transaction, utcnow
from app.main import create_app
from app.models import AuditLog, Incident, Message, Person
from app.services import gazetteer
from app.services.runtime import Runtime
from app.services.shifts import normalize_shifts, on_duty, parse_shifts
from gateways.base import InboundSms
from tests.conftest import ADMIN_TOKEN
from tests.fakes import FakeProvider
from tests.helpers import AT_SECRET, phone_is, signed_headers
from tests.test_corpus import CORPUS, load_roster

pytestmark = pytest.mark.slow  # timed: acknowledgement timeouts and failovers: run alone (make test)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
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
    assert forwards[0][1].startswith(f"{code} ATTAQUE Djugu 20 - 1 rapport ")
    assert forwards[0][1].endswith(f"Repondez RECU {code}")
    assert "ACK" in forwards[1][1] and " - 1 report " in forwards[1][1]  # Lt. Okello's language is English
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
                f"/webhooks/africastalking/{AT_SECRET}/voice",
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
        # At home in Djugu: Capt. Dufour's area, in French, with the village named.
        assert [r for r, _ in forwards] == [DUFOUR, DUFOUR]
        assert " ALERTE Djugu BIP, rappeler - " in forwards[0][1]
        assert " ALERTE Fataki BIP, rappeler - " in forwards[1][1]
        assert told(runtime, "reply") == []  # nobody is texted back for a beep
        triage = client.get("/api/v1/triage", headers={"Authorization": "Bearer test-admin-token-0123456789"})
        assert [m["sender"] for m in triage.json()["items"]] == ["+243820000099"]


# -- shift tables ----------------------------------------------------------------------------------
MONDAY = datetime(2026, 11, 23)  # a Monday


@pytest.mark.parametrize(
    ("table", "when", "expected"),
    [
        (None, MONDAY.replace(hour=3), True),  # no table: always on duty
        ("", MONDAY.replace(hour=3), True),
        ("mon-fri 08:00-18:00", MONDAY.replace(hour=8), True),
        ("mon-fri 08:00-18:00", MONDAY.replace(hour=18), False),  # the end is not in the shift
        ("mon-fri 08:00-18:00", MONDAY + timedelta(days=5, hours=10), False),  # Saturday
        ("sat,sun 08:00-12:00", MONDAY + timedelta(days=6, hours=9), True),  # Sunday
        ("Mon-Fri 08:00-18:00; sat 08:00-12:00", MONDAY + timedelta(days=5, hours=11), True),
        ("fri 22:00-06:00", MONDAY + timedelta(days=5, hours=5), True),  # over midnight into Saturday
        ("sun 22:00-06:00", MONDAY.replace(hour=5, minute=59), True),  # over the week's end
        ("sun 22:00-06:00", MONDAY.replace(hour=6), False),
        ("fri-mon 20:00-24:00", MONDAY.replace(hour=21), True),  # a range that wraps
        ("fri-mon 20:00-24:00", MONDAY + timedelta(days=1, hours=21), False),
        ("daily 00:00-00:00", MONDAY + timedelta(days=3, hours=13), True),  # the whole day
        ("lun-ven 08:00-17:00", MONDAY + timedelta(days=4, hours=16), True),  # French days
    ],
)
def test_shift_tables(table: str | None, when: datetime, expected: bool) -> None:
    assert on_duty(table, when) is expected


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ("monday", "is not 'days HH:MM-HH:MM'"),
        ("mon-fry 08:00-18:00", "'mon-fry' is not a day"),
        ("mon 25:00-26:00", "'25:00' is not a time of day"),
        ("mon 08:60-09:00", "'08:60' is not a time of day"),
        ("mon 24:00-06:00", "'24:00' is not a time of day"),
        ("mon 08:00-18:00; funday 01:00-02:00", "'funday' is not a day"),
    ],
)
def test_bad_shift_tables_say_what_is_wrong(table: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_shifts(table)
    assert (
        normalize_shifts("  Mon-Fri  08:00-18:00 ;sat 08:00-12:00 ") == "mon-fri 08:00-18:00; sat 08:00-12:00"
    )


def _off_now() -> str:
    """A shift table that does not cover this moment (in the default time zone)."""
    local = utcnow().astimezone(ZoneInfo("Africa/Lubumbashi"))
    day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][(local.weekday() + 3) % 7]
    return f"{day} 08:00-18:00"


def add_officer(
    runtime: Runtime, name: str, phone: str, level: int, area: str | None, **extra: object
) -> int:
    with transaction(runtime.factory) as session:
        person = Person(
            name=name, phone=phone, role="officer", language="fr", level=level, area=area, **extra
        )
        session.add(person)
        session.flush()
        return person.id


def set_shifts(runtime: Runtime, phone: str, table: str | None) -> None:
    with transaction(runtime.factory) as session:
        person = session.scalars(select(Person).where(phone_is(phone))).one()
        person.shifts = table


KABILA = "+243990000005"


def test_off_duty_officers_are_passed_over_but_someone_is_always_told(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = setup(make_settings)
    add_officer(runtime, "Lt. Kabila", KABILA, 1, "Djugu")
    set_shifts(runtime, DUFOUR, _off_now())
    sms(runtime, "+243810000001", "A1 Djugu", "s1")
    assert [r for r, _ in told(runtime, "alert_forward")] == [KABILA]  # Dufour is off duty
    set_shifts(runtime, KABILA, _off_now())
    sms(runtime, "+243810000001", "A3 Djugu", "s2")  # level 1 all off duty: level 2
    assert [r for r, _ in told(runtime, "alert_forward")][1:] == [MENON]
    for phone in (MENON, DIALLO):
        set_shifts(runtime, phone, _off_now())
    sms(runtime, "+243810000001", "A4 Djugu", "s3")  # nobody on duty: the shift tables are set aside
    assert [r for r, _ in told(runtime, "alert_forward")][2:] == [DUFOUR, KABILA]


def test_a_report_at_home_goes_to_the_officers_of_the_home_area(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = setup(make_settings)
    sms(runtime, "+243810000003", "A2", "h1")  # Amani, at home in Beni, says no place
    with runtime.factory() as session:
        incident = session.scalars(select(Incident)).one()
        assert (incident.precision, incident.place_name, incident.area) == ("home", "Beni", "Beni")
    assert [r for r, _ in told(runtime, "alert_forward")] == [OKELLO]


def test_a_failed_forward_goes_to_the_next_officer_then_the_next_level(
    providers: Callable[..., Settings], twilio_fake: FakeProvider
) -> None:
    runtime = setup(lambda **kw: providers("twilio", **kw))
    backup = add_officer(runtime, "Lt. Kabila", KABILA, 1, "Djugu", shifts=_off_now())
    twilio_fake.then_for(DUFOUR, "400").then_for(KABILA, "400")  # neither number is valid
    sms(runtime, "+243810000001", "A1 Djugu 20", "x1")
    for _ in range(3):
        runtime.dispatcher.run_once()
        runtime.escalator.run_once()
    runtime.dispatcher.run_once()
    to = [r.form["To"][0] for r in twilio_fake.requests if r.form["To"][0] != "+243810000001"]
    assert to == [DUFOUR, KABILA, MENON]  # on duty first, the off-duty colleague, then level 2
    with runtime.factory() as session:
        incident = session.scalars(select(Incident)).one()
        assert incident.escalation_level == 2
        rows = session.scalars(select(Message).where(Message.direction == "outbound").order_by(Message.id))
        forwards = [(m.recipient, m.purpose, m.status) for m in rows if m.purpose != "reply"]
        assert forwards == [
            (DUFOUR, "alert_forward", "failed"),
            (KABILA, "alert_forward", "failed"),
            (MENON, "escalation", "sent"),
        ]
        steps = session.scalars(
            select(AuditLog).where(AuditLog.entity == "incident").order_by(AuditLog.id)
        ).all()
        assert [(a.action, a.details["officers"]) for a in steps] == [
            ("forward", [1 + 10]),  # Dufour is the roster's 11th person
            ("failover", [backup]),
            ("failover", [13]),  # Menon
        ]
    assert runtime.escalator.run_once() == 0  # each failure is handed on once
    runtime.stop()


def test_a_failed_receipt_is_retried_on_the_next_gateway(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, at_fake: FakeProvider
) -> None:
    settings = providers("twilio,africastalking", at_webhook_secret="sec")
    with TestClient(create_app(settings, dispatcher=False, scheduler=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        gazetteer.store(runtime.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
        load_roster(runtime)
        sms(runtime, "+243810000001", "A1 Djugu", "r1")
        runtime.dispatcher.run_once()
        forward = [r for r in twilio_fake.requests if r.form["To"][0] == DUFOUR]
        assert len(forward) == 1
        with runtime.factory() as session:
            row = session.scalars(select(Message).where(Message.purpose == "alert_forward")).one()
        form = {
            "MessageSid": row.provider_message_id or "",
            "MessageStatus": "undelivered",
            "ErrorCode": "30005",
        }
        url = "http://testserver/webhooks/twilio/status"
        assert (
            client.post("/webhooks/twilio/status", data=form, headers=signed_headers(form, url)).status_code
            == 204
        )
        runtime.dispatcher.run_once()
        assert [r.form["to"][0] for r in at_fake.requests] == [DUFOUR]  # sent again, by the other gateway
        with runtime.factory() as session:
            row = session.scalars(select(Message).where(Message.purpose == "alert_forward")).one()
            assert (row.status, row.provider) == ("sent", "africastalking")
        report = {"id": row.provider_message_id or "", "status": "Failed", "failureReason": "UserInBlacklist"}
        assert client.post("/webhooks/africastalking/sec/delivery", data=report).status_code == 200
        runtime.escalator.run_once()  # no gateway left: the next officer (none in Djugu), so level 2
        assert [r for r, _ in told(runtime, "escalation")] == [MENON]
        detail = client.get(f"/api/v1/incidents/{row.incident_id}", headers=ADMIN).json()
        assert [
            (n["recipient"], n["status"]) for n in detail["notifications"] if n["purpose"] != "reply"
        ] == [
            (DUFOUR, "failed"),
            (MENON, "queued"),
        ]
        assert [h["action"] for h in detail["history"]] == ["forward", "failover"]


def test_the_others_are_told_who_acknowledged_and_who_closed(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(ack_timeout=60)
    with TestClient(create_app(settings, dispatcher=False, scheduler=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        gazetteer.store(runtime.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
        load_roster(runtime)
        sms(runtime, "+243810000001", "A1 Djugu", "o1")
        with transaction(runtime.factory) as session:
            incident = session.scalars(select(Incident)).one()
            incident.next_escalation_at = utcnow() - timedelta(seconds=1)
        runtime.escalator.run_once()  # Maj. Menon is told too
        sms(runtime, MENON, f"ACK {incident.code}", "o2")
        assert told(runtime, "notice") == [
            (DUFOUR, f"{incident.code} pris en charge par Maj. Ravi Menon. Rien a faire de votre part.")
        ]
        sms(runtime, DUFOUR, f"RECU {incident.code}", "o3")  # too late: told who has it
        assert told(runtime, "reply")[-1] == (DUFOUR, f"{incident.code} deja recu par Maj. Ravi Menon.")
        closed = client.post(f"/api/v1/incidents/{incident.id}/close", headers=ADMIN).json()
        assert closed["status"] == "closed"
        assert told(runtime, "notice")[1:] == [
            (DUFOUR, f"{incident.code} clos par bootstrap-admin."),
            (MENON, f"{incident.code} closed by bootstrap-admin."),
        ]
        assert runtime.escalator.run_once() == 0


def test_a_stopped_server_escalates_what_fell_due_once_when_it_starts(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(ack_timeout=600)
    runtime = setup(lambda **kw: settings)
    sms(runtime, "+243810000001", "A1 Djugu", "t1")
    runtime.stop()
    engine = make_engine(settings.database_url, keyring=keyring_for(settings))
    with transaction(make_sessionmaker(engine)) as session:
        incident = session.scalars(select(Incident)).one()  # ten minutes of downtime, and more
        incident.next_escalation_at = utcnow() - timedelta(minutes=25)
    engine.dispose()
    again = Runtime(settings)
    assert again.escalator.run_once() == 1
    assert again.escalator.run_once() == 0
    assert [r for r, _ in told(again, "escalation")] == [MENON]
    again.stop()


def test_reporter_numbers_only_with_the_setting(make_settings: Callable[..., Settings]) -> None:
    runtime = setup(make_settings, forward_reporter_phone=True)
    sms(runtime, "+243810000001", "A1 Djugu", "p1")
    assert told(runtime, "alert_forward")[0][1].endswith(" +243810000001")


def test_an_officer_who_texted_stop_is_passed_over_until_start(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = setup(make_settings)
    sms(runtime, DUFOUR, "STOP", "q1")
    sms(runtime, "+243810000001", "A1 Djugu", "q2")
    assert [r for r, _ in told(runtime, "alert_forward")] == [MENON]  # the next level covering Djugu
    sms(runtime, DUFOUR, "START", "q3")
    sms(runtime, "+243810000001", "A3 Djugu", "q4")
    assert [r for r, _ in told(runtime, "alert_forward")][1:] == [DUFOUR]


def test_a_failed_forward_does_not_climb_while_a_colleague_has_it(
    providers: Callable[..., Settings], twilio_fake: FakeProvider
) -> None:
    runtime = setup(lambda **kw: providers("twilio", **kw))
    with transaction(runtime.factory) as session:  # no level in the roster: level 1
        session.add(Person(name="Lt. Kabila", phone=KABILA, role="officer", language="fr", area="Djugu"))
    twilio_fake.then_for(DUFOUR, "400")
    sms(runtime, "+243810000001", "A1 Djugu", "c1")
    runtime.dispatcher.run_once()
    runtime.escalator.run_once()
    assert told(runtime, "escalation") == []  # Kabila's forward was sent: the timeout stands
    with runtime.factory() as session:
        step = session.scalars(select(AuditLog).where(AuditLog.action == "failover")).one()
        assert step.details["officers"] == [] and "+243" not in step.details["error"]
    runtime.stop()
