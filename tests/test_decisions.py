"""An officer's decision is the same by SMS and through the API: one table of cases run through both.

Each case sets up one incident (a report from Djugu, forwarded to Capt. Dufour, then escalated to
Maj. Menon; sometimes decided on by Dufour already), then makes the decision once as an SMS from
Col. Diallo (webhook -> pipeline) and once through the API route, each on a fresh database with the
same setup. The incident left and the notices queued to the other officers must be the same, the
actor's name apart. Diallo was never told about the incident, so that both ways tell the same
officers: an API token is not a roster entry, so nobody is left out as the actor.

Merging and moving a report have no SMS form: their table runs through the API only.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.config import Settings
from app.db import transaction, utcnow
from app.main import create_app
from app.models import AuditLog, Incident, Message
from app.services import gazetteer
from app.services.runtime import Runtime
from keywords.parser import lexicon
from tests.conftest import _truncate
from tests.helpers import AT_SECRET, at_form, wait_for
from tests.test_corpus import CORPUS, load_roster
from tests.test_escalation import ADMIN, DIALLO, DUFOUR, MENON, sms

WHO = "<who>"  # the actor's name, whichever way the decision was made
SMS_ACTOR, API_ACTOR = "Col. Fatou Diallo", "bootstrap-admin"
COMMANDS = {"ack": "RECU", "close": "CLOS"}  # Diallo writes French
ACKED_FR = "{code} pris en charge par {who}. Rien a faire de votre part."
ACKED_EN = "{code} acknowledged by {who}. No action needed from you."
CLOSED_FR, CLOSED_EN = "{code} clos par {who}.", "{code} closed by {who}."


@dataclass(frozen=True)
class Case:
    name: str
    before: str | None  # what Capt. Dufour did by SMS during the setup: "ack", "close" or nothing
    action: str  # "ack" or "close", by Col. Diallo (SMS) or the API's token
    changed: bool
    status: str
    acknowledged_by: str | None
    closed_by: str | None
    notices: list[tuple[str, str]]  # (recipient, template) queued by the decision
    reply: str  # the key of Diallo's answer by SMS (the API answers with the incident)


CAPT = "Capt. Alain Dufour"
ACKED = [(DUFOUR, ACKED_FR), (MENON, ACKED_EN)]
CLOSED = [(DUFOUR, CLOSED_FR), (MENON, CLOSED_EN)]
# fmt: off
CASES = [
    #    name            before   action   changed status          ack by closed by notices reply to Diallo
    Case("ack open",     None,    "ack",   True,   "acknowledged", WHO,   None,     ACKED,  "ack"),
    Case("ack acked",    "ack",   "ack",   False,  "acknowledged", CAPT,  None,     [],     "ack_already"),
    Case("close open",   None,    "close", True,   "closed",       None,  WHO,      CLOSED, "close"),
    Case("close acked",  "ack",   "close", True,   "closed",       CAPT,  WHO,      CLOSED, "close"),
    Case("close closed", "close", "close", False,  "closed",       None,  CAPT,     [],     "close_already"),
    # As today: nobody had acknowledged it, so the acknowledgement is recorded and told; it stays closed.
    Case("ack closed",   "close", "ack",   True,   "closed",       WHO,   CAPT,     ACKED,  "ack"),
]
# fmt: on


@pytest.fixture
def fresh_db(db_url: str, tmp_path: Path, sqlite_template: Path) -> Callable[[], str]:
    """A callable giving a fresh migrated database each time: a new SQLite file, or PostgreSQL emptied."""
    made: list[str] = []

    def fresh() -> str:
        if db_url.startswith("sqlite"):
            path = tmp_path / f"run{len(made)}.db"
            shutil.copy(sqlite_template, path)
            made.append(f"sqlite:///{path}")
        else:
            if made:  # the first run has the fixture's empty database
                _truncate(db_url)
            made.append(db_url)
        return made[-1]

    return fresh


def _setup(runtime: Runtime, before: str | None) -> Incident:
    gazetteer.store(runtime.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    load_roster(runtime)
    sms(runtime, "+243810000001", "A1 Djugu", "setup-report")  # forwarded to Dufour
    with transaction(runtime.factory) as session:
        incident = session.scalars(select(Incident)).one()
        incident.next_escalation_at = utcnow() - timedelta(seconds=1)
    runtime.escalator.run_once()  # and escalated to Menon
    if before is not None:
        sms(runtime, DUFOUR, f"{COMMANDS[before]} {incident.code}", "setup-decision")
    return incident


def _marks(runtime: Runtime) -> tuple[int, int]:
    with runtime.factory() as session:
        return (
            session.scalar(select(func.max(Message.id))) or 0,
            session.scalar(select(func.max(AuditLog.id))) or 0,
        )


def _outcome(runtime: Runtime, incident_id: int, marks: tuple[int, int], actor: str) -> dict[str, Any]:
    """The incident, the notices and the audit steps the decision left, its actor's name as WHO."""

    def who(text: str | None) -> str | None:
        return text.replace(actor, WHO) if text is not None else None

    with runtime.factory() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        queued = session.scalars(
            select(Message)
            .where(Message.id > marks[0], Message.direction == "outbound", Message.purpose != "reply")
            .order_by(Message.id)
        ).all()
        steps = session.scalars(
            select(AuditLog.action)
            .where(AuditLog.id > marks[1], AuditLog.entity == "incident")
            .order_by(AuditLog.id)
        ).all()
        return {
            "status": incident.status,
            "acknowledged_by": who(incident.acknowledged_by),
            "acknowledged": incident.acknowledged_at is not None,
            "closed_by": who(incident.closed_by),
            "closed": incident.closed_at is not None,
            "escalation": (
                incident.escalation_level,
                incident.escalation_step,
                incident.next_escalation_at is None,
            ),
            "reports": incident.report_count,
            "notices": [
                (m.recipient, m.purpose, m.language, m.incident_id, who(m.text), m.status) for m in queued
            ],
            "audit": list(steps),
        }


def _run(case: Case, via: str, settings: Settings) -> tuple[dict[str, Any], str, str | None]:
    """Set the case up on a fresh database and decide by `via`; the outcome, the code, the SMS reply."""
    with TestClient(create_app(settings, dispatcher=False, scheduler=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        incident = _setup(runtime, case.before)
        marks = _marks(runtime)
        reply = None
        if via == "sms":
            form = at_form(sender=DIALLO, text=f"{COMMANDS[case.action]} {incident.code}", date=None)
            assert client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form).status_code == 200

            def answered() -> str | None:
                with runtime.factory() as session:
                    replies = session.execute(
                        select(Message.text, Message.recipient).where(
                            Message.id > marks[0], Message.purpose == "reply"
                        )
                    )
                    return next((text for text, to in replies if to == DIALLO), None)

            reply = wait_for(answered)
            actor = SMS_ACTOR
        else:
            r = client.post(f"/api/v1/incidents/{incident.id}/{case.action}", headers=ADMIN)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == case.status
            actor = API_ACTOR
        return _outcome(runtime, incident.id, marks, actor), incident.code or "", reply


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_sms_command_and_its_api_route_decide_alike(
    case: Case, make_settings: Callable[..., Settings], fresh_db: Callable[[], str]
) -> None:
    by_sms, code, reply = _run(case, "sms", make_settings(database_url=fresh_db(), ack_timeout=60))
    by_api, api_code, _ = _run(case, "api", make_settings(database_url=fresh_db(), ack_timeout=60))
    assert api_code == code
    assert by_sms == by_api
    assert reply == lexicon("fr").grammars["fr"].replies[case.reply].format(code=code, who=CAPT)
    assert (by_sms["status"], by_sms["acknowledged_by"], by_sms["closed_by"]) == (
        case.status,
        case.acknowledged_by,
        case.closed_by,
    )
    expected = [(to, "notice", text.format(code=code, who=WHO)) for to, text in case.notices]
    assert [(n[0], n[1], n[4]) for n in by_sms["notices"]] == expected
    assert by_sms["audit"] == ([case.action] if case.changed else [])
    # Level 2 after the forward and one escalation, as set up; decided on: no more steps due.
    assert by_sms["escalation"] == (2, 2, True)


# -- merge and move: no SMS form, the service through the API ---------------------------------------
def _reports(client: TestClient, runtime: Runtime, texts: list[tuple[str, str]]) -> list[dict[str, Any]]:
    for n, (sender, text) in enumerate(texts):
        sms(runtime, sender, text, f"report-{n}")
    items = client.get("/api/v1/incidents", headers=ADMIN).json()["items"]
    return sorted(items, key=lambda i: i["id"])


def _queued(runtime: Runtime) -> int:
    with runtime.factory() as session:
        return (
            session.scalar(select(func.count()).select_from(Message).where(Message.purpose == "notice")) or 0
        )


def test_merge_and_move_through_the_api(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(), dispatcher=False, scheduler=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        gazetteer.store(runtime.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
        load_roster(runtime)
        djugu, bunia, beni = _reports(
            client,
            runtime,
            [("+243810000001", "A1 Djugu"), ("+243810000002", "A1 Bunia"), ("+243810000003", "A1")],
        )
        assert (djugu["area"], bunia["area"], beni["area"]) == ("Djugu", "Irumu", "Beni")
        assert beni["precision"] == "home"  # Amani, at home in Beni, named no place

        r = client.post(f"/api/v1/incidents/{bunia['id']}/merge", json={"into": djugu["id"]}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["report_count"] == 2
        source = client.get(f"/api/v1/incidents/{bunia['id']}", headers=ADMIN).json()
        assert (source["status"], source["closed_by"]) == ("closed", f"merged into {djugu['code']}")

        refused = client.post(
            f"/api/v1/incidents/{beni['id']}/merge", json={"into": bunia["id"]}, headers=ADMIN
        )
        assert refused.status_code == 422 and refused.json()["detail"] == f"into: {bunia['code']} is closed"

        # A report moved into an incident of its own keeps its area (the same rule as when recorded).
        report = r.json()["reports"][-1]  # the one from Bunia
        moved = client.post(f"/api/v1/alerts/{report['id']}/move", json={}, headers=ADMIN).json()
        assert (moved["place_name"], moved["area"], moved["report_count"]) == ("Bunia", "Irumu", 1)
        at_home = client.get(f"/api/v1/incidents/{beni['id']}", headers=ADMIN).json()["reports"][0]
        own = client.post(f"/api/v1/alerts/{at_home['id']}/move", json={}, headers=ADMIN).json()
        assert (own["precision"], own["place_name"], own["area"]) == ("home", "Beni", "Beni")
        emptied = client.get(f"/api/v1/incidents/{beni['id']}", headers=ADMIN).json()
        assert (emptied["status"], emptied["closed_by"]) == ("closed", f"emptied into {own['code']}")

        closed = client.post(
            f"/api/v1/alerts/{at_home['id']}/move", json={"incident_id": bunia["id"]}, headers=ADMIN
        )
        assert (
            closed.status_code == 422 and closed.json()["detail"] == f"incident_id: {bunia['code']} is closed"
        )
        assert _queued(runtime) == 0  # merging and moving tell nobody
        with runtime.factory() as session:
            actions = session.scalars(
                select(AuditLog.action).where(AuditLog.actor == "api:bootstrap-admin").order_by(AuditLog.id)
            ).all()
        assert actions == ["merge", "move_report", "move_report"]
