"""Several `kengele serve` processes on one PostgreSQL database: every step is done exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.config import Settings
from app.models import Alert, AuditLog, CheckIn, Incident, Message
from app.services import gazetteer
from app.services.runtime import Runtime
from tests.fakes import FakeProvider
from tests.helpers import TWILIO_TOKEN, at_form, signed_headers, twilio_form, wait_for
from tests.server import Server, WorkerProcess, start_all
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
    servers = [Server(db_url, tmp_path, **env) for _ in range(2)]
    try:
        start_all(*servers)
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


# Places of the corpus gazetteer more than 30 km apart: one event each, never one another's.
EVENTS = ["Bunia", "Djugu", "Komanda", "Mambasa", "Boga", "Mahagi", "Aru", "Ariwara", "Beni", "Mutwanga"]
# Four villagers report each event at the same instant, in their own words, two through each replica.
WORDINGS = [
    "A1 {place} 20",
    "ALERTE ATTAQUE {place} hommes armes",
    "TAHADHARI SHAMBULIO {place}",
    "atack {place}",
]
PUBLIC = "https://alerts.example.org"  # both replicas sit behind one proxy: one public URL
OFFICER = "+243990000003"  # Maj. Ravi Menon, level 2, everywhere


def post_twilio(server: Server, path: str, form: dict[str, str]) -> int:
    headers = signed_headers(form, PUBLIC + path)
    return httpx.post(server.url + path, data=form, headers=headers, timeout=15).status_code


def at_once(calls: list[Callable[[], int]]) -> list[int]:
    """Run every call at the same instant (a barrier), each in its own thread; their answers."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], int]) -> int:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_web_replicas_and_a_worker_take_a_mixed_replay_each_step_once(
    db_url: str, tmp_path: Path, make_settings: Callable[..., Settings], twilio_fake: FakeProvider
) -> None:
    """The production shape: reports of one event reach both replicas at once and make one incident."""
    setup = Runtime(make_settings())
    gazetteer.store(setup.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    load_roster(setup)
    env = provider_env(twilio_fake) | {"KENGELE_PUBLIC_URL": PUBLIC}
    webs = [Server(db_url, tmp_path, "--no-scheduler", "--no-dispatcher", **env) for _ in range(2)]
    worker = WorkerProcess(db_url, tmp_path, **env)
    sms = "/webhooks/twilio/sms"
    answers: list[int] = []
    try:
        start_all(*webs, worker)
        # Alerts: each event's four reports at one instant, two on each replica; the first
        # report of every other event is also retried by the provider, at once, on the other one.
        for e, place in enumerate(EVENTS):
            calls: list[Callable[[], int]] = []
            for k, wording in enumerate(WORDINGS):
                form = twilio_form(f"+2438200{e:02d}{k:03d}", wording.format(place=place))
                calls.append(lambda s=webs[k % 2], f=form: post_twilio(s, sms, f))
                if k == 0 and e % 2 == 0:
                    calls.append(lambda s=webs[1], f=form: post_twilio(s, sms, f))
            answers += at_once(calls)
        reports = len(EVENTS) * len(WORDINGS)
        wait_for(lambda: processed(setup) == reports, timeout=30)
        with setup.factory() as session:
            codes = {i.place_name: i.code for i in session.scalars(select(Incident))}
        # Commands: an officer acknowledges every other incident, each on one replica.
        for n, place in enumerate(EVENTS[::2]):
            form = twilio_form(OFFICER, f"RECU {codes[place]}")
            answers.append(post_twilio(webs[n % 2], sms, form))
        # A check-in round (the worker sends it) and every focal point's answer, both replicas at once.
        rounds = setup.checkins.fire(setup.settings.checkin_schedule, datetime.now(UTC))
        assert rounds > 0
        wait_for(lambda: len(checkins_sent(setup)) == rounds, timeout=30)
        focal = checkins_sent(setup)
        calls = [
            lambda s=webs[n % 2], p=p: post_twilio(s, sms, twilio_form(p, "OK")) for n, p in enumerate(focal)
        ]
        answers += at_once(calls)
        wait_for(lambda: processed(setup) == reports + len(EVENTS[::2]) + len(focal), timeout=30)
        # Every SMS sent, and a delivery receipt for each, on both replicas at once.
        wait_for(lambda: unsent(setup) == 0, timeout=30)
        sids = [r.sid for r in twilio_fake.requests if r.sid]
        status = "/webhooks/twilio/status"
        receipts = [{"MessageSid": sid, "MessageStatus": "delivered", "ErrorCode": "0"} for sid in sids]
        # Each receipt to both replicas side by side, sixteen posts in flight.
        with ThreadPoolExecutor(16) as pool:
            answers += pool.map(
                lambda s_f: post_twilio(*s_f), [(s, status, f) for f in receipts for s in webs]
            )
        wait_for(lambda: delivered(setup) == len(sids), timeout=30)
    finally:
        for server in [*webs, worker]:
            server.stop()

    assert set(answers) == {200} or set(answers) == {200, 204}, Counter(answers)
    with setup.factory() as session:
        incidents = session.scalars(select(Incident)).all()
        inbound = session.scalars(select(Message).where(Message.direction == "inbound")).all()
        alerts = session.scalars(select(Alert)).all()
        answered = session.scalars(select(CheckIn).where(CheckIn.answered_at.is_not(None))).all()
        sent = session.scalars(
            select(Message).where(Message.direction == "outbound", Message.status.in_(["sent", "delivered"]))
        ).all()
    # No report stored twice (the retries), none lost; one incident per event, with all four reports.
    assert len(inbound) == reports + len(EVENTS[::2]) + len(focal)
    assert len(alerts) == reports
    assert sorted(i.place_name or "" for i in incidents) == sorted(EVENTS), "an event made two incidents"
    assert {(i.report_count, i.reporter_count) for i in incidents} == {(len(WORDINGS), len(WORDINGS))}
    acked = {i.place_name for i in incidents if i.status == "acknowledged"}
    assert acked == set(EVENTS[::2])
    assert len(answered) == len(focal)
    # Each SMS reached the provider once, and each receipt was applied (once) to its SMS.
    received = Counter((r.form["To"][0], r.form["Body"][0]) for r in twilio_fake.requests)
    assert max(received.values()) == 1, "an SMS was sent twice"
    assert received == Counter((m.recipient, m.text) for m in sent)
    assert {m.status for m in sent} == {"delivered"}


def processed(runtime: Runtime) -> int:
    with runtime.factory() as session:
        rows = session.scalars(
            select(Message.id).where(Message.direction == "inbound", Message.processed_at.is_not(None))
        ).all()
    return len(rows)


def unsent(runtime: Runtime) -> int:
    with runtime.factory() as session:
        rows = session.scalars(
            select(Message.id).where(
                Message.direction == "outbound", Message.status.in_(["queued", "sending"])
            )
        ).all()
    return len(rows)


def delivered(runtime: Runtime) -> int:
    with runtime.factory() as session:
        rows = session.scalars(select(Message.id).where(Message.status == "delivered")).all()
    return len(rows)


def checkins_sent(runtime: Runtime) -> list[str]:
    """The focal points a check-in was sent to."""
    with runtime.factory() as session:
        rows = session.scalars(
            select(Message.recipient).where(Message.purpose == "checkin", Message.status == "sent")
        ).all()
    return sorted(r or "" for r in rows)
