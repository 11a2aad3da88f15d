"""Escalation: the duty officers of an incident's area are told, and someone always answers.

A new incident is forwarded to every active level-1 officer of its area (an officer whose area is
empty covers everywhere); where there is none, to the next level that covers it. An incident not
acknowledged within KENGELE_ACK_TIMEOUT goes to the next level, and so on; at the top it is sent
again to the top level at the same interval until someone acknowledges. Each step is claimed with
a conditional UPDATE, so with several replicas every step is sent once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.models import Incident, Person, Place
from app.services.gazetteer import normalize_name
from app.services.outbox import enqueue
from keywords.parser import Lexicon
from keywords.sms import fit_one

log = logging.getLogger("kengele.escalation")
UPDATE_EVERY = timedelta(minutes=15)


def area_of(session: Session, incident: Incident) -> set[str]:
    """The area names an incident is in: its place's admin2 and admin1 (normalised)."""
    if incident.place_id is None:
        return {normalize_name(incident.area)} if incident.area else set()
    place = session.get(Place, incident.place_id)
    return {normalize_name(n) for n in (place.admin2, place.admin1) if n} if place else set()


_OFFICERS = select(Person).where(
    Person.role == "officer", Person.active.is_(True), Person.status == "approved"
)


def officers_for(session: Session, incident: Incident, level: int) -> tuple[int, list[Person]]:
    """The officers to tell at `level` or, where none covers the area there, the next level up."""
    areas = area_of(session, incident)
    officers = session.scalars(_OFFICERS).all()
    covering = [o for o in officers if not o.area or normalize_name(o.area) in areas]
    levels = sorted({o.level or 1 for o in covering})
    if not levels:
        return level, []
    at = next((lv for lv in levels if lv >= level), levels[-1])  # at the top: the top level again
    return at, [o for o in covering if (o.level or 1) == at]


class Escalation:
    """Forwards, re-escalations and updates, written to the outbox in the caller's transaction."""

    def __init__(self, *, lexicon: Lexicon, ack_timeout: float, timezone: str) -> None:
        self.lexicon = lexicon
        self.ack_timeout = timedelta(seconds=ack_timeout)
        self.tz = ZoneInfo(timezone)

    def _text(
        self, template: str, person: Person, incident: Incident, people: int | None, beep: bool = False
    ) -> tuple[str, str]:
        language = (
            person.language if person.language in self.lexicon.grammars else self.lexicon.default_language
        )
        grammar = self.lexicon.grammars[language]
        values = {
            "code": incident.code or "",
            "category": grammar.category_names.get(incident.category, incident.category),
            "place": incident.place_name or "?",
            "people": (f" {people}" if people else "") + (f" {grammar.replies['beep']}" if beep else ""),
            "reports": str(incident.report_count),
            "time": incident.last_reported_at.astimezone(self.tz).strftime("%H:%M"),
        }
        return fit_one(grammar.replies[template].format(**values)), language

    def forward(
        self, *, session: Session, incident: Incident, people: int | None, now: datetime, beep: bool = False
    ) -> int:
        """Tell the first level of officers about a new incident; how many were told."""
        return self._send(
            session=session, incident=incident, level=1, step=1, people=people, now=now, beep=beep
        )

    def _send(
        self,
        *,
        session: Session,
        incident: Incident,
        level: int,
        step: int,
        people: int | None,
        now: datetime,
        beep: bool = False,
    ) -> int:
        at, officers = officers_for(session, incident, level)
        purpose = "alert_forward" if step == 1 else "escalation"
        for officer in officers:
            text, language = self._text("forward", officer, incident, people, beep)
            enqueue(
                session=session,
                recipient=officer.phone,
                text=text,
                purpose=purpose,
                key=f"{purpose}:{incident.id}:{step}:{officer.id}",
                incident_id=incident.id,
                person_id=officer.id,
                language=language,
                now=now,
            )
        incident.escalation_level = at
        incident.next_escalation_at = now + self.ack_timeout
        if not officers:
            log.warning("no officer covers an incident", extra={"incident": incident.code})
        return len(officers)

    def escalate_due(self, *, session: Session, now: datetime) -> int:
        """Send every escalation step that fell due (once, whatever the number of replicas)."""
        due = session.scalars(
            select(Incident).where(Incident.status == "open", Incident.next_escalation_at <= now).limit(100)
        ).all()
        sent = 0
        for incident in due:
            claimed = session.execute(
                update(Incident)
                .where(Incident.id == incident.id, Incident.next_escalation_at == incident.next_escalation_at)
                .values(next_escalation_at=now + self.ack_timeout)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:
                continue  # another replica took this step
            step = int((now - incident.created_at) / self.ack_timeout) + 1
            sent += self._send(
                session=session,
                incident=incident,
                level=incident.escalation_level + 1,
                step=max(step, 2),
                people=None,
                now=now,
            )
        return sent

    def update_acknowledger(self, *, session: Session, incident: Incident, now: datetime) -> None:
        """A new report on an acknowledged incident: tell who acknowledged, at most every 15 minutes."""
        if incident.acknowledged_by_id is None or incident.status != "acknowledged":
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
            purpose="update",
            key=f"update:{incident.id}:{window}",
            incident_id=incident.id,
            person_id=officer.id,
            language=language,
            now=now,
        )


class Escalator:
    """The background job that sends escalation steps as they fall due."""

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        escalation: Escalation,
        every: float = 5.0,
        on_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self.factory = factory
        self.escalation = escalation
        self.every = every
        self.on_outbox = on_outbox
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kengele-escalator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_once(self) -> int:
        with self.factory() as session, session.begin():
            sent = self.escalation.escalate_due(session=session, now=utcnow())
        if sent:
            self.on_outbox()
        return sent

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.run_once()
            except Exception:  # the next round tries again
                log.exception("escalation round failed")
