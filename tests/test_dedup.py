"""Deduplication properties: reports of one event make one incident, whatever their order."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from app.config import Settings
from app.db import transaction
from app.models import Alert, AuditLog, Incident, Message, Person
from app.services import gazetteer
from app.services.dedup import EARLIEST, LATEST, find_incident, shifted
from app.services.geotag import distance_km
from app.services.runtime import Runtime
from gateways.base import InboundSms
from tests.helpers import weeks_to_now

# A Friday morning of the last week: inside the 30 days in which a provider's date is believed.
BASE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
BASE += weeks_to_now(BASE + timedelta(days=1))  # the latest report of a test is earlier
CODES = {"attack": 1, "armed_presence": 2, "looting": 6}


def clear(runtime: Runtime) -> None:
    with transaction(runtime.factory) as session:
        for model in (Alert, Message, Incident, AuditLog, Person):
            session.execute(delete(model))


def home_at(runtime: Runtime, phone: str, lat: float, lon: float) -> None:
    with transaction(runtime.factory) as session:
        session.add(
            Person(name=phone, phone=phone, role="focal_point", language="fr", home_lat=lat, home_lon=lon)
        )


def report(runtime: Runtime, sender: str, category: str, at: datetime) -> int:
    sms = InboundSms("africastalking", uuid.uuid4().hex, sender, None, f"A{CODES[category]}", at, {})
    stored = runtime.writer.store_now(sms)
    assert stored.message_id is not None
    return stored.message_id


def partition(runtime: Runtime, keys: dict[int, int]) -> set[frozenset[int]]:
    with runtime.factory() as session:
        rows = session.execute(select(Alert.message_id, Alert.incident_id)).all()
    groups: dict[int, set[int]] = {}
    for message_id, incident_id in rows:
        groups.setdefault(incident_id, set()).add(keys[message_id])
    return {frozenset(g) for g in groups.values()}


def offset(lat: float, lon: float, km_north: float, km_east: float) -> tuple[float, float]:
    return lat + km_north / 111.0, lon + km_east / (111.0 * math.cos(math.radians(lat)))


# Reports of a few events: each event is a village (cluster centre) and a category; its reports
# come from within 4 km of it, within one minute. Events are 40 km apart (radius 10 km).
events = st.lists(st.sampled_from(sorted(CODES)), min_size=1, max_size=4)
spread = st.lists(
    st.tuples(st.integers(0, 3), st.floats(-2.8, 2.8), st.floats(-2.8, 2.8), st.integers(0, 59)),
    min_size=1,
    max_size=10,
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(categories=events, reports=spread, order=st.randoms(use_true_random=False))
def test_reordering_reports_of_the_same_minute_changes_nothing(
    make_settings: Callable[..., Settings],
    categories: list[str],
    reports: list[tuple[int, float, float, int]],
    order,
) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(make_settings())
    plan = []
    for n, (event, north, east, second) in enumerate(reports):
        event %= len(categories)
        lat, lon = offset(1.9, 30.5, 40.0 * event, east)
        lat, lon = offset(lat, lon, north, 0)
        plan.append((n, f"+2438200{n:05d}", categories[event], lat, lon, BASE + timedelta(seconds=second)))
    outcomes = []
    for shuffled in (plan, order.sample(plan, len(plan))):
        clear(runtime)
        for _, phone, _, lat, lon, _ in plan:
            home_at(runtime, phone, lat, lon)
        keys = {report(runtime, phone, category, at): n for n, phone, category, _, _, at in shuffled}
        runtime.processor.process(sorted(keys))
        outcomes.append(partition(runtime, keys))
    assert outcomes[0] == outcomes[1]
    runtime.engine.dispose()


positions = st.lists(
    st.tuples(st.sampled_from(sorted(CODES)), st.floats(-30, 30), st.floats(-30, 30), st.integers(0, 600)),
    min_size=2,
    max_size=12,
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(reports=positions)
def test_a_report_never_joins_another_category_or_beyond_the_radius(
    make_settings: Callable[..., Settings], reports: list[tuple[str, float, float, int]]
) -> None:
    runtime = Runtime(make_settings())
    clear(runtime)
    ids = []
    for n, (category, north, east, minute) in enumerate(reports):
        phone = f"+2438210{n:05d}"
        lat, lon = offset(1.9, 30.5, north, east)
        home_at(runtime, phone, lat, lon)
        ids.append(report(runtime, phone, category, BASE + timedelta(minutes=minute)))
    runtime.processor.process(ids)
    with runtime.factory() as session:
        for incident in session.scalars(select(Incident)):
            alerts = session.scalars(select(Alert).where(Alert.incident_id == incident.id)).all()
            assert {a.category for a in alerts} == {incident.category}
            for a in alerts:
                assert distance_km(a.lat, a.lon, incident.lat, incident.lon) <= 10.0 + 1e-6  # type: ignore[arg-type]
            assert incident.report_count == len(alerts)
            assert incident.reporter_count == len({a.sender for a in alerts})
    runtime.engine.dispose()


def test_same_sender_counts_once_and_late_backlog_joins_by_report_time(settings: Settings) -> None:
    runtime = Runtime(settings)
    gazetteer.store(
        runtime.engine,
        [gazetteer.PlaceRow("P1", "Djugu", (), 1.922, 30.501, "Ituri", "Djugu", "CD", None, None, "csv")],
    )
    home_at(runtime, "+243820000001", 1.92, 30.5)
    home_at(runtime, "+243820000002", 1.93, 30.5)
    first = report(runtime, "+243820000001", "attack", BASE)
    again = report(runtime, "+243820000001", "attack", BASE + timedelta(minutes=5))
    late = report(runtime, "+243820000002", "attack", BASE + timedelta(minutes=2))  # delivered last
    far_later = report(runtime, "+243820000002", "attack", BASE + timedelta(hours=8))
    runtime.processor.process([first, again, late, far_later])
    with runtime.factory() as session:
        incidents = session.scalars(select(Incident).order_by(Incident.id)).all()
    assert [(i.report_count, i.reporter_count) for i in incidents] == [(3, 2), (1, 1)]
    assert incidents[0].first_reported_at == BASE and incidents[0].last_reported_at == BASE + timedelta(
        minutes=5
    )


def test_reports_located_only_by_country_do_not_join_each_other(settings: Settings) -> None:
    runtime = Runtime(settings)
    gazetteer.store(
        runtime.engine,
        [gazetteer.PlaceRow("P1", "Djugu", (), 1.922, 30.501, "Ituri", "Djugu", "CD", None, None, "csv")],
    )
    ids = [
        sms_id(runtime, "+243820000101", "ALERTE ATTAQUE Kpandroma"),
        sms_id(runtime, "+243820000102", "attaque a Lubero"),
        sms_id(runtime, "+243820000101", "ALERTE ATTAQUE Kpandroma"),  # the same sender again: joins
    ]
    runtime.processor.process(ids)
    with runtime.factory() as session:
        incidents = session.scalars(select(Incident).order_by(Incident.id)).all()
    assert [(i.precision, i.report_count, i.reporter_count) for i in incidents] == [
        ("country", 2, 1),
        ("country", 1, 1),
    ]


def sms_id(runtime: Runtime, sender: str, text: str) -> int:
    stored = runtime.writer.store_now(
        InboundSms("africastalking", uuid.uuid4().hex, sender, None, text, BASE, {})
    )
    assert stored.message_id is not None
    return stored.message_id


@pytest.mark.parametrize("at", [EARLIEST, EARLIEST + timedelta(hours=1), LATEST, LATEST - timedelta(hours=1)])
def test_the_window_stops_at_the_ends_of_time(settings: Settings, at: datetime) -> None:
    """No report time makes the window's arithmetic raise (a year-0001 date once failed processing)."""
    runtime = Runtime(settings)
    with runtime.factory() as session:
        for lat, lon in ((None, None), (1.9, 30.5)):
            found = find_incident(
                session,
                category="attack",
                lat=lat,
                lon=lon,
                sender="+243820000001",
                at=at,
                radius_km=10.0,
                window=timedelta(days=365),
            )
            assert found is None
    assert shifted(at, timedelta(days=365)) <= LATEST and shifted(at, -timedelta(days=365)) >= EARLIEST
    runtime.engine.dispose()
