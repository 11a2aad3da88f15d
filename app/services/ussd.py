"""The USSD session (Africa's Talking): the row a session lives in, the caller it began with, the intake.

The menu itself is app/services/ussd_menu.py, a pure state machine; this layer gives it what the
database knows and keeps what it answers. Where a caller is in the menu is replayed from Africa's
Talking's cumulative `text` ("1*3*Lopa*20") every time, so an answer depends on nothing but that
text and the session row: a retry gets the same screen and a restarted server continues where it
was. The row keeps what must not change during a session (the caller's language, home and nearby
villages as they were when it began), the screen reached, and the outcome. A confirmed report or
check-in is stored through the intake like any SMS, so the same pipeline makes the alert and the
incident; the intake's idempotency on the message id (`ussd-<sessionId>`) means a retried last
step never stores a second report.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.crypto import keyring_of
from app.db import transaction, utcnow
from app.enums import AuditAction, AuditEntity, Direction, Precision
from app.models import Alert, AuditLog, Incident, Message, Person, Place, UssdSession
from app.outage import dropped, unavailable
from app.phones import country, normalize
from app.services import ussd_menu as menu
from app.services.language import language_for
from app.services.ussd_menu import Caller, End, Outcome, OutcomeKind, State
from gateways.base import InboundSms, UssdRequest
from keywords.parser import Lexicon

if TYPE_CHECKING:
    from app.services.runtime import Runtime

PROCESSING_WAIT = 5.0  # seconds a confirmed report waits for its incident code (AT waits about 10)
POLL = 0.05
NEARBY = 5  # villages offered near the caller's home
NEARBY_KM = 50.0  # half the side of the box they are looked for in


# -- the caller, from the roster and the gazetteer ------------------------------------------------
def _caller(*, session: Session, phone: str, lex: Lexicon) -> Caller:
    """Look the caller up on the roster; a stranger is a `Caller()` the menu asks for a language."""
    person = session.scalar(select(Person).where(Person.phone_index.in_(keyring_of(session).indexes(phone))))
    if person is None:
        return Caller()
    home: tuple[float, float] | None = None
    if person.home_lat is not None and person.home_lon is not None:
        home = (person.home_lat, person.home_lon)
    place = session.get(Place, person.place_id) if person.place_id is not None else None
    return Caller(
        person_id=person.id,
        language=person.language if person.language in lex.grammars else None,
        home=home,
        home_name=place.name if place else None,
        area=person.area,
        nearby=nearby(session=session, home=home, exclude=place) if home else (),
    )


def nearby(*, session: Session, home: tuple[float, float], exclude: Place | None) -> tuple[str, ...]:
    """Find up to NEARBY gazetteer places nearest the home (a bounding box, ordered by flat distance)."""
    lat, lon = home
    shrink = max(math.cos(math.radians(lat)), 0.01)
    dlat = NEARBY_KM / 111.2
    dlon = dlat / shrink
    distance = (Place.lat - lat) * (Place.lat - lat) + (Place.lon - lon) * (Place.lon - lon) * (
        shrink * shrink
    )
    query = (
        select(Place.name)
        .where(Place.lat.between(lat - dlat, lat + dlat), Place.lon.between(lon - dlon, lon + dlon))
        .order_by(distance, Place.id)
        .limit(NEARBY * 3)
    )
    if exclude is not None:
        query = query.where(Place.id != exclude.id)
    names: list[str] = []
    for name in session.scalars(query):
        if name not in names and (exclude is None or name != exclude.name):
            names.append(name)
    return tuple(names[:NEARBY])


def _resolver(*, runtime: Runtime, session: Session, caller: Caller, phone: str) -> menu.Resolve:
    """Name typed places from the place index, near the caller's home, in the caller's country."""
    where = country(phone)

    def resolve(name: str) -> str | None:
        # The index is asked for only when a place is typed: most steps type none.
        index = runtime.pipeline.places.get(session)
        found = index.resolve(name.split(), home=caller.home, area=caller.area, country=where)
        return found.place.name if found.place is not None and found.precision == Precision.PLACE else None

    return resolve


# -- the session row --------------------------------------------------------------------------------
def _caller_data(caller: Caller) -> dict[str, Any]:
    """Write the caller as the row keeps them, in JSON."""
    return {
        "person_id": caller.person_id,
        "language": caller.language,
        "home": list(caller.home) if caller.home else None,
        "home_name": caller.home_name,
        "area": caller.area,
        "nearby": list(caller.nearby),
    }


def _caller_of(data: dict[str, Any]) -> Caller:
    """Read the caller back from the row."""
    home = data.get("home")
    return Caller(
        person_id=data.get("person_id"),
        language=data.get("language"),
        home=(float(home[0]), float(home[1])) if home else None,
        home_name=data.get("home_name"),
        area=data.get("area"),
        nearby=tuple(data.get("nearby") or ()),
    )


def _choice_data(state: State) -> dict[str, Any]:
    """Write what the caller has chosen so far, for whoever reads the row."""
    return {"category": state.category, "place": state.place, "home": state.at_home, "count": state.count}


def _outcome_data(outcome: Outcome) -> dict[str, str]:
    """Write the outcome as the row keeps it, in JSON."""
    return {"kind": outcome.kind.value, "text": outcome.text, "language": outcome.language}


def _outcome_of(data: dict[str, Any]) -> Outcome:
    """Read the outcome back from the row."""
    return Outcome(kind=OutcomeKind(data["kind"]), text=data["text"], language=data["language"])


def _open(*, session: Session, request: UssdRequest, lex: Lexicon, now: datetime) -> UssdSession:
    """Start the session's row with the caller as the roster has them now."""
    caller = _caller(session=session, phone=request.phone, lex=lex)
    row = UssdSession(
        session_id=request.session_id,
        phone=request.phone,
        service_code=request.service_code,
        language=language_for(lexicon=lex, roster=caller.language),
        text="",
        screen=menu.start(caller=caller, lex=lex).screen,
        data={"caller": _caller_data(caller)},
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()  # a concurrent first request for this session fails here, and is redone
    return row


def _advance(*, runtime: Runtime, request: UssdRequest) -> str | Outcome:
    """Replay the session to this step in one transaction: the screen, or the outcome to store."""
    lex = runtime.pipeline.lexicon
    now = utcnow()
    with transaction(runtime.factory) as session:
        row = session.get(UssdSession, request.session_id)
        if row is None:
            row = _open(session=session, request=request, lex=lex, now=now)
        elif row.phone != request.phone:  # a session id is one caller's: never show another's home
            return menu.end(End.EXPIRED, language=lex.default_language, lex=lex)
        elif row.ended_at is not None:
            row.updated_at = now
            if (stored := row.data.get("outcome")) is None:  # expired
                return menu.end(End.EXPIRED, language=language_for(lexicon=lex, roster=row.language), lex=lex)
            return _outcome_of(stored)
        elif now - row.updated_at > timedelta(seconds=runtime.settings.ussd_session_timeout):
            row.screen, row.ended_at, row.updated_at = End.EXPIRED, now, now
            return menu.end(End.EXPIRED, language=language_for(lexicon=lex, roster=row.language), lex=lex)
        caller = _caller_of(row.data["caller"])
        resolve = _resolver(runtime=runtime, session=session, caller=caller, phone=request.phone)
        step = menu.walk(request.text, caller=caller, lex=lex, resolve=resolve)
        state = step.state
        row.text, row.language, row.updated_at = request.text, state.language, now
        row.screen = state.done or state.screen
        data: dict[str, Any] = {**row.data, "choice": _choice_data(state)}
        if isinstance(step.reply, Outcome):
            data["outcome"] = _outcome_data(step.reply)
        row.data = data
        if state.changed_language and caller.person_id is not None:  # a stranger's holds for the session
            _set_language(
                session=session, person_id=caller.person_id, language=state.changed_language, now=now
            )
        return step.reply


def _set_language(*, session: Session, person_id: int, language: str, now: datetime) -> None:
    """Keep the language a caller on the roster chose for their next calls and SMS, and audit it."""
    person = session.get(Person, person_id)
    if person is None or person.language == language:
        return  # a retried step changes nothing twice
    details = {"from": person.language, "to": language}
    person.language = language
    session.add(
        AuditLog(
            actor=f"ussd:{person_id}",
            action=AuditAction.SET_LANGUAGE,
            entity=AuditEntity.PERSON,
            entity_id=str(person_id),
            details=details,
            at=now,
        )
    )


def _ended(*, runtime: Runtime, session_id: str, message_id: int | None, code: str | None) -> None:
    """Close the session's row on the message it stored and the incident it made."""
    with transaction(runtime.factory) as session:
        row = session.get(UssdSession, session_id)
        if row is not None:
            row.message_id = message_id or row.message_id
            row.incident_code = code or row.incident_code
            row.ended_at = row.ended_at or utcnow()


# -- the intake -----------------------------------------------------------------------------------
def _stored_id(*, runtime: Runtime, provider: str, provider_id: str) -> int | None:
    """Find the inbound message an earlier try of this step stored."""
    with runtime.factory() as session:
        return session.scalar(
            select(Message.id).where(
                Message.direction == Direction.INBOUND,
                Message.provider == provider,
                Message.provider_message_id == provider_id,
            )
        )


async def _store(*, runtime: Runtime, request: UssdRequest, outcome: Outcome) -> int | None:
    """Store the outcome's SMS through the intake as if the caller had sent it; its message id."""
    provider_id = f"ussd-{request.session_id}"
    raw = {
        "sessionId": [request.session_id],
        "serviceCode": [request.service_code or ""],
        "phoneNumber": [request.phone],
        "networkCode": [request.network_code or ""],
        "text": [request.text],
    }
    stored = await runtime.writer.store(
        InboundSms(
            provider=request.provider,
            provider_message_id=provider_id,
            sender=request.phone,
            recipient=request.service_code,
            text=outcome.text,
            reported_at=None,
            raw=raw,
        )
    )
    # The intake names no id for a message it already had: a retried last step.
    return stored.message_id or await asyncio.to_thread(
        _stored_id, runtime=runtime, provider=request.provider, provider_id=provider_id
    )


def _processed(*, runtime: Runtime, message_id: int) -> tuple[bool, str | None, str | None, str | None]:
    """Tell whether the message was processed, and the incident code, category and place it made."""
    with runtime.factory() as session:
        found = session.execute(
            select(Message.processed_at, Incident.code, Alert.category, Alert.place_name)
            .outerjoin(Incident, Incident.id == Message.incident_id)
            .outerjoin(Alert, Alert.message_id == Message.id)
            .where(Message.id == message_id)
        ).first()
    if found is None:
        return False, None, None, None
    return found[0] is not None, found[1], found[2], found[3]


async def _made(*, runtime: Runtime, message_id: int | None) -> tuple[str | None, str | None, str | None]:
    """Wait up to PROCESSING_WAIT for the pipeline: the incident code, category and place it made."""
    code = category = place = None
    deadline = time.monotonic() + PROCESSING_WAIT
    while message_id is not None:
        done, code, category, place = await asyncio.to_thread(
            _processed, runtime=runtime, message_id=message_id
        )
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL)
    return code, category, place


async def answer(*, runtime: Runtime, request: UssdRequest) -> str:
    """Answer this step of a USSD session with a `CON ...` or `END ...` screen of at most 182 characters.

    While the database is away the caller gets an END screen asking them to dial again, in their
    number's language, rather than a 503: Africa's Talking ends the session on any answer that
    is not CON/END, and the caller, waiting on the line, would see only the network's error.
    Once the report is stored, a later failure still ends with "received" (the SMS brings the code).
    """
    phone = normalize(request.phone, runtime.settings.default_region).value  # E.164 when valid
    request = replace(request, phone=phone)
    try:
        reply = await _advance_retrying(runtime=runtime, request=request)
        if isinstance(reply, str):
            return reply
        message_id = await _store(runtime=runtime, request=request, outcome=reply)
    except Exception as exc:
        if not unavailable(exc):
            raise
        return _unavailable(runtime=runtime, phone=phone, exc=exc)
    code = category = place = None
    try:
        if reply.kind is OutcomeKind.REPORT:
            code, category, place = await _made(runtime=runtime, message_id=message_id)
        await asyncio.to_thread(
            _ended, runtime=runtime, session_id=request.session_id, message_id=message_id, code=code
        )
    except Exception as exc:
        if not unavailable(exc):
            raise
        runtime.signals.database.failed(where="ussd", exc=exc)
        code = None  # stored: the caller is told it was received, the pipeline's SMS names the code
    return menu.closing(reply, lex=runtime.pipeline.lexicon, code=code, category=category, place=place)


async def _advance_retrying(*, runtime: Runtime, request: UssdRequest) -> str | Outcome:
    """Advance the session, again once after a clash or a dropped connection (a replay is idempotent)."""
    try:
        return await asyncio.to_thread(_advance, runtime=runtime, request=request)
    except IntegrityError:  # two first requests of one session at once: the other row is there now
        return await asyncio.to_thread(_advance, runtime=runtime, request=request)
    except Exception as exc:
        if not dropped(exc):
            raise
        # A connection killed under the transaction is replaced by the pool: one more try.
        return await asyncio.to_thread(_advance, runtime=runtime, request=request)


def _unavailable(*, runtime: Runtime, phone: str, exc: BaseException) -> str:
    """Note the outage and build the END screen asking the caller to dial again later."""
    runtime.signals.database.failed(where="ussd", exc=exc)
    lex = runtime.pipeline.lexicon
    return menu.end(End.UNAVAILABLE, language=language_for(lexicon=lex, phone=phone), lex=lex)
