"""Deduplication: reports of one event become one incident with many reports.

A report joins an open or acknowledged incident of the same category whose place is within
KENGELE_DEDUP_RADIUS_KM and whose reports span, widened by KENGELE_DEDUP_WINDOW, covers the
report's time (the time it was sent, so a backlog delivered late joins the right incident).
Candidates are found through the (category, status, last_reported_at) index and a bounding box:
the cost does not grow with the number of alerts stored.

Finding the incident and then joining or opening one must not interleave with another replica
doing the same for another report of the same event, or each would open one: on PostgreSQL,
every transaction that writes incidents first takes one advisory lock (`hold_incidents`), held
until it ends. SQLite needs none: its writers already take turns (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from app.crypto import keyring_of
from app.enums import IncidentStatus, Precision
from app.models import Alert, Incident
from app.services.geotag import distance_km

OPEN = (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED)
SEVERITIES = ("low", "medium", "high", "critical")
BASE_SEVERITY = {
    "killing": "critical",
    "attack": "high",
    "abduction": "high",
    "sexual_violence": "high",
    "arson": "high",
    "armed_presence": "medium",
    "looting": "medium",
    "displacement": "medium",
    "other": "medium",
    "threat": "low",
    "tension": "low",
}


def severity(category: str, people: int | None, reporters: int) -> str:
    """Rises with the category, the number of people involved and of independent reporters."""
    rank = SEVERITIES.index(BASE_SEVERITY.get(category, "medium"))
    if people is not None and people >= 10:
        rank += 1
    if people is not None and people >= 50:
        rank += 1
    if reporters >= 3:
        rank += 1
    return SEVERITIES[min(rank, len(SEVERITIES) - 1)]


# pg_advisory_xact_lock's key for incident writes: "KNGL", so that nothing else picks it by chance.
INCIDENT_LOCK = 0x4B4E474C
_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=INCIDENT_LOCK)
_HELD = "kengele.incidents_held"  # Session.info: the transaction that holds it


def hold_incidents(session: Session, *read: Incident) -> None:
    """Wait for, then hold until this transaction ends, the right to write incidents (PostgreSQL).

    Taken before the first incident is read for writing, so that every writer waits at the same
    place and in the same order (no deadlock between two replicas), and once per transaction. A
    report waits at most for another replica's batch to commit; then it sees that batch's
    incidents (READ COMMITTED reads what is committed when each statement starts). The incidents
    `read` before it was taken are read again: another replica may have changed them meanwhile.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    current = session.get_transaction()
    if current is None or session.info.get(_HELD) is current:
        return
    session.execute(_LOCK)
    session.info[_HELD] = current
    for incident in read:
        if not session.is_modified(incident):  # nothing of this transaction's own to lose
            session.refresh(incident)


def find_incident(
    session: Session,
    *,
    category: str,
    lat: float | None,
    lon: float | None,
    sender: str,
    at: datetime,
    radius_km: float,
    window: timedelta,
) -> Incident | None:
    """The open incident this report belongs to, if any."""
    times = {"category": category, "since": shifted(at, -window), "until": shifted(at, window)}
    if lat is None or lon is None:
        # Nowhere to compare: only the same sender repeating themselves joins. Their own recent
        # reports (found through the sender index) name the candidates.
        senders = keyring_of(session).indexes(sender)
        mine = list(session.scalars(_SENDERS_INCIDENTS, {"senders": senders}))
        if not mine:
            return None
        return session.scalars(_UNLOCATED, times | {"mine": mine}).first()
    dlat = radius_km / 111.0
    dlon = radius_km / max(0.01, 111.0 * math.cos(math.radians(lat)))
    box = {"lat_lo": lat - dlat, "lat_hi": lat + dlat, "lon_lo": lon - dlon, "lon_hi": lon + dlon}
    best: tuple[float, Incident] | None = None
    for incident in session.scalars(_NEARBY, times | box):
        assert incident.lat is not None and incident.lon is not None
        d = distance_km(lat, lon, incident.lat, incident.lon)
        if d <= radius_km and (best is None or d < best[0]):
            best = (d, incident)
    return best[1] if best else None


# The ends of time, for a window that would run past them.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def shifted(at: datetime, delta: timedelta) -> datetime:
    """`at + delta`, stopped at the ends of time rather than raising OverflowError."""
    try:
        return at + delta
    except OverflowError:
        return LATEST if delta > timedelta(0) else EARLIEST


# Built once: constructing a statement costs more than running it (see bench/).
_CANDIDATES = select(Incident).where(
    Incident.category == bindparam("category"),
    Incident.status.in_(OPEN),
    Incident.last_reported_at >= bindparam("since"),
    Incident.first_reported_at <= bindparam("until"),
)
_UNLOCATED = (
    _CANDIDATES.where(
        Incident.precision.in_((Precision.COUNTRY, Precision.UNKNOWN)),
        Incident.id.in_(bindparam("mine", expanding=True)),
    )
    .order_by(Incident.last_reported_at.desc())
    .limit(1)
)
_NEARBY = _CANDIDATES.where(
    Incident.lat.between(bindparam("lat_lo"), bindparam("lat_hi")),
    Incident.lon.between(bindparam("lon_lo"), bindparam("lon_hi")),
).limit(50)
_SENDERS_INCIDENTS = (
    select(Alert.incident_id)
    .where(Alert.sender_index.in_(bindparam("senders", expanding=True)), Alert.incident_id.is_not(None))
    .order_by(Alert.id.desc())
    .limit(20)
)


def count_report(
    session: Session, incident: Incident, *, sender: str, at: datetime, people: int | None
) -> None:
    """Count one new report (already added) into its incident without re-reading all of them.

    Every earlier report is in the database (the incident's search flushed them); this one need not
    be: it is written with the rest of the transaction, one flush fewer per report.
    """
    others = None
    if incident.report_count:  # a new incident has no other report
        with session.no_autoflush:
            senders = keyring_of(session).indexes(sender)
            others = session.scalar(_OTHER_REPORT_OF_SENDER, {"incident": incident.id, "senders": senders})
    incident.report_count = (incident.report_count or 0) + 1
    if not incident.reporter_count or others is None:
        incident.reporter_count = (incident.reporter_count or 0) + 1
    incident.first_reported_at = min(incident.first_reported_at, at)
    incident.last_reported_at = max(incident.last_reported_at, at)
    rank = max(
        SEVERITIES.index(incident.severity),
        SEVERITIES.index(severity(incident.category, people, incident.reporter_count)),
    )
    incident.severity = SEVERITIES[rank]  # severity only rises as reports come in


_OTHER_REPORT_OF_SENDER = (
    select(Alert.id)
    .where(
        Alert.incident_id == bindparam("incident"),
        Alert.sender_index.in_(bindparam("senders", expanding=True)),
    )
    .limit(1)
)


def refresh(session: Session, incident: Incident) -> None:
    """Recompute an incident's counts, times and severity from its reports."""
    row = session.execute(
        select(func.count(Alert.id), func.min(Alert.reported_at), func.max(Alert.reported_at)).where(
            Alert.incident_id == incident.id
        )
    ).one()
    # Counted from the numbers, not their blind indexes: mid-rotation one number has two of those.
    reporters = set(session.scalars(select(Alert.sender).where(Alert.incident_id == incident.id)))
    incident.report_count, incident.reporter_count = int(row[0]), len(reporters)
    if row[1] is not None:
        incident.first_reported_at, incident.last_reported_at = row[1], row[2]
    counts = [a for a in session.scalars(select(Alert.details).where(Alert.incident_id == incident.id))]
    people = max(
        (int(d["count"]) for d in counts if isinstance(d, dict) and d.get("count") is not None), default=None
    )
    incident.severity = severity(incident.category, people, incident.reporter_count)
