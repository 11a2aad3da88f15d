"""What one stored inbound message causes: parse, then the report or the command, then the reply.

Recording a report and an officer's decisions live in services/incidents, which the API calls too;
this module reads the message, hands it on and answers the sender.

Everything here runs in the caller's transaction, so the message is marked processed together with
the alert, the state change and the outbox rows it caused: all of them or none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.crypto import keyring_of
from app.db import utcnow
from app.enums import AuditAction, AuditEntity, Outcome, PersonStatus, Purpose, Role
from app.metrics import PROCESSED
from app.models import AuditLog, CheckIn, Message, Person
from app.phones import country
from app.services.dedup import report_cells
from app.services.escalation import Escalation
from app.services.geotag import Located, PlaceIndexHolder
from app.services.incidents import LOCATED, Actor, acknowledge, by_code, close, record_report
from app.services.language import language_for
from app.services.limits import (
    Limits,
    Reason,
    count_reply,
    lock_senders,
    replies_since,
    suppressed,
    tally,
    vouched_for,
)
from app.services.outbox import enqueue
from gateways.base import MessageKind
from keywords.parser import Intent, Lexicon, ParseResult, SenderContext, Via, parse
from keywords.sms import fit_one

log = logging.getLogger("kengele.pipeline")

CHECKIN_PENDING_FOR = timedelta(hours=24)
SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often (one UPDATE less)
OFFICER_ROLES = (Role.OFFICER, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    lexicon: Lexicon
    reply_unregistered: bool
    places: PlaceIndexHolder = field(default_factory=PlaceIndexHolder)
    dedup_radius_km: float = 10.0
    dedup_window: timedelta = timedelta(hours=6)
    escalation: Escalation | None = None
    limits: Limits = field(default_factory=Limits)


@dataclass(slots=True)
class Reading:
    """Who sent a message and what it says; for an alert, once located, where it is."""

    person: Person | None
    context: SenderContext  # the sender as the batch knew them when the message was read
    result: ParseResult
    where: Located | None = None

    def still_holds(self, senders: Senders, phone: str | None) -> bool:
        """Whether the sender is as they were when this was read (an earlier message of the batch
        may have answered their check-in or put them on the roster: then the message is read again)."""
        return senders.context(phone) == (self.person, self.context)


@dataclass(slots=True)
class Inbound:
    """One message being handled, with who sent it and what it says."""

    session: Session
    message: Message
    person: Person | None
    result: ParseResult
    config: PipelineConfig
    now: datetime
    senders: Senders
    where: Located | None = None  # an alert's place, when the batch located it already

    @property
    def language(self) -> str:
        """The language to answer in: the sender's on the roster, else the message's."""
        roster = self.person.language if self.person is not None else None
        return language_for(lexicon=self.config.lexicon, roster=roster, message=self.result.language)

    def reply(self, key: str, *, incident_id: int | None = None, always: bool = False, **values: str) -> None:
        """Answer the sender in their language through the outbox (once per inbound message)."""
        message = self.message
        if not message.phone_valid or not message.sender:
            return
        if self.person is None and not self.config.reply_unregistered:
            return
        if self.person is not None and self.person.opted_out and not always:
            return
        if not self._affordable(message.sender):
            return
        template = self.config.lexicon.grammars[self.language].replies[key]
        enqueue(
            session=self.session,
            recipient=message.sender,
            text=fit_one(template.format(**values)),
            purpose=Purpose.REPLY,
            key=f"reply:{message.id}",
            incident_id=incident_id,
            person_id=self.person.id if self.person else None,
            in_reply_to=message.id,
            language=self.language,
            now=self.now,
        )
        count_reply(self.session, message.sender)

    def _affordable(self, phone: str) -> bool:
        """Whether cost control lets this reply go: its country, then the sender's replies in the window.

        Officers and admins on the roster are not limited: an officer acknowledging ten incidents
        of one attack must get ten confirmations, and their number is one the network vouched for.
        """
        person, limits = self.person, self.config.limits
        if vouched_for(person) and person is not None and person.role in OFFICER_ROLES:
            return True
        countries = limits.countries
        if countries is not None and not vouched_for(person) and not countries.covers(self.session, phone):
            suppressed(Reason.REPLY_COUNTRY)  # SMS pumping sends to foreign numbers
            return False
        if limits.reply is not None:
            sent = replies_since(self.session, phone=phone, since=self.now - limits.reply.window)
            if sent >= limits.reply.count:
                suppressed(Reason.REPLY_LIMIT)
                return False
        return True


@dataclass(slots=True)
class Senders:
    """The roster entries of a batch of senders and which of them owe a check-in answer."""

    people: dict[str, Person]
    pending: set[int]

    def context(self, phone: str | None) -> tuple[Person | None, SenderContext]:
        person = self.people.get(phone) if phone else None
        if person is None:
            return None, SenderContext()
        return person, SenderContext(
            role=person.role, language=person.language, checkin_pending=person.id in self.pending
        )


def load_senders(
    session: Session, phones: set[str], now: datetime, *, limits: Limits | None = None
) -> Senders:
    """Load the senders of a batch of messages in two queries (and, with `limits`, count them in two)."""
    if not phones:
        return Senders({}, set())
    lock_senders(session, phones)  # the counts of cost control, one replica at a time per sender
    if limits is not None:
        tally(session, phones, now=now, limits=limits)
    indexes = keyring_of(session).indexes_of(phones)
    people = {p.phone: p for p in session.scalars(_PEOPLE_BY_PHONE, {"indexes": indexes})}
    pending: set[int] = set()
    if people:
        params = {"ids": [p.id for p in people.values()], "since": now - CHECKIN_PENDING_FOR}
        pending = set(session.scalars(_PENDING_CHECKINS, params))
    return Senders(people, pending)


# Built once: constructing a statement costs more than running it (see bench/).
_PEOPLE_BY_PHONE = select(Person).where(Person.phone_index.in_(bindparam("indexes", expanding=True)))
_PENDING_CHECKINS = select(CheckIn.person_id).where(
    CheckIn.person_id.in_(bindparam("ids", expanding=True)),
    CheckIn.answered_at.is_(None),
    CheckIn.sent_at > bindparam("since"),
)


def handle_inbound(
    *,
    session: Session,
    message: Message,
    config: PipelineConfig,
    senders: Senders | None = None,
    reading: Reading | None = None,
) -> Outcome:
    """Turn one stored inbound message into its alert or command effect and reply; the outcome.

    `senders` and `reading` are what a batch loaded and read already (processing.Processor).
    """
    now = utcnow()
    if senders is None:
        phones = {message.sender} if message.sender else set()
        senders = load_senders(session, phones, now, limits=config.limits)
    if reading is None or not reading.still_holds(senders, message.sender):
        reading = read(message, config, senders)
    return _finish(session, message, config, senders, reading, now)


def read(message: Message, config: PipelineConfig, senders: Senders) -> Reading:
    """Who sent a message (on the roster or not) and what it says."""
    person, known = senders.context(message.sender)
    if message.kind == MessageKind.BEEP:  # a missed call: no text to read, a person asking to be called back
        if person is not None and person.role == Role.FOCAL_POINT:
            language = language_for(lexicon=config.lexicon, roster=known.language)
            return Reading(
                person, known, ParseResult(Intent.ALERT, language, 1.0, category="other", via=Via.BEEP)
            )
        return Reading(
            person, known, ParseResult(Intent.UNKNOWN, config.lexicon.default_language, 0.0, via=Via.BEEP)
        )
    context = known
    if person is None:  # an unknown number: its country hints at the language to answer in
        context = SenderContext(language=language_for(lexicon=config.lexicon, phone=message.sender))
    return Reading(person, known, parse(message.text, context, lex=config.lexicon))


def alert_cells(
    session: Session, message: Message, config: PipelineConfig, reading: Reading
) -> frozenset[int]:
    """The dedup cells this message's report would lock, if it is a located alert (none otherwise).

    A batch locks all of its reports' cells at once, in one sorted order, before handling the
    first (processing.Processor): two replicas then wait for each other, never deadlock. The place
    found is kept in `reading`, for the report.
    """
    if reading.result.intent != Intent.ALERT:
        return frozenset()
    where = reading.where = _locate(session, config, reading.result, reading.person, message)
    if where.precision not in LOCATED or where.lat is None or where.lon is None:
        return frozenset()
    return report_cells(reading.result.category or "other", where.lat, where.lon, config.dedup_radius_km)


def _finish(
    session: Session,
    message: Message,
    config: PipelineConfig,
    senders: Senders,
    reading: Reading,
    now: datetime,
) -> Outcome:
    result = reading.result
    item = Inbound(session, message, reading.person, result, config, now, senders, reading.where)
    if message.kind == MessageKind.BEEP and result.intent == Intent.UNKNOWN:
        outcome = Outcome.UNKNOWN  # for a human to call back; no SMS to someone without airtime
    else:
        outcome = HANDLERS[result.intent](item)
    if item.person is not None:
        _seen(item)
    message.person_id = item.person.id if item.person else None
    message.intent = result.intent
    message.language = item.language
    message.parse = result.to_dict()
    message.outcome = outcome
    message.processed_at = now
    message.claimed_until = None
    message.claim_token = None
    PROCESSED.labels(outcome).inc()
    return outcome


def _seen(item: Inbound) -> None:
    """A message from someone on the roster: they are alive; a silent flag clears."""
    person = item.person
    assert person is not None
    if person.last_seen_at is None or item.now - person.last_seen_at > SEEN_EVERY:
        person.last_seen_at = item.now
    if person.silent_since is not None:
        person.silent_since = None
        _audit(item, AuditAction.SILENT_CLEARED, AuditEntity.PERSON, person.id)
    _mark_checkin_answered(item)  # any message answers a check-in: "oui tout va bien" is alive too


def _audit(
    item: Inbound, action: AuditAction, entity: AuditEntity, entity_id: object, **details: object
) -> None:
    actor = f"sms:{item.person.id}" if item.person else "sms:unregistered"
    item.session.add(
        AuditLog(
            actor=actor, action=action, entity=entity, entity_id=str(entity_id), details=details, at=item.now
        )
    )


def _locate(
    session: Session, config: PipelineConfig, result: ParseResult, person: Person | None, message: Message
) -> Located:
    """Where a report is: the place it names, else its sender's home, else their phone's country."""
    home = None
    if person is not None and person.home_lat is not None and person.home_lon is not None:
        home = (person.home_lat, person.home_lon)
    return config.places.get(session).resolve(
        result.place_words, home=home, area=person.area if person else None, country=country(message.sender)
    )


def _alert(item: Inbound) -> Outcome:
    result, person, message, config = item.result, item.person, item.message, item.config
    where = item.where or _locate(item.session, config, result, person, message)
    recorded = record_report(
        session=item.session,
        message=message,
        person=person,
        result=result,
        where=where,
        language=item.language,
        radius_km=config.dedup_radius_km,
        window=config.dedup_window,
        escalation=config.escalation,
        now=item.now,
    )
    if result.via != Via.BEEP:  # a beep is answered by an officer's call, not by SMS
        category = recorded.alert.category
        item.reply(
            "alert",
            incident_id=recorded.incident.id,
            code=recorded.incident.code or "",
            category=config.lexicon.grammars[item.language].category_names.get(category, category),
            place=recorded.alert.place_name or "-",
        )
    return Outcome.ALERT


def _mark_checkin_answered(item: Inbound) -> None:
    if item.person is None or item.person.id not in item.senders.pending:
        return
    item.senders.pending.discard(item.person.id)
    for checkin in item.session.scalars(
        select(CheckIn).where(CheckIn.person_id == item.person.id, CheckIn.answered_at.is_(None))
    ):
        checkin.answered_at = item.now
        checkin.answer_message_id = item.message.id


def _checkin(item: Inbound) -> Outcome:  # the check-in is marked answered with any message (_seen)
    item.reply("checkin")
    return Outcome.COMMAND


def _help(item: Inbound) -> Outcome:
    item.reply("help")
    return Outcome.COMMAND


def _stop(item: Inbound) -> Outcome:
    if item.person is not None:
        item.person.opted_out = True
        _audit(item, AuditAction.OPT_OUT, AuditEntity.PERSON, item.person.id)
    item.reply("stop", always=True)
    return Outcome.COMMAND


def _start(item: Inbound) -> Outcome:
    if item.person is not None:
        item.person.opted_out = False
        _audit(item, AuditAction.OPT_IN, AuditEntity.PERSON, item.person.id)
    item.reply("start")
    return Outcome.COMMAND


def _join(item: Inbound) -> Outcome:
    place = " ".join(item.result.place_words)
    if item.person is None and item.message.phone_valid and item.message.sender:
        person = Person(
            name=f"pending {item.message.sender[-4:]}",
            phone=item.message.sender,
            role=Role.FOCAL_POINT,
            status=PersonStatus.PENDING,
            language=item.result.language,
            active=False,
            area=place or None,
        )
        item.session.add(person)
        item.session.flush()
        item.person = person
        item.senders.people[person.phone] = person
        _audit(item, AuditAction.JOIN_REQUEST, AuditEntity.PERSON, person.id, place=place)
    item.reply("join", place=f" ({place})" if place else "")
    return Outcome.COMMAND


def _officer_command(item: Inbound, action: Intent) -> Outcome:
    code = item.result.code
    person = item.person
    if person is None or person.role not in OFFICER_ROLES or not person.active:
        refused = AuditAction.ACK_REFUSED if action == Intent.ACK else AuditAction.CLOSE_REFUSED
        _audit(item, refused, AuditEntity.INCIDENT, code or "-", reason="not an officer")
        item.reply(f"{action}_refused")
        return Outcome.COMMAND
    incident = by_code(session=item.session, code=code) if code else None
    if incident is None:
        item.reply("no_incident", code=code or "?")
        return Outcome.COMMAND
    decide = acknowledge if action == Intent.ACK else close
    decision = decide(
        session=item.session,
        incident=incident,
        officer=Actor.officer(person),
        escalation=item.config.escalation,
        now=item.now,
    )
    if not decision.changed:  # told who has it, or who closed it
        who = incident.acknowledged_by if action == Intent.ACK else incident.closed_by
        item.reply(f"{action}_already", incident_id=incident.id, code=incident.code or "", who=who or "?")
        return Outcome.COMMAND
    item.reply(action, incident_id=incident.id, code=incident.code or "")
    return Outcome.COMMAND


def _unknown(item: Inbound) -> Outcome:
    item.reply("unknown")
    return Outcome.UNKNOWN


HANDLERS: dict[Intent, Callable[[Inbound], Outcome]] = {
    Intent.ALERT: _alert,
    Intent.CHECKIN: _checkin,
    Intent.HELP: _help,
    Intent.STOP: _stop,
    Intent.START: _start,
    Intent.JOIN: _join,
    Intent.ACK: lambda item: _officer_command(item, Intent.ACK),
    Intent.CLOSE: lambda item: _officer_command(item, Intent.CLOSE),
    Intent.UNKNOWN: _unknown,
}
