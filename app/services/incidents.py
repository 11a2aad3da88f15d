"""What officers do to incidents: acknowledge, close, merge two, move a report out. Audit-logged."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import Alert, AuditLog, Incident, Message
from app.services.dedup import refresh


def _audit(
    session: Session, actor: str, action: str, incident: Incident, now: datetime, **details: object
) -> None:
    details = {"code": incident.code, **details}
    session.add(
        AuditLog(
            actor=actor, action=action, entity="incident", entity_id=str(incident.id), details=details, at=now
        )
    )


def acknowledge(
    *, session: Session, incident: Incident, who: str, who_id: int | None, actor: str, now: datetime
) -> bool:
    """Acknowledge; the first acknowledgement wins (False: someone already had)."""
    if incident.acknowledged_at is not None:
        return False
    incident.acknowledged_at, incident.acknowledged_by, incident.acknowledged_by_id = now, who, who_id
    incident.next_escalation_at = None  # someone answers: no more escalation steps
    if incident.status == "open":
        incident.status = "acknowledged"
    _audit(session, actor, "ack", incident, now)
    return True


def close(*, session: Session, incident: Incident, who: str, actor: str, now: datetime) -> bool:
    """Close; a closed incident takes no more reports (False: it was closed already)."""
    if incident.status == "closed":
        return False
    incident.status, incident.closed_at, incident.closed_by = "closed", now, who
    incident.next_escalation_at = None
    _audit(session, actor, "close", incident, now)
    return True


def merge(*, session: Session, source: Incident, target: Incident, actor: str, now: datetime) -> Incident:
    """Move every report of `source` into `target`; `source` is closed, pointing at `target`."""
    if source.id == target.id:
        raise ValueError("into: an incident cannot be merged into itself")
    if target.status == "closed":
        raise ValueError(f"into: {target.code} is closed")
    if source.category != target.category:
        raise ValueError(f"into: {target.code} is {target.category}, {source.code} is {source.category}")
    session.execute(update(Alert).where(Alert.incident_id == source.id).values(incident_id=target.id))
    session.execute(update(Message).where(Message.incident_id == source.id).values(incident_id=target.id))
    source.status, source.closed_at, source.closed_by = "closed", now, f"merged into {target.code}"
    source.report_count = source.reporter_count = 0
    refresh(session, target)
    _audit(session, actor, "merge", target, now, merged=source.code)
    return target


def move(*, session: Session, alert: Alert, target: Incident | None, actor: str, now: datetime) -> Incident:
    """Move one report out of its incident, into `target` or into an incident of its own."""
    source = session.get(Incident, alert.incident_id) if alert.incident_id else None
    if target is None:
        target = Incident(
            category=alert.category,
            severity=alert.severity,
            status="open",
            place_id=alert.place_id,
            place_name=alert.place_name,
            lat=alert.lat,
            lon=alert.lon,
            precision=alert.precision,
            first_reported_at=alert.reported_at,
            last_reported_at=alert.reported_at,
            report_count=0,
            reporter_count=0,
            escalation_level=0,
            created_at=now,
        )
        session.add(target)
        session.flush()
        target.code = f"K{target.id}"
    elif target.category != alert.category:
        raise ValueError(f"incident_id: {target.code} is {target.category}, the report is {alert.category}")
    elif target.status == "closed":
        raise ValueError(f"incident_id: {target.code} is closed")
    alert.incident_id = target.id
    session.execute(update(Message).where(Message.id == alert.message_id).values(incident_id=target.id))
    session.flush()
    refresh(session, target)
    if source is not None:
        refresh(session, source)
        if source.report_count == 0 and source.status != "closed":  # nothing left in it
            source.status, source.closed_at, source.closed_by = "closed", now, f"emptied into {target.code}"
    _audit(session, actor, "move_report", target, now, alert=alert.id, source=source.code if source else None)
    return target


def by_code(session: Session, code: str) -> Incident | None:
    return session.scalars(select(Incident).where(Incident.code == code)).first()
