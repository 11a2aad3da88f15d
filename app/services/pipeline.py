"""What one stored inbound message causes: parse, then the alert or the command, then the reply.

Everything here runs in the caller's transaction, so the message is marked processed together with
the alert, the state change and the outbox rows it caused: all of them or none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.metrics import PROCESSED
from app.models import Alert, AuditLog, CheckIn, Incident, Message, Person, Place
from app.phones import country
from app.services.dedup import count_report, find_incident, severity
from app.services.escalation import Escalation, area_name
from app.services.gazetteer import normalize_name
from app.services.geotag import Located, PlaceIndexHolder
from app.services.incidents import acknowledge, close
from app.services.outbox import enqueue
from keywords.parser import Lexicon, ParseResult, SenderContext, parse
from keywords.sms import fit_one

log = logging.getLogger("kengele.pipeline")

CHECKIN_PENDING_FOR = timedelta(hours=24)
SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often (one UPDATE less)
PRECISION_RANK = {"unknown": 0, "country": 1, "home": 2, "place": 3}
OFFICER_ROLES = ("officer", "admin")


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    lexicon: Lexicon
    reply_unregistered: bool
    places: PlaceIndexHolder = field(default_factory=PlaceIndexHolder)
    dedup_radius_km: float = 10.0
    dedup_window: timedelta = timedelta(hours=6)
    escalation: Escalation | None = None


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

    @property
    def language(self) -> str:
        if self.person is not None and self.person.language in self.config.lexicon.grammars:
            return self.person.language
        return self.result.language

    def reply(self, key: str, *, incident_id: int | None = None, always: bool = False, **values: str) -> None:
        """Answer the sender in their language through the outbox (once per inbound message)."""
        message = self.message
        if not message.phone_valid or not message.sender:
            return
        if self.person is None and not self.config.reply_unregistered:
            return
        if self.person is not None and self.person.opted_out and not always:
            return
        template = self.config.lexicon.grammars[self.language].replies[key]
        enqueue(
            session=self.session,
            recipient=message.sender,
            text=fit_one(template.format(**values)),
            purpose="reply",
            key=f"reply:{message.id}",
            incident_id=incident_id,
            person_id=self.person.id if self.person else None,
            in_reply_to=message.id,
            language=self.language,
            now=self.now,
        )


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


def load_senders(session: Session, phones: set[str], now: datetime) -> Senders:
    """Load the senders of a batch of messages in two queries."""
    if not phones:
        return Senders({}, set())
    people = {p.phone: p for p in session.scalars(_PEOPLE_BY_PHONE, {"phones": list(phones)})}
    pending: set[int] = set()
    if people:
        params = {"ids": [p.id for p in people.values()], "since": now - CHECKIN_PENDING_FOR}
        pending = set(session.scalars(_PENDING_CHECKINS, params))
    return Senders(people, pending)


# Built once: constructing a statement costs more than running it (see bench/).
_PEOPLE_BY_PHONE = select(Person).where(Person.phone.in_(bindparam("phones", expanding=True)))
_PENDING_CHECKINS = select(CheckIn.person_id).where(
    CheckIn.person_id.in_(bindparam("ids", expanding=True)),
    CheckIn.answered_at.is_(None),
    CheckIn.sent_at > bindparam("since"),
)


def handle_inbound(
    *, session: Session, message: Message, config: PipelineConfig, senders: Senders | None = None
) -> str:
    """Turn one stored inbound message into its alert or command effect and reply; the outcome."""
    now = utcnow()
    if senders is None:
        senders = load_senders(session, {message.sender} if message.sender else set(), now)
    person, context = senders.context(message.sender)
    if message.kind == "beep":  # a missed call: no text to read, a person asking to be called back
        if person is not None and person.role == "focal_point":
            result = ParseResult(
                "alert",
                context.language or config.lexicon.default_language,
                1.0,
                category="other",
                via="beep",
            )
        else:
            result = ParseResult("unknown", config.lexicon.default_language, 0.0, via="beep")
        return _finish(session, message, config, senders, person, result, now)
    if person is None:  # an unknown number: its country hints at the language to answer in
        context = SenderContext(language=config.lexicon.language_of_country(country(message.sender)))
    result = parse(message.text, context, lex=config.lexicon)
    return _finish(session, message, config, senders, person, result, now)


def _finish(
    session: Session,
    message: Message,
    config: PipelineConfig,
    senders: Senders,
    person: Person | None,
    result: ParseResult,
    now: datetime,
) -> str:
    item = Inbound(session, message, person, result, config, now, senders)
    if message.kind == "beep" and result.intent == "unknown":
        outcome = "unknown"  # for a human to call back; no SMS to someone without airtime
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
        _audit(item, "silent_cleared", "person", person.id)
    _mark_checkin_answered(item)  # any message answers a check-in: "oui tout va bien" is alive too


def _audit(item: Inbound, action: str, entity: str, entity_id: object, **details: object) -> None:
    actor = f"sms:{item.person.id}" if item.person else "sms:unregistered"
    item.session.add(
        AuditLog(
            actor=actor, action=action, entity=entity, entity_id=str(entity_id), details=details, at=item.now
        )
    )


def _alert(item: Inbound) -> str:
    result, person, message, config = item.result, item.person, item.message, item.config
    category = result.category or "other"
    reported_at = message.reported_at or item.now
    home = (person.home_lat, person.home_lon) if person and person.home_lat is not None else None
    where = config.places.get(item.session).resolve(
        result.place_words, home=home, area=person.area if person else None, country=country(message.sender)
    )
    details: dict[str, object] = {"count": result.count, "words": result.details, "time": result.time}
    if result.via == "beep":
        details["beep"] = True
    if result.corrections:
        details["corrections"] = result.corrections
    if where.written and where.matched and normalize_name(where.matched) != where.written:
        details["place"] = f"{where.written} -> {where.matched}"
    home_place = _home_place(item) if where.precision == "home" else None
    place_name = (
        where.name or (" ".join(result.place_words) or None) or (home_place.name if home_place else None)
    )
    located = where.precision in ("place", "home")  # a country's centre locates nothing
    incident = find_incident(
        item.session,
        category=category,
        lat=where.lat if located else None,
        lon=where.lon if located else None,
        sender=message.sender or "",
        at=reported_at,
        radius_km=config.dedup_radius_km,
        window=config.dedup_window,
    )
    fresh = incident is None
    if incident is None:
        incident = Incident(
            category=category,
            severity=severity(category, result.count, 1),
            status="open",
            place_id=where.place.id if where.place else None,
            place_name=place_name,
            lat=where.lat,
            lon=where.lon,
            precision=where.precision,
            area=_area(item, where, home_place),
            first_reported_at=reported_at,
            last_reported_at=reported_at,
            report_count=0,
            reporter_count=0,
            escalation_level=0,
            created_at=item.now,
        )
        item.session.add(incident)
        item.session.flush()
        incident.code = f"K{incident.id}"
    elif PRECISION_RANK[where.precision] > PRECISION_RANK[incident.precision]:
        incident.place_id = where.place.id if where.place else None  # a report that says where it is
        incident.place_name, incident.lat, incident.lon = place_name, where.lat, where.lon
        incident.precision = where.precision
        incident.area = _area(item, where, home_place)
    item.session.add(
        Alert(
            message_id=message.id,
            incident_id=incident.id,
            person_id=person.id if person else None,
            category=category,
            severity=incident.severity,
            place_id=where.place.id if where.place else None,
            place_name=place_name,
            place_query=where.written,
            lat=where.lat,
            lon=where.lon,
            precision=where.precision,
            language=item.language,
            sender=message.sender or "",
            reported_at=reported_at,
            text=message.text,
            details=details,
            confidence=result.confidence,
            created_at=item.now,
        )
    )
    count_report(item.session, incident, sender=message.sender or "", at=reported_at, people=result.count)
    message.incident_id = incident.id
    if config.escalation is not None:
        if fresh:
            config.escalation.forward(
                session=item.session,
                incident=incident,
                people=result.count,
                now=item.now,
                beep=result.via == "beep",
                reporter=message.sender,
            )
        else:
            config.escalation.update_acknowledger(session=item.session, incident=incident, now=item.now)
    names = config.lexicon.grammars[item.language].category_names
    if result.via != "beep":  # a beep is answered by an officer's call, not by SMS
        item.reply(
            "alert",
            incident_id=incident.id,
            code=incident.code or "",
            category=names.get(category, category),
            place=place_name or "-",
        )
    return "alert"


def _home_place(item: Inbound) -> Place | None:
    person = item.person
    return item.session.get(Place, person.place_id) if person and person.place_id is not None else None


def _area(item: Inbound, where: Located, home: Place | None) -> str | None:
    """The area of a report: its place's admin2/admin1, else the sender's home place's, else theirs."""
    if where.place is not None:
        return area_name(where.place)
    if where.precision != "home" or item.person is None:
        return None
    return area_name(home) or item.person.area


def _mark_checkin_answered(item: Inbound) -> None:
    if item.person is None or item.person.id not in item.senders.pending:
        return
    item.senders.pending.discard(item.person.id)
    for checkin in item.session.scalars(
        select(CheckIn).where(CheckIn.person_id == item.person.id, CheckIn.answered_at.is_(None))
    ):
        checkin.answered_at = item.now
        checkin.answer_message_id = item.message.id


def _checkin(item: Inbound) -> str:  # the check-in is marked answered with any message (_seen)
    item.reply("checkin")
    return "command"


def _help(item: Inbound) -> str:
    item.reply("help")
    return "command"


def _stop(item: Inbound) -> str:
    if item.person is not None:
        item.person.opted_out = True
        _audit(item, "opt_out", "person", item.person.id)
    item.reply("stop", always=True)
    return "command"


def _start(item: Inbound) -> str:
    if item.person is not None:
        item.person.opted_out = False
        _audit(item, "opt_in", "person", item.person.id)
    item.reply("start")
    return "command"


def _join(item: Inbound) -> str:
    place = " ".join(item.result.place_words)
    if item.person is None and item.message.phone_valid and item.message.sender:
        person = Person(
            name=f"pending {item.message.sender[-4:]}",
            phone=item.message.sender,
            role="focal_point",
            status="pending",
            language=item.result.language,
            active=False,
            area=place or None,
        )
        item.session.add(person)
        item.session.flush()
        item.person = person
        item.senders.people[person.phone] = person
        _audit(item, "join_request", "person", person.id, place=place)
    item.reply("join", place=f" ({place})" if place else "")
    return "command"


def _officer_command(item: Inbound, action: str) -> str:
    code = item.result.code
    person = item.person
    if person is None or person.role not in OFFICER_ROLES or not person.active:
        _audit(item, f"{action}_refused", "incident", code or "-", reason="not an officer")
        item.reply(f"{action}_refused")
        return "command"
    incident = item.session.scalar(select(Incident).where(Incident.code == code)) if code else None
    if incident is None:
        item.reply("no_incident", code=code or "?")
        return "command"
    actor = f"sms:{person.id}"
    if action == "ack":
        if not acknowledge(
            session=item.session,
            incident=incident,
            who=person.name,
            who_id=person.id,
            actor=actor,
            now=item.now,
        ):
            item.reply(
                "ack_already",
                incident_id=incident.id,
                code=incident.code or "",
                who=incident.acknowledged_by or "?",
            )
            return "command"
    elif not close(session=item.session, incident=incident, who=person.name, actor=actor, now=item.now):
        item.reply(
            "close_already", incident_id=incident.id, code=incident.code or "", who=incident.closed_by or "?"
        )
        return "command"
    if item.config.escalation is not None:
        item.config.escalation.tell_others(
            session=item.session,
            incident=incident,
            action="acked" if action == "ack" else "closed",
            who=person.name,
            who_id=person.id,
            now=item.now,
        )
    item.reply(action, incident_id=incident.id, code=incident.code or "")
    return "command"


def _unknown(item: Inbound) -> str:
    item.reply("unknown")
    return "unknown"


HANDLERS = {
    "alert": _alert,
    "checkin": _checkin,
    "help": _help,
    "stop": _stop,
    "start": _start,
    "join": _join,
    "ack": lambda item: _officer_command(item, "ack"),
    "close": lambda item: _officer_command(item, "close"),
    "unknown": _unknown,
}
