"""Escalation: the duty officers of an incident's area are told, and someone always answers.

A new incident is forwarded to every active level-1 officer of its area (an officer whose area is
empty covers everywhere); where there is none, to the next level that covers it. An incident not
acknowledged within KENGELE_ACK_TIMEOUT goes to the next level, and so on; at the top it is sent
again to the top level at the same interval until someone acknowledges. Each step is claimed with
a conditional UPDATE, so with several replicas every step is sent once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.crypto import keyring_of
from app.db import per_transaction, utcnow
from app.enums import (
    FORWARDS,
    AuditAction,
    AuditEntity,
    Direction,
    IncidentStatus,
    MessageStatus,
    PersonStatus,
    Purpose,
    Role,
    WebhookEvent,
)
from app.models import FAILED_FORWARD, Alert, AuditLog, Incident, Message, Person, Place
from app.phones import mask, scrub
from app.services.areas import normalize_name
from app.services.language import language_for
from app.services.limits import Limit, Reason, opened_since, suppressed
from app.services.outbox import enqueue
from app.services.shifts import on_duty
from app.services.webhooks import emit
from app.services.worker import Pass, Signals, Worker
from keywords.parser import Lexicon
from keywords.sms import fit_one

log = logging.getLogger("kengele.escalation")
UPDATE_EVERY = timedelta(minutes=15)


def area_of(session: Session, incident: Incident) -> set[str]:
    """The area names an incident is in: its place's admin2 and admin1, else its own area (normalised)."""
    place = session.get(Place, incident.place_id) if incident.place_id is not None else None
    if place is not None:
        return {normalize_name(n) for n in (place.admin2, place.admin1) if n}
    return area_names(session, incident.area) if incident.area else set()


def area_names(session: Session, area: str) -> set[str]:
    """An area and the province it is in (normalised): an officer of "Ituri" covers "Djugu" too."""
    names = {area, *(n for n in session.scalars(_PROVINCE_OF, {"area": area}) if n)}
    return {normalize_name(n) for n in names}


_PROVINCE_OF = select(Place.admin1).where(Place.admin2 == bindparam("area")).limit(1)
_OFFICERS = select(Person).where(  # an officer who texted STOP is passed over until START
    Person.role == Role.OFFICER,
    Person.active.is_(True),
    Person.status == PersonStatus.APPROVED,
    Person.opted_out.is_(False),
)
_TOLD = select(Message.person_id).where(
    Message.incident_id == bindparam("incident"),
    Message.direction == Direction.OUTBOUND,
    Message.purpose.in_(FORWARDS),
)
FLOOD_KEY = "flood:"  # the idempotency key of a flooding notice: flood:<incident>:<officer>
# The officers already told that this sender floods: notices about incidents the sender opened.
_FLOOD_TOLD = (
    select(Message.person_id)
    .join(Alert, Alert.incident_id == Message.incident_id)
    .where(
        Message.direction == Direction.OUTBOUND,
        Message.purpose == Purpose.NOTICE,
        Message.idempotency_key.startswith(FLOOD_KEY),
        Message.created_at > bindparam("since"),
        Alert.sender_index.in_(bindparam("indexes", expanding=True)),
        Alert.opened.is_(True),
    )
    .distinct()
)
# By id, in the order of its partial index, ix_messages_failed (followed_up_at is NULL in all of
# it): only that index gives this order, so PostgreSQL never walks the whole table by id instead.
_FAILED_FORWARDS = (
    select(Message).where(FAILED_FORWARD).order_by(Message.followed_up_at, Message.id).limit(50)
)


class Escalation:
    """Forwards, re-escalations, failovers and updates, written to the outbox in the caller's transaction."""

    def __init__(
        self,
        *,
        lexicon: Lexicon,
        ack_timeout: float,
        timezone: str,
        reporter_phones: bool = False,
        flood: Limit | None = None,
    ) -> None:
        self.lexicon = lexicon
        self.flood = flood
        self.reporter_phones = reporter_phones
        self.ack_timeout = timedelta(seconds=ack_timeout)
        self.tz = ZoneInfo(timezone)

    # -- who -----------------------------------------------------------------------------------
    def covering(self, session: Session, incident: Incident) -> list[Person]:
        """Every active officer whose area covers the incident (an empty area covers everywhere)."""
        with session.no_autoflush:  # reads of places and people: the incident's changes can wait
            areas = area_of(session, incident)
            # Read once a transaction; one of them may have texted STOP since (in this batch).
            officers = per_transaction(session, "kengele.officers", lambda: list(session.scalars(_OFFICERS)))
            return [
                o
                for o in officers
                if not o.opted_out and o.active and (not o.area or normalize_name(o.area) in areas)
            ]

    def officers_for(
        self, session: Session, incident: Incident, level: int, now: datetime
    ) -> tuple[int, list[Person]]:
        """The on-duty officers to tell at `level`, else the next level up that has some.

        At the top, the top level again. Where nobody covering the incident is on duty at all, the
        shift tables are set aside: someone must be told.
        """
        covering = self.covering(session, incident)
        local = now.astimezone(self.tz)
        duty = [o for o in covering if on_duty(o.shifts, local)] or covering
        levels = sorted({o.level or 1 for o in duty})
        if not levels:
            return level, []
        at = next((lv for lv in levels if lv >= level), levels[-1])
        return at, sorted((o for o in duty if (o.level or 1) == at), key=lambda o: o.id)

    # -- what ----------------------------------------------------------------------------------
    def _language(self, person: Person) -> str:
        return language_for(lexicon=self.lexicon, roster=person.language)

    def _place(self, incident: Incident) -> str:
        """The incident's place name as officers are told it.

        Where no place matched, the name is the words the reporter typed, which may hold a number
        (theirs, or someone's to call); it reaches officers' phones only where the network chose
        to forward reporters' numbers (KENGELE_FORWARD_REPORTER_PHONE).
        """
        name = incident.place_name or "?"
        return name if self.reporter_phones else scrub(name)

    def _text(
        self, template: str, person: Person, incident: Incident, people: int | None, beep: bool = False
    ) -> tuple[str, str]:
        language = self._language(person)
        grammar = self.lexicon.grammars[language]
        values = {
            "code": incident.code or "",
            "category": grammar.category_names.get(incident.category, incident.category),
            "place": self._place(incident),
            "people": (f" {people}" if people else "") + (f" {grammar.replies['beep']}" if beep else ""),
            "reports": str(incident.report_count),
            "time": incident.last_reported_at.astimezone(self.tz).strftime("%H:%M"),
        }
        if incident.report_count == 1:  # the grammar's singular ("1 rapport"), a template of its own
            template = f"{template}_one"
        return fit_one(grammar.replies[template].format(**values)), language

    def _tell(
        self,
        *,
        session: Session,
        incident: Incident,
        officers: list[Person],
        purpose: Purpose,
        key: str,
        now: datetime,
        people: int | None = None,
        reporter: str | None = None,
    ) -> None:
        beep = bool(incident.beep)
        for officer in officers:
            text, language = self._text("forward", officer, incident, people, beep)
            if reporter and self.reporter_phones:  # only where the network chose to (may take 2 SMS)
                text = f"{text} {reporter}"
            enqueue(
                session=session,
                recipient=officer.phone,
                text=text,
                purpose=purpose,
                key=f"{key}:{officer.id}",
                incident_id=incident.id,
                person_id=officer.id,
                language=language,
                now=now,
            )

    # -- when ----------------------------------------------------------------------------------
    def forward(
        self,
        *,
        session: Session,
        incident: Incident,
        people: int | None,
        now: datetime,
        beep: bool = False,
        reporter: str | None = None,
        vouched: bool = True,
    ) -> int:
        """Tell the first level of officers about a new incident; how many were told.

        A reporter the network does not vouch for (not an approved, active roster entry) has at
        most KENGELE_FLOOD_LIMIT new incidents forwarded one by one; beyond it the incident waits in
        the list and the officers who would have been told get one notice that the sender floods.
        """
        incident.beep = beep
        if not vouched and reporter and self.flood is not None:
            opened = opened_since(session, phone=reporter, since=now - self.flood.window)  # this one too
            if opened > self.flood.count:
                return self._hold(
                    session=session, incident=incident, reporter=reporter, opened=opened, now=now
                )
        return self._step(
            session=session, incident=incident, level=1, step=1, people=people, now=now, reporter=reporter
        )

    def _step(
        self,
        *,
        session: Session,
        incident: Incident,
        level: int,
        step: int,
        people: int | None,
        now: datetime,
        reporter: str | None = None,
    ) -> int:
        at, officers = self.officers_for(session, incident, level, now)
        purpose = Purpose.ALERT_FORWARD if step == 1 else Purpose.ESCALATION
        self._tell(
            session=session,
            incident=incident,
            officers=officers,
            purpose=purpose,
            key=f"{purpose}:{incident.id}:{step}",
            now=now,
            people=people,
            reporter=reporter,
        )
        incident.escalation_level = at
        incident.escalation_step = step
        incident.next_escalation_at = now + self.ack_timeout
        if step > 1:  # the forward (step 1) is part of the incident's creation (record_report)
            emit(session=session, incident=incident, event=WebhookEvent.ESCALATED, now=now)
        _audit(
            session,
            AuditAction.FORWARD if step == 1 else AuditAction.ESCALATE,
            incident,
            now,
            level=at,
            step=step,
            officers=[o.id for o in officers],
        )
        if not officers:
            log.warning("no officer covers an incident", extra={"incident": incident.code})
        return len(officers)

    @staticmethod
    def held(incident: Incident) -> bool:
        """Whether an open incident was never forwarded (held back as a flood's)."""
        return incident.status == IncidentStatus.OPEN and not incident.escalation_step

    def _hold(
        self, *, session: Session, incident: Incident, reporter: str, opened: int, now: datetime
    ) -> int:
        """Forward nothing; tell each officer not yet told of this flood in the window; how many were told."""
        assert self.flood is not None
        since = now - self.flood.window
        _, officers = self.officers_for(session, incident, 1, now)
        indexes = keyring_of(session).indexes(reporter)
        told = set(session.scalars(_FLOOD_TOLD, {"indexes": indexes, "since": since}))
        fresh = [o for o in officers if o.id not in told]
        for officer in fresh:
            language = self._language(officer)
            grammar = self.lexicon.grammars[language]
            text = grammar.replies["flood"].format(
                sender=mask(reporter) or "?",
                count=str(opened),
                minutes=str(max(1, self.flood.seconds // 60)),
                code=incident.code or "",
                category=grammar.category_names.get(incident.category, incident.category),
                place=self._place(incident),
            )
            enqueue(
                session=session,
                recipient=officer.phone,
                text=fit_one(text),
                purpose=Purpose.NOTICE,
                key=f"{FLOOD_KEY}{incident.id}:{officer.id}",
                incident_id=incident.id,
                person_id=officer.id,
                language=language,
                now=now,
            )
        suppressed(Reason.FLOOD_FORWARD)
        _audit(
            session,
            AuditAction.FORWARD_HELD,
            incident,
            now,
            reason=Reason.FLOOD_FORWARD,
            opened=opened,
            limit=str(self.flood),
            officers=[o.id for o in fresh],
        )
        if fresh:  # once an episode and officer: the next held incidents are in the audit log and metrics
            log.warning("a sender floods: incidents not forwarded", extra={"incident": incident.code})
        return len(fresh)

    def escalate_due(self, *, session: Session, now: datetime) -> int:
        """Send every escalation step that fell due (once, whatever the number of replicas).

        A server that was down sends what fell due while it was down once, when it starts again.
        """
        due = session.scalars(
            select(Incident)
            .where(Incident.status == IncidentStatus.OPEN, Incident.next_escalation_at <= now)
            .limit(100)
        ).all()
        sent = 0
        for incident in due:
            claimed = session.execute(
                update(Incident)
                .where(
                    Incident.id == incident.id,
                    Incident.status
                    == IncidentStatus.OPEN,  # acknowledged meanwhile (another replica): no step
                    Incident.next_escalation_at == incident.next_escalation_at,
                )
                .values(next_escalation_at=now + self.ack_timeout)
                .execution_options(synchronize_session=False)
            )
            if cast(CursorResult[Any], claimed).rowcount != 1:
                continue  # another replica took this step
            sent += self._step(
                session=session,
                incident=incident,
                level=incident.escalation_level + 1,
                step=(incident.escalation_step or 1) + 1,
                people=None,
                now=now,
            )
        return sent

    def follow_up_failures(self, *, session: Session, now: datetime) -> int:
        """Forwards that could not be delivered on any gateway: tell the next officer, else level.

        Each failed forward is claimed once (a conditional UPDATE), then handed on to an officer of
        the same level not told yet (on duty first), else, when nobody of that level has it, to the
        next level at once. An incident somebody already acknowledged or closed needs nobody more.
        """
        handed = 0
        for message in session.scalars(_FAILED_FORWARDS).all():
            claimed = session.execute(
                update(Message)
                .where(Message.id == message.id, Message.followed_up_at.is_(None))
                .values(followed_up_at=now)
                .execution_options(synchronize_session=False)
            )
            if cast(CursorResult[Any], claimed).rowcount != 1 or message.incident_id is None:
                continue
            incident = session.get(Incident, message.incident_id)
            if incident is None or incident.status != IncidentStatus.OPEN:
                continue
            handed += self._hand_on(session, incident, message, now)
        return handed

    def _hand_on(self, session: Session, incident: Incident, failed: Message, now: datetime) -> int:
        person = session.get(Person, failed.person_id) if failed.person_id else None
        level = (person.level or 1) if person is not None else incident.escalation_level or 1
        told = set(session.scalars(_TOLD, {"incident": incident.id}))
        local = now.astimezone(self.tz)
        colleagues = sorted(
            (o for o in self.covering(session, incident) if (o.level or 1) == level and o.id not in told),
            key=lambda o: (not on_duty(o.shifts, local), o.id),
        )
        details = {"message": failed.id, "officer": failed.person_id, "error": scrub(failed.error or "")}
        if colleagues:
            self._tell(
                session=session,
                incident=incident,
                officers=colleagues[:1],
                purpose=Purpose(failed.purpose or Purpose.ESCALATION),
                key=f"failover:{failed.id}",
                now=now,
            )
            _audit(
                session,
                AuditAction.FAILOVER,
                incident,
                now,
                level=level,
                officers=[colleagues[0].id],
                **details,
            )
            return 1
        alive = session.scalar(
            select(Message.id)
            .join(Person, Person.id == Message.person_id)
            .where(
                Message.incident_id == incident.id,
                Message.purpose.in_(FORWARDS),
                Message.status != MessageStatus.FAILED,
                func.coalesce(Person.level, 1) == level,
            )
            .limit(1)
        )
        if alive is not None:  # others of this level have it (or may yet): the timeout stands
            _audit(session, AuditAction.FAILOVER, incident, now, level=level, officers=[], **details)
            return 0
        at, officers = self.officers_for(session, incident, level + 1, now)
        officers = [o for o in officers if o.id not in told]
        self._tell(
            session=session,
            incident=incident,
            officers=officers,
            purpose=Purpose.ESCALATION,
            key=f"failover:{failed.id}",
            now=now,
        )
        if officers:
            raised = at > incident.escalation_level
            incident.escalation_level = max(incident.escalation_level, at)
            incident.next_escalation_at = now + self.ack_timeout
            if raised:
                emit(session=session, incident=incident, event=WebhookEvent.ESCALATED, now=now)
        else:
            log.warning("nobody left to tell about an incident", extra={"incident": incident.code})
        _audit(
            session,
            AuditAction.FAILOVER,
            incident,
            now,
            level=at,
            officers=[o.id for o in officers],
            **details,
        )
        return len(officers)

    def tell_others(
        self,
        *,
        session: Session,
        incident: Incident,
        action: str,
        who: str,
        who_id: int | None,
        now: datetime,
    ) -> int:
        """The officers told about an incident learn who acknowledged (`acked`) or closed (`closed`) it."""
        told = {pid for pid in session.scalars(_TOLD, {"incident": incident.id}) if pid and pid != who_id}
        if not told:
            return 0
        people = session.scalars(_OFFICERS.where(Person.id.in_(told)).order_by(Person.id)).all()
        for officer in people:
            language = self._language(officer)
            template = self.lexicon.grammars[language].replies[action]
            enqueue(
                session=session,
                recipient=officer.phone,
                text=fit_one(template.format(code=incident.code or "", who=who)),
                purpose=Purpose.NOTICE,
                key=f"{action}:{incident.id}:{officer.id}",
                incident_id=incident.id,
                person_id=officer.id,
                language=language,
                now=now,
            )
        return len(people)

    def update_acknowledger(self, *, session: Session, incident: Incident, now: datetime) -> None:
        """A new report on an acknowledged incident: tell who acknowledged, at most every 15 minutes."""
        if incident.acknowledged_by_id is None or incident.status != IncidentStatus.ACKNOWLEDGED:
            return
        officer = session.get(Person, incident.acknowledged_by_id)
        if officer is None:
            return
        text, language = self._text("update", officer, incident, None)
        window = int(now.timestamp() // UPDATE_EVERY.total_seconds())
        enqueue(
            session=session,
            recipient=officer.phone,
            text=text,
            purpose=Purpose.UPDATE,
            key=f"update:{incident.id}:{window}",
            incident_id=incident.id,
            person_id=officer.id,
            language=language,
            now=now,
        )


def _audit(
    session: Session, action: AuditAction, incident: Incident, now: datetime, **details: object
) -> None:
    session.add(
        AuditLog(
            actor="escalation",
            action=action,
            entity=AuditEntity.INCIDENT,
            entity_id=str(incident.id),
            details={"code": incident.code, **details},
            at=now,
        )
    )


class Escalator(Worker):
    """The background job that sends escalation steps as they fall due."""

    name = "escalator"
    join_timeout = 10.0

    def __init__(
        self, *, factory: sessionmaker[Session], escalation: Escalation, signals: Signals, every: float = 5.0
    ) -> None:
        super().__init__(signals=signals, every=every, factory=factory)
        self.escalation = escalation

    def prepare(self) -> None:
        """Wait one period: the first round is `every` seconds after the start."""
        self.rest(self.every)

    def step(self) -> Pass:
        """Run one escalation round, then wait for the next."""
        self.run_once()
        return Pass.IDLE

    def run_once(self) -> int:
        """Send the escalation steps and failure follow-ups due now, in one transaction; how many."""
        with self.transaction() as session:
            now = utcnow()
            sent = self.escalation.escalate_due(session=session, now=now)
            sent += self.escalation.follow_up_failures(session=session, now=now)
        if sent:
            self.signals.outbox_ready()
        return sent
