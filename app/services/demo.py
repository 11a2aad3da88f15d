"""The demo network: a few villages of Ituri and Nord-Kivu, their officers and focal points.

`make run` loads it into an empty database so that a newcomer sees, within a minute, what the
service is for: an alert forwarded to the right officer, the officer's acknowledgement, and a
check-in round. It goes through the same services as `kengele gazetteer import` and `kengele
roster import`, adds a one-time admin API token, and queues a first check-in round at once rather
than at the next scheduled hour. Every number in it is invented: it is never loaded where a
gateway would text them (`refusal`: production, a gateway that reaches phones).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

import gateways
from app.auth import create_token
from app.config import Settings
from app.db import transaction, utcnow
from app.enums import ApiRole
from app.models import ApiToken, Person, User
from app.services import accounts, gazetteer, incidents, roster
from app.services.checkins import CheckIns, last_fire_time, parse_schedule

DATA = "app.demo"
GAZETTEER, ROSTER = "gazetteer.csv", "roster.csv"
TOKEN_NAME = "demo-admin"  # noqa: S105  (the name the token is listed and revoked by)
USER_NAME = "demo-admin"  # the dashboard user the demo makes (an admin), its password shown once


@dataclass(frozen=True, slots=True)
class Step:
    """One SMS of the walk-through printed after loading: who sends what, and what it shows."""

    sender: str
    text: str
    shows: str


# What to try once the demo is loaded, in this order (tests/test_demo.py holds them to the files).
ALERT = Step(
    "+243810001001",
    "ALERTE ATTAQUE Fataki 20 hommes armés",
    "Jeanne Mave, focal point at Fataki (Djugu), reports an attack: it is forwarded to "
    "Capt. Alain Dufour, level 1 for Djugu",
)
ACK = Step(
    "+243810009001",
    "RECU {code}",
    "Capt. Dufour acknowledges it ({code} is the code in the forward): no escalation to level 2",
)
CHECKIN = Step("+243810001002", "RAS", "Dieudonné Lonu, at Largu, answers the check-in: all is well")


class DemoError(RuntimeError):
    """The demo could not be loaded into this database: names the file, the row and the reason."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """What loading the demo did."""

    places: int  # places read from the demo gazetteer
    places_added: int
    people: roster.Report
    token: str | None  # the new admin token, to show once; None when a demo token is live already
    password: str | None  # the dashboard user USER_NAME's password, to show once; None if the user exists
    checkins: int  # check-in SMS queued by the first round
    next_code: str  # the code the walk-through's alert gets, unless another incident comes first


def refusal(settings: Settings) -> str | None:
    """Say why the demo may not be loaded where `settings` point, or None where it may."""
    if settings.env == "production":
        return "refused in production (KENGELE_ENV): its people and numbers are invented"
    texting = [name for name in settings.gateway if gateways.PROVIDERS[name].reaches_phones]
    if texting:
        return (
            f"KENGELE_GATEWAY sends through {', '.join(texting)}, which would text the demo's "
            "invented numbers; load it with KENGELE_GATEWAY=console"
        )
    return None


def people_count(engine: Engine) -> int:
    """How many people the roster holds (any role, any status)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count(Person.id))).scalar_one())


def load(
    *,
    engine: Engine,
    factory: sessionmaker[Session],
    rules: Callable[[Session], roster.Rules],
    checkins: CheckIns,
    actor: str,
    now: datetime | None = None,
) -> Loaded:
    """Load the demo's places and people, make a one-time admin token, and queue a first check-in round."""
    files = resources.files(DATA)
    with resources.as_file(files / GAZETTEER) as path:
        places = gazetteer.read_csv(path)
    added = gazetteer.store(engine, places).added
    report = roster.import_csv(factory, (files / ROSTER).read_bytes(), rules=rules, actor=actor, demo=True)
    if not report.applied:
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise DemoError(f"demo {ROSTER}: {report.errors[0]}{more}; no demo person was loaded")
    with transaction(factory) as session:
        token = None
        live = select(ApiToken.id).where(ApiToken.name == TOKEN_NAME, ApiToken.revoked_at.is_(None))
        if session.scalar(live) is None:
            token = create_token(session=session, name=TOKEN_NAME, role=ApiRole.ADMIN, actor=actor)
        password = None
        if session.scalar(select(User.id).where(User.name == USER_NAME)) is None:
            password = secrets.token_urlsafe(12)
            accounts.create_user(
                session=session, name=USER_NAME, role=ApiRole.ADMIN, password=password, actor=actor
            )
        code = incidents.next_code(session=session)
    queued = first_round(checkins, now or utcnow()) if report.created else 0
    return Loaded(len(places), added, report, token, password, queued, code)


def first_round(checkins: CheckIns, now: datetime) -> int:
    """Send every schedule's latest round now, as a server that was down sends a round it missed.

    The round keeps the key of its scheduled time (today 08:00, within the last 12 hours), so the
    server starting next, which sends such a missed round once, sends nothing twice; a schedule
    that has not fired in the last 12 hours gets a round keyed now. Returns the SMS queued.
    """
    queued = 0
    for line in checkins.schedules():
        due = last_fire_time(parse_schedule(line, checkins.tz), checkins.tz, now) or now
        queued += checkins.fire(line, due)
    return queued
