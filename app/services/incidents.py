"""Incidents: a report is recorded into one, and officers decide on them.

Each decision (acknowledge, close, merge two, move a report out) is one function here, together
with the notices it sends, so the SMS command, the API route and the dashboard do the same thing.
Everything runs in the caller's transaction; every decision is audit-logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from app.enums import AuditAction, AuditEntity, Direction, IncidentStatus, Precision, Purpose, WebhookEvent
from app.models import Alert, AuditLog, Incident, IncidentNote, Message, Person, Place
from app.phones import mask
from app.schemas import (
    CODE_PREFIX,
    AlertPublic,
    HistoryEntry,
    IncidentDetail,
    IncidentKey,
    IncidentPublic,
    Notification,
    for_viewer,
)
from app.services.areas import normalize_name
from app.services.dedup import (
    count_report,
    find_incident,
    hold_cells,
    lock_incidents,
    refresh,
    report_cells,
    severity,
)
from app.services.escalation import Escalation
from app.services.geotag import Located, Spot
from app.services.limits import count_opening, vouched_for
from app.services.webhooks import emit
from keywords.parser import ParseResult, Via

# A later report moves an incident only to a better location (Precision lists them worst first).
PRECISION_RANK: dict[str, int] = {precision: rank for rank, precision in enumerate(Precision)}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who decides: the name the incident shows, their roster entry if any, the audit log's actor."""

    name: str
    person_id: int | None
    audit: str

    @classmethod
    def officer(cls, person: Person) -> Actor:
        """Name an officer of the roster acting by SMS."""
        return cls(person.name, person.id, f"sms:{person.id}")

    @classmethod
    def api(cls, name: str) -> Actor:
        """Name the holder of an API token; not a roster entry, so every officer told learns who."""
        return cls(name, None, f"api:{name}")

    @classmethod
    def dashboard(cls, name: str) -> Actor:
        """Name a user signed in to the dashboard."""
        return cls(name, None, f"web:{name}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What a decision left: the incident, whether it changed, how many other officers were told."""

    incident: Incident
    changed: bool
    told: int = 0


class Refused(ValueError):
    """A decision the incidents' state does not allow; the message starts with the field at fault."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """A recorded report: its row, its incident, and whether that incident is new."""

    alert: Alert
    incident: Incident
    new: bool


# -- the area of a report ------------------------------------------------------------------------
def report_area(
    *, place: Place | Spot | None, precision: str, home: Place | None, person: Person | None
) -> str | None:
    """Name a report's area: its place's admin2, else admin1; at home, the home place's, else the person's."""
    if place is not None:
        return place.admin2 or place.admin1
    if precision != Precision.HOME or person is None:
        return None
    return (home.admin2 or home.admin1 if home is not None else None) or person.area


def person_area(*, area: str | None, home_admin2: str | None, home_admin1: str | None) -> str:
    """Name the area a person belongs to (check-in rounds, network health): theirs, else their home's.

    Not the order of `report_area`: a report is placed where it happened, a person where the
    roster puts them ("" when nothing does).
    """
    return area or home_admin2 or home_admin1 or ""


def _home_place(session: Session, person: Person | None) -> Place | None:
    return session.get(Place, person.place_id) if person and person.place_id is not None else None


LOCATED = (Precision.PLACE, Precision.HOME)


# -- recording a report --------------------------------------------------------------------------
def record_report(
    *,
    session: Session,
    message: Message,
    person: Person | None,
    result: ParseResult,
    where: Located,
    language: str,
    radius_km: float,
    window: timedelta,
    escalation: Escalation | None,
    now: datetime,
) -> Recorded:
    """Turn a parsed, located message into a report of an incident."""
    category = result.category or "other"
    reported_at = message.reported_at or now
    details: dict[str, object] = {"count": result.count, "words": result.details, "time": result.time}
    if result.via == Via.BEEP:
        details["beep"] = True
    if result.corrections:
        details["corrections"] = result.corrections
    if message.given_date is not None:  # the provider's date, not believed (app/services/intake.py)
        details["given_date"] = message.given_date
    if where.written and where.matched and normalize_name(where.matched) != where.written:
        details["place"] = f"{where.written} -> {where.matched}"
    if result.readings:  # words read past the card: what an officer checks before trusting them
        details["readings"] = result.readings
    if result.things:  # "50 vaches": counted apart, `count` stays the people
        details["things"] = result.things
    if result.offset:
        details["offset"] = result.offset
    home = _home_place(session, person) if where.precision == Precision.HOME else None
    place_name = where.name or (" ".join(result.place_words) or None) or (home.name if home else None)
    located = where.precision in LOCATED  # a country's centre locates nothing
    lat, lon = (where.lat, where.lon) if located else (None, None)
    if lat is not None and lon is not None:  # another replica's report of the same event waits, or is seen
        hold_cells(session, report_cells(category, lat, lon, radius_km))
    # On PostgreSQL the incident found is locked, and read as committed (dedup.find_incident).
    incident = find_incident(
        session,
        category=category,
        lat=lat,
        lon=lon,
        sender=message.sender or "",
        at=reported_at,
        radius_km=radius_km,
        window=window,
    )
    area = report_area(place=where.place, precision=where.precision, home=home, person=person)
    new = incident is None
    if incident is None:
        incident = _open(
            session,
            category=category,
            severity=severity(category, result.count, 1),
            place_id=where.place.id if where.place else None,
            place_name=place_name,
            lat=where.lat,
            lon=where.lon,
            precision=where.precision,
            area=area,
            at=reported_at,
            now=now,
        )
    elif PRECISION_RANK[where.precision] > PRECISION_RANK[incident.precision]:
        incident.place_id = where.place.id if where.place else None  # a report that says where it is
        incident.place_name, incident.lat, incident.lon = place_name, where.lat, where.lon
        incident.precision = where.precision
        incident.area = area
    alert = Alert(
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
        language=language,
        sender=message.sender or "",
        reported_at=reported_at,
        text=message.text,
        details=details,
        confidence=result.confidence,
        needs_review=result.needs_review,
        opened=new,
        created_at=now,
    )
    session.add(alert)
    if new and message.sender:
        count_opening(session, message.sender)  # counted by the flood bound below
    count_report(session, incident, sender=message.sender or "", at=reported_at, people=result.count)
    if escalation is not None:
        if new:
            escalation.forward(
                session=session,
                incident=incident,
                people=result.count,
                now=now,
                beep=result.via == Via.BEEP,
                reporter=message.sender,
                vouched=vouched_for(person),
            )
        elif escalation.held(incident) and vouched_for(person):
            # A focal point confirms a flooder's incident: officers must know now. Unregistered
            # numbers do not release it (a second forged number would then forward every one).
            escalation.forward(
                session=session,
                incident=incident,
                people=result.count,
                now=now,
                beep=result.via == Via.BEEP,
                reporter=message.sender,
            )
        else:
            escalation.update_acknowledger(session=session, incident=incident, now=now)
    # After the forward: the first delivery already shows the level of officers told.
    emit(
        session=session,
        incident=incident,
        event=WebhookEvent.CREATED if new else WebhookEvent.UPDATED,
        now=now,
    )
    # Last: written with the message's own outcome (one UPDATE of its row, not two).
    message.incident_id = incident.id
    return Recorded(alert, incident, new)


# -- what officers decide ------------------------------------------------------------------------
def acknowledge(
    *, session: Session, incident: Incident, officer: Actor, escalation: Escalation | None, now: datetime
) -> Decision:
    """Acknowledge and tell the other officers who has it; the first acknowledgement wins."""
    lock_incidents(session, incident)  # another replica's officer may have been first
    if incident.acknowledged_at is not None:
        return Decision(incident, changed=False)
    incident.acknowledged_at, incident.acknowledged_by = now, officer.name
    incident.acknowledged_by_id = officer.person_id
    incident.next_escalation_at = None  # someone answers: no more escalation steps
    if incident.status == IncidentStatus.OPEN:
        incident.status = IncidentStatus.ACKNOWLEDGED
    _audit(session, officer.audit, AuditAction.ACK, incident, now)
    emit(session=session, incident=incident, event=WebhookEvent.ACKNOWLEDGED, now=now)
    told = _tell_others(session, incident, officer, escalation, now, "acked")
    return Decision(incident, changed=True, told=told)


def close(
    *, session: Session, incident: Incident, officer: Actor, escalation: Escalation | None, now: datetime
) -> Decision:
    """Close and tell the other officers who closed it; a closed incident takes no more reports."""
    lock_incidents(session, incident)
    if incident.status == IncidentStatus.CLOSED:
        return Decision(incident, changed=False)
    incident.status, incident.closed_at, incident.closed_by = IncidentStatus.CLOSED, now, officer.name
    incident.next_escalation_at = None
    _audit(session, officer.audit, AuditAction.CLOSE, incident, now)
    emit(session=session, incident=incident, event=WebhookEvent.CLOSED, now=now)
    told = _tell_others(session, incident, officer, escalation, now, "closed")
    return Decision(incident, changed=True, told=told)


def _tell_others(
    session: Session,
    incident: Incident,
    officer: Actor,
    escalation: Escalation | None,
    now: datetime,
    action: str,
) -> int:
    if escalation is None:  # configured without escalation: nobody was told, nobody to tell
        return 0
    return escalation.tell_others(
        session=session, incident=incident, action=action, who=officer.name, who_id=officer.person_id, now=now
    )


def merge(*, session: Session, source: Incident, target: Incident, officer: Actor, now: datetime) -> Decision:
    """Move every report of `source` into `target`; `source` is closed, pointing at `target`."""
    if source.id == target.id:
        raise Refused("into: an incident cannot be merged into itself")
    if target.status == IncidentStatus.CLOSED:
        raise Refused(f"into: {target.code} is closed")
    if source.category != target.category:
        raise Refused(f"into: {target.code} is {target.category}, {source.code} is {source.category}")
    lock_incidents(session, source, target)
    # The reports it moves are named in the audit log: each keeps the change it made to `source`
    # (an incident's CAP versions are counted from its log, see change_times).
    moved = list(session.scalars(select(Alert.id).where(Alert.incident_id == source.id).order_by(Alert.id)))
    session.execute(update(Alert).where(Alert.incident_id == source.id).values(incident_id=target.id))
    session.execute(update(Message).where(Message.incident_id == source.id).values(incident_id=target.id))
    source.status, source.closed_at = IncidentStatus.CLOSED, now
    source.closed_by = f"merged into {target.code}"
    source.report_count = source.reporter_count = 0
    refresh(session, target)
    _audit(session, officer.audit, AuditAction.MERGE, target, now, merged=source.code, alerts=moved)
    emit(session=session, incident=source, event=WebhookEvent.MERGED, now=now)
    emit(session=session, incident=target, event=WebhookEvent.UPDATED, now=now)
    return Decision(target, changed=True)


def move(
    *,
    session: Session,
    alert: Alert,
    target: Incident | None,
    officer: Actor,
    now: datetime,
    radius_km: float,
) -> Decision:
    """Move one report out of its incident, into `target` or into an incident of its own.

    An incident of its own is opened under its place's cells (`radius_km`, the dedup radius), so
    another replica's report there meanwhile waits and then finds it.
    """
    source = session.get(Incident, alert.incident_id) if alert.incident_id else None
    lock_incidents(session, *(i for i in (source, target) if i is not None))
    opened = target is None
    if target is None:
        if alert.lat is not None and alert.lon is not None and alert.precision in LOCATED:  # as record_report
            hold_cells(session, report_cells(alert.category, alert.lat, alert.lon, radius_km))
        target = _open(
            session,
            category=alert.category,
            severity=alert.severity,
            place_id=alert.place_id,
            place_name=alert.place_name,
            lat=alert.lat,
            lon=alert.lon,
            precision=alert.precision,
            area=_alert_area(session, alert),
            at=alert.reported_at,
            now=now,
        )
    elif target.category != alert.category:
        raise Refused(f"incident_id: {target.code} is {target.category}, the report is {alert.category}")
    elif target.status == IncidentStatus.CLOSED:
        raise Refused(f"incident_id: {target.code} is closed")
    alert.incident_id = target.id
    session.execute(update(Message).where(Message.id == alert.message_id).values(incident_id=target.id))
    session.flush()
    refresh(session, target)
    emptied = False
    if source is not None:
        refresh(session, source)
        if source.report_count == 0 and source.status != IncidentStatus.CLOSED:  # nothing left in it
            emptied = True
            source.status, source.closed_at = IncidentStatus.CLOSED, now
            source.closed_by = f"emptied into {target.code}"
    _audit(
        session,
        officer.audit,
        AuditAction.MOVE_REPORT,
        target,
        now,
        alert=alert.id,
        source=source.code if source else None,
    )
    emit(
        session=session,
        incident=target,
        event=WebhookEvent.CREATED if opened else WebhookEvent.UPDATED,
        now=now,
    )
    if source is not None and source.id != target.id:
        emit(
            session=session,
            incident=source,
            event=WebhookEvent.CLOSED if emptied else WebhookEvent.UPDATED,
            now=now,
        )
    return Decision(target, changed=True)


def _open(
    session: Session,
    *,
    category: str,
    severity: str,
    place_id: int | None,
    place_name: str | None,
    lat: float | None,
    lon: float | None,
    precision: str,
    area: str | None,
    at: datetime,
    now: datetime,
) -> Incident:
    """Open an incident with no report counted yet, and give it its code (`K<id>`)."""
    incident = Incident(
        category=category,
        severity=severity,
        status=IncidentStatus.OPEN,
        place_id=place_id,
        place_name=place_name,
        lat=lat,
        lon=lon,
        precision=precision,
        area=area,
        first_reported_at=at,
        last_reported_at=at,
        report_count=0,
        reporter_count=0,
        escalation_level=0,
        created_at=now,
    )
    session.add(incident)
    session.flush()
    incident.code = code_of(incident.id)
    return incident


def _alert_area(session: Session, alert: Alert) -> str | None:
    """The area the report had when it was recorded, read again from its place or its sender."""
    place = session.get(Place, alert.place_id) if alert.place_id is not None else None
    at_home = place is None and alert.precision == Precision.HOME and alert.person_id is not None
    person = session.get(Person, alert.person_id) if at_home else None
    return report_area(
        place=place, precision=alert.precision, home=_home_place(session, person), person=person
    )


def _audit(
    session: Session, actor: str, action: AuditAction, incident: Incident, now: datetime, **details: object
) -> None:
    details = {"code": incident.code, **details}
    session.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=AuditEntity.INCIDENT,
            entity_id=str(incident.id),
            details=details,
            at=now,
        )
    )


def mark_reviewed(*, session: Session, alert: Alert, actor: Actor, now: datetime) -> bool:
    """Clear a report's needs_review once an officer has read it; False if it was already clear."""
    if not alert.needs_review:
        return False
    alert.needs_review = False
    session.add(
        AuditLog(
            actor=actor.audit,
            action=AuditAction.ALERT_REVIEWED,
            entity=AuditEntity.ALERT,
            entity_id=str(alert.id),
            details={"incident": alert.incident_id, "category": alert.category},
            at=now,
        )
    )
    return True


def to_review(*, session: Session, limit: int) -> tuple[list[Alert], int]:
    """The reports still to review, newest first (at most `limit`), and how many there are."""
    query = select(Alert).where(Alert.needs_review.is_(True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return list(session.scalars(query.order_by(*ALERT_ORDER).limit(limit))), total


def add_note(*, session: Session, incident: Incident, actor: Actor, text: str) -> IncidentNote:
    """Keep an officer's note on the incident (shown on its page, logged in its history)."""
    note = IncidentNote(incident_id=incident.id, author=actor.name, text=text)
    session.add(note)
    session.flush()
    _audit(session, actor.audit, AuditAction.NOTE, incident, note.created_at, note=note.id)
    return note


# -- reading -------------------------------------------------------------------------------------
def code_of(incident_id: int) -> str:
    """The code officers type for an incident: the prefix and its id (K42)."""
    return f"{CODE_PREFIX}{incident_id}"


def next_code(*, session: Session) -> str:
    """The code the next incident gets, unless something else records one first.

    PostgreSQL hands ids out from a sequence that an insert rolled back has moved on too, so the
    next id is the sequence's, not the largest id plus one; SQLite's next rowid is the largest plus one.
    """
    conn = session.connection()
    following = (session.scalar(select(func.max(Incident.id))) or 0) + 1
    if conn.dialect.name == "postgresql":
        sequence = conn.scalar(text("SELECT pg_get_serial_sequence('incidents', 'id')"))
        if sequence is not None:
            query = text(f"SELECT last_value, is_called FROM {sequence}")  # noqa: S608  (the catalogue's name)
            last, called = conn.execute(query).one()
            following = int(last) + 1 if called else int(last)
    return code_of(following)


def by_code(*, session: Session, code: str) -> Incident | None:
    """Find an incident by the code officers type (K42)."""
    return session.scalars(select(Incident).where(Incident.code == code)).first()


def find(*, session: Session, key: IncidentKey) -> Incident | None:
    """Find an incident by the id or the code a caller named it by."""
    if key.code is not None:
        return by_code(session=session, code=key.code)
    return session.get(Incident, key.id)


# Newest first: the order of the lists (the JSON pages), by the last report, then by id.
INCIDENT_ORDER = (Incident.last_reported_at.desc(), Incident.id.desc())
ALERT_ORDER = (Alert.id.desc(),)


def incidents_query(
    *, status: IncidentStatus | None, category: str | None, since: datetime | None
) -> Select[Incident]:
    """Select the incidents a list's filters name (`since`: reported to at or after it, in UTC)."""
    query = select(Incident)
    if status:
        query = query.where(Incident.status == status)
    if category:
        query = query.where(Incident.category == category)
    if since:
        query = query.where(Incident.last_reported_at >= since)
    return query


def alerts_query(
    *, incident_id: int | None, since: datetime | None, needs_review: bool | None = None
) -> Select[Alert]:
    """Select the reports a list's filters name (`since`: reported at or after it, in UTC)."""
    query = select(Alert)
    if incident_id is not None:
        query = query.where(Alert.incident_id == incident_id)
    if needs_review is not None:
        query = query.where(Alert.needs_review.is_(needs_review))
    if since:
        query = query.where(Alert.reported_at >= since)
    return query


def report_view(*, alert: Alert, full: bool) -> AlertPublic:
    """Show a report; without `full` (a viewer) every number in it is masked."""
    view = AlertPublic.model_validate(alert)
    if full:
        return view
    view.sender = mask(view.sender) or ""  # a reporter's number can get them killed
    return for_viewer(view)


def incident_view(*, incident: Incident, full: bool) -> IncidentPublic:
    """Show an incident; without `full` (a viewer) every number in its texts is masked."""
    view = IncidentPublic.model_validate(incident)
    return view if full else for_viewer(view)


def reveal_sender(*, session: Session, alert: Alert, actor: Actor, reason: str, now: datetime) -> AlertPublic:
    """Show a report with its sender's number, and audit-log who asked and why (never the number)."""
    session.add(
        AuditLog(
            actor=actor.audit,
            action=AuditAction.REVEAL_PHONE,
            entity=AuditEntity.ALERT,
            entity_id=str(alert.id),
            details={"reason": reason, "incident": alert.incident_id},
            at=now,
        )
    )
    return report_view(alert=alert, full=True)


def detail(*, session: Session, incident: Incident, full: bool) -> IncidentDetail:
    """Show an incident with its reports, the SMS sent about it and its history; masked unless `full`."""
    reports = list(
        session.scalars(select(Alert).where(Alert.incident_id == incident.id).order_by(Alert.reported_at))
    )
    sent = session.scalars(
        select(Message)
        .where(
            Message.incident_id == incident.id,
            Message.direction == Direction.OUTBOUND,
            Message.purpose != Purpose.REPLY,
        )
        .order_by(Message.id)
    )
    notifications = [Notification.model_validate(m) for m in sent]
    steps = session.scalars(
        select(AuditLog)
        .where(AuditLog.entity == AuditEntity.INCIDENT, AuditLog.entity_id == str(incident.id))
        .order_by(AuditLog.id)
    )
    history = [HistoryEntry.model_validate(step) for step in steps]
    if not full:
        for note in notifications:
            note.recipient = mask(note.recipient)
    view = IncidentDetail(
        **IncidentPublic.model_validate(incident).model_dump(),
        reports=[report_view(alert=a, full=full) for a in reports],
        needs_review=any(a.needs_review for a in reports),
        notifications=notifications,
        history=history,
    )
    return view if full else for_viewer(view)


# Steps that move reports between incidents: a change of the incident moved into (the audit
# log's entity) and of the one moved out of (the step's `source`, or `merged`).
_MOVES = (AuditAction.MERGE, AuditAction.MOVE_REPORT)


def change_times(*, session: Session, incidents: Sequence[Incident]) -> dict[int, list[datetime]]:
    """List, oldest first, the times each incident changed; the first is its opening.

    An incident changes when it opens, at each later report recorded into it, when acknowledged,
    escalated or closed, and when reports are merged or moved in or out. All is read from what
    stays (the incident's own times, its reports', the audit log, which only grows), so the n-th
    change is the same at every reading, and so is the incident's CAP version n. A report counts
    from when it was recorded, not the time it says it was sent (a backlog delivered late is a
    change of today), and for the incident it was recorded into, wherever it was moved since.
    Changes at the same instant are one (a move that empties an incident also closes it).
    Merges logged before their reports were named in the log count those reports where they are.
    """
    times: dict[int, set[datetime]] = {}
    opened: dict[int, datetime] = {}
    by_code: dict[str, int] = {}
    for incident in incidents:
        opened[incident.id] = incident.created_at
        by_code[incident.code or code_of(incident.id)] = incident.id
        times[incident.id] = {
            t for t in (incident.created_at, incident.acknowledged_at, incident.closed_at) if t
        }
    if not incidents:
        return {}
    keys = [str(i) for i in times]
    # Every move and merge (officers' decisions: few), for the reports' first incidents.
    steps = session.execute(
        select(AuditLog.entity_id, AuditLog.action, AuditLog.at, AuditLog.details)
        .where(
            AuditLog.entity == AuditEntity.INCIDENT,
            or_(
                AuditLog.action.in_(_MOVES),
                and_(AuditLog.action == AuditAction.ESCALATE, AuditLog.entity_id.in_(keys)),
            ),
        )
        .order_by(AuditLog.id)
    )
    recorded_in: dict[int, int | None] = {}  # a moved report: the incident it was recorded into, if ours
    for entity_id, action, at, details in steps:
        into = int(entity_id)
        details = details or {}
        out_of = by_code.get(str(details.get("source") or details.get("merged") or ""))
        for changed in (into, out_of):
            if changed in times:
                times[changed].add(at)
        if action in _MOVES:
            alerts = details.get("alerts") if action == AuditAction.MERGE else [details.get("alert")]
            for alert_id in alerts if isinstance(alerts, list) else []:
                if isinstance(alert_id, int):
                    recorded_in.setdefault(alert_id, out_of)  # the first move names where it began
    reports = session.execute(
        select(Alert.id, Alert.incident_id, Alert.created_at).where(
            or_(
                Alert.incident_id.in_(list(times)),
                Alert.id.in_([a for a, origin in recorded_in.items() if origin is not None]),
            )
        )
    )
    for alert_id, incident_id, created_at in reports:
        origin = recorded_in.get(alert_id, incident_id)
        # The opening report was recorded with its incident: that change is the opening.
        if origin in times and created_at > opened[origin]:
            times[origin].add(created_at)
    return {incident_id: sorted(found) for incident_id, found in times.items()}
