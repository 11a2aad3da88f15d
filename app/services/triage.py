"""Messages nobody could read: an officer makes one an alert, or sets it aside with a reason.

An alert made here goes the normal way from the parse on: the place is resolved by the same
gazetteer (else the sender's home), the report joins or opens an incident by the same dedup
rules, and a new incident is forwarded to the area's officers. The sender gets no second SMS:
they were answered when the message arrived, and a late reply on a seized phone can endanger them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.enums import AuditAction, AuditEntity, Direction, Outcome
from app.models import AuditLog, Message, Person
from app.phones import country
from app.services.incidents import Actor, Recorded, record_report
from app.services.pipeline import PipelineConfig
from keywords.parser import Intent, ParseResult

TRIAGED = (Outcome.UNKNOWN, Outcome.ERROR)
MAX_REASON = 500


class NotForTriage(ValueError):
    """The message is not (or no longer) waiting for a person to read it."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What an officer read in a message."""

    category: str
    place: str = ""
    count: int | None = None


def waiting(*, session: Session, message_id: int) -> Message:
    """The inbound message `message_id` if it still waits in triage, else NotForTriage."""
    message = session.scalar(
        select(Message)
        .where(Message.id == message_id, Message.direction == Direction.INBOUND)
        .with_for_update()
    )
    if message is None:
        raise NotForTriage(f"no inbound message {message_id}")
    if message.outcome not in TRIAGED:
        raise NotForTriage(f"message {message_id} was handled already ({message.outcome})")
    return message


def make_alert(
    *,
    session: Session,
    message: Message,
    reading: Reading,
    actor: Actor,
    config: PipelineConfig,
    now: datetime,
) -> Recorded:
    """Record the message as the alert an officer read in it, as if it had been texted that way."""
    person = session.get(Person, message.person_id) if message.person_id is not None else None
    language = message.language or config.lexicon.default_language
    result = ParseResult(
        Intent.ALERT,
        language,
        1.0,  # a person read it
        category=reading.category,
        place_words=reading.place.split(),
        count=reading.count,
        details=[f"read by {actor.name}"],
    )
    home = None
    if person is not None and person.home_lat is not None and person.home_lon is not None:
        home = (person.home_lat, person.home_lon)
    where = config.places.get(session).resolve(
        result.place_words, home=home, area=person.area if person else None, country=country(message.sender)
    )
    recorded = record_report(
        session=session,
        message=message,
        person=person,
        result=result,
        where=where,
        language=language,
        radius_km=config.dedup_radius_km,
        window=config.dedup_window,
        escalation=config.escalation,
        now=now,
    )
    message.intent, message.outcome = Intent.ALERT, Outcome.ALERT
    _audit(session, actor, AuditAction.TRIAGE_ALERT, message, now, incident=recorded.incident.code)
    return recorded


def dismiss(*, session: Session, message: Message, reason: str, actor: Actor, now: datetime) -> None:
    """Set the message aside: not an alert, for the reason given (kept in the audit log)."""
    reason = reason.strip()
    if not reason:
        raise NotForTriage("reason: required to dismiss a message")
    message.outcome = Outcome.DISMISSED
    _audit(session, actor, AuditAction.DISMISS, message, now, reason=reason[:MAX_REASON])


def _audit(
    session: Session, actor: Actor, action: AuditAction, message: Message, now: datetime, **details: object
) -> None:
    session.add(
        AuditLog(
            actor=actor.audit,
            action=action,
            entity=AuditEntity.MESSAGE,
            entity_id=str(message.id),
            details=details,
            at=now,
        )
    )
