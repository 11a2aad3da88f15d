"""Two transactions at once, as two replicas run them: who waits for whom, and what each then sees.

Each test holds one transaction open in a thread, starts a second, and checks whether the second
waits (on PostgreSQL: the dedup cells' advisory locks, an incident's row lock; on SQLite: its
one writer at a time) and what it writes once the first commits. The intake's batches are here
too: a provider id twice in one batch stores one row.
"""

from __future__ import annotations

import math
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.db import transaction, utcnow
from app.enums import AuditAction
from app.models import Alert, AuditLog, Incident, Message, Person
from app.services import intake
from app.services.dedup import find_incident, report_cells
from app.services.geotag import distance_km
from app.services.incidents import Actor, acknowledge
from app.services.pipeline import handle_inbound
from app.services.runtime import Runtime
from gateways.base import InboundSms

DJUGU = (1.92, 30.50)
WAIT = 0.5  # long enough for a second transaction to get past any lock it is not made to wait at


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.stop()


def focal_point(runtime: Runtime, phone: str, at: tuple[float, float]) -> None:
    with transaction(runtime.factory) as session:
        session.add(
            Person(name=phone, phone=phone, role="focal_point", language="fr", home_lat=at[0], home_lon=at[1])
        )


def officer(runtime: Runtime, phone: str, name: str) -> Person:
    with transaction(runtime.factory) as session:
        person = Person(name=name, phone=phone, role="officer", language="fr", level=1)
        session.add(person)
    return person


def stored(runtime: Runtime, sender: str, text: str) -> int:
    sms = InboundSms("africastalking", uuid.uuid4().hex, sender, None, text, None, {})
    message_id = runtime.writer.store_now(sms, claim=False).message_id
    assert message_id is not None
    return message_id


class Held:
    """A transaction run in a thread up to its commit, which waits for `release()`."""

    def __init__(self, runtime: Runtime, work: Callable[..., object]) -> None:
        self.runtime, self.work = runtime, work
        self.done, self.go = threading.Event(), threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with transaction(self.runtime.factory) as session:
                self.result = self.work(session)
                self.done.set()
                self.go.wait(30)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def start(self) -> Held:
        self.thread.start()
        return self

    def release(self) -> object:
        self.go.set()
        self.thread.join(30)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.result


@contextmanager
def first_holds(runtime: Runtime, work: Callable[..., object]) -> Iterator[Held]:
    """The first transaction, done with its work and not yet committed, while the body runs."""
    held = Held(runtime, work).start()
    assert held.done.wait(30) and held.error is None, held.error
    try:
        yield held
    finally:
        held.release()


def process(runtime: Runtime, message_id: int) -> Callable[..., object]:
    def work(session) -> object:  # type: ignore[no-untyped-def]
        message = session.get(Message, message_id)
        return handle_inbound(session=session, message=message, config=runtime.pipeline)

    return work


def test_two_reports_of_one_event_at_once_make_one_incident(runtime: Runtime) -> None:
    focal_point(runtime, "+243810000101", DJUGU)
    focal_point(runtime, "+243810000102", (DJUGU[0] + 0.02, DJUGU[1]))  # 2 km north
    first, second = stored(runtime, "+243810000101", "A1"), stored(runtime, "+243810000102", "A1")
    with first_holds(runtime, process(runtime, first)):
        later = Held(runtime, process(runtime, second)).start()
        assert not later.done.wait(WAIT)  # it waits for the first report's commit
    later.release()
    with runtime.factory() as session:
        incidents = session.scalars(select(Incident)).all()
        assert [(i.report_count, i.reporter_count) for i in incidents] == [(2, 2)]
        assert session.scalar(select(func.count()).select_from(Alert).where(Alert.opened.is_(True))) == 1


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("A2", DJUGU),  # another category at the same place
        ("A1", (DJUGU[0] + 1.0, DJUGU[1])),  # the same category 111 km north
    ],
)
def test_reports_that_cannot_meet_wait_only_on_sqlite(
    runtime: Runtime, db_url: str, text: str, where: tuple[float, float]
) -> None:
    focal_point(runtime, "+243810000101", DJUGU)
    focal_point(runtime, "+243810000102", where)
    first, second = stored(runtime, "+243810000101", "A1"), stored(runtime, "+243810000102", text)
    with first_holds(runtime, process(runtime, first)):
        later = Held(runtime, process(runtime, second)).start()
        if db_url.startswith("postgresql"):  # no cell in common: it goes on while the first is open
            assert later.done.wait(10) and later.error is None, later.error
        else:  # SQLite has one writer at a time: every second transaction waits
            assert not later.done.wait(WAIT)
    later.release()
    with runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 2


def test_two_officers_acknowledging_at_once_one_wins(runtime: Runtime) -> None:
    focal_point(runtime, "+243810000101", DJUGU)
    alice, bob = officer(runtime, "+243990000101", "Alice"), officer(runtime, "+243990000102", "Bob")
    with transaction(runtime.factory) as session:
        handle_inbound(
            session=session,
            message=session.get(Message, stored(runtime, "+243810000101", "A1")),
            config=runtime.pipeline,
        )
    with runtime.factory() as session:
        incident_id = session.scalars(select(Incident.id)).one()

    def ack(person: Person) -> Callable[..., object]:
        def work(session) -> object:  # type: ignore[no-untyped-def]
            incident = session.get(Incident, incident_id)  # read before the other commits
            escalation = runtime.pipeline.escalation
            return acknowledge(
                session=session,
                incident=incident,
                officer=Actor.officer(session.merge(person)),
                escalation=escalation,
                now=utcnow(),
            ).changed

        return work

    with first_holds(runtime, ack(alice)) as first:
        later = Held(runtime, ack(bob)).start()
        assert not later.done.wait(WAIT)  # Bob's acknowledgement waits for Alice's commit
    assert (first.result, later.release()) == (True, False)
    with runtime.factory() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.acknowledged_by == "Alice"
        acks = session.scalars(select(AuditLog).where(AuditLog.action == AuditAction.ACK)).all()
        assert [a.actor for a in acks] == [f"sms:{alice.id}"]


def test_a_provider_id_twice_in_one_batch_is_stored_once(runtime: Runtime) -> None:
    now = utcnow()
    sms = InboundSms("twilio", "SM" + uuid.uuid4().hex, "+243810000101", None, "A1 Djugu", None, {})
    other = InboundSms("twilio", "SM" + uuid.uuid4().hex, "+243810000102", None, "RAS", None, {})
    rows = [
        intake.message_row(m, region="CD", now=now, claim_token=None, lease=timedelta(seconds=30))
        for m in (sms, other, sms)
    ]
    ids = intake.store_batch(runtime.engine, rows)
    assert ids[0] is not None and ids[1] is not None and ids[2] is None
    assert intake.store_batch(runtime.engine, rows[:1]) == [None]  # and a later retry of it
    with runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 2


@pytest.mark.parametrize(("precision", "joined"), [("country", False), ("home", True), ("place", True)])
def test_a_located_report_joins_located_incidents_only(
    runtime: Runtime, precision: str, joined: bool
) -> None:
    # An incident of a report without a place sits at its country's centre: a report of a place
    # that happens to lie near it is another event, and is opened under no cell's lock.
    now = utcnow()
    with transaction(runtime.factory) as session:
        incident = Incident(
            category="attack",
            severity="high",
            status="open",
            lat=DJUGU[0],
            lon=DJUGU[1],
            precision=precision,
            first_reported_at=now,
            last_reported_at=now,
            report_count=1,
            reporter_count=1,
            escalation_level=0,
            created_at=now,
        )
        session.add(incident)
    with transaction(runtime.factory) as session:
        found = find_incident(
            session,
            category="attack",
            lat=DJUGU[0] + 0.01,  # 1.1 km north
            lon=DJUGU[1],
            sender="+243810000202",
            at=now,
            radius_km=10.0,
            window=timedelta(hours=6),
        )
        assert (found is not None) == joined


def test_reports_that_can_meet_share_a_cell() -> None:
    rng = random.Random(17)
    for _ in range(2000):
        lat, lon = rng.uniform(-20, 20), rng.uniform(-20, 40)
        radius = rng.choice((1.0, 5.0, 10.0, 30.0))
        km, bearing = rng.uniform(0, radius), rng.uniform(0, 2 * math.pi)
        other = (
            lat + km * math.cos(bearing) / 111.0,
            lon + km * math.sin(bearing) / (111.0 * math.cos(math.radians(lat))),
        )
        if distance_km(lat, lon, *other) > radius:
            continue
        here = report_cells("attack", lat, lon, radius)
        assert here & report_cells("attack", *other, radius), (lat, lon, other, radius)
        assert len(here) <= 9
    here = report_cells("attack", *DJUGU, 10.0)
    assert not here & report_cells("looting", *DJUGU, 10.0)
    assert not here & report_cells("attack", DJUGU[0] + 1.0, DJUGU[1], 10.0)
    assert len(report_cells("attack", 89.9, 0.0, 10.0)) > 9  # near a pole: the whole box, never cut
