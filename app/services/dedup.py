"""Deduplication: reports of one event become one incident with many reports.

A report joins an open or acknowledged incident of the same category whose place is within
KENGELE_DEDUP_RADIUS_KM and whose reports span, widened by KENGELE_DEDUP_WINDOW, covers the
report's time (the time it was sent, so a backlog delivered late joins the right incident).
Candidates are found through the (category, status, last_reported_at) index and a bounding box:
the cost does not grow with the number of alerts stored.

Finding the incident and then joining or opening one must not interleave with another replica
doing the same for another report of the same event, or each would open one. On PostgreSQL a
located report first holds, until its transaction ends, an advisory lock per grid cell its search
box touches, for its category (`hold_cells`): two reports that could meet share a cell, and take
turns; reports of other categories or places do not wait for each other. A report without a place
joins only its own sender's incidents, and its sender is locked already (limits.lock_senders). The
incident a report joins, and any an officer decides on, is locked as a row (`lock_incidents`) and
read again, so no count or decision is written over another replica's. SQLite needs none of this:
its writers already take turns (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from app.crypto import keyring_of
from app.db import per_transaction
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


# pg_advisory_xact_lock(INCIDENT_LOCK, cell): "KNGL", the class of the dedup cells' locks.
INCIDENT_LOCK = 0x4B4E474C
# The grid's side, in degrees of latitude and of longitude: at least a search box's height (two
# radii), so a box touches at most two rows, and at most three columns up to 60 degrees of latitude.
CELL_DEGREES = 0.25
_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(:cls, k))"
    " FROM (SELECT unnest(CAST(:keys AS integer[])) AS k ORDER BY k) AS s"
)
_ROW = select(Incident.id).where(Incident.id == bindparam("id")).with_for_update()
_CELLS = "kengele.cells_held"  # per transaction: the cells' keys it holds
_ROWS = "kengele.incidents_locked"  # per transaction: the ids of the incidents it has locked


def report_cells(category: str, lat: float, lon: float, radius_km: float) -> frozenset[int]:
    """The lock keys of a located report: each grid cell its search box touches, for its category.

    An incident the report could join lies in its box, so in one of these cells; one it opens lies
    at its own place, in its box too. Two reports that could meet therefore share a key.
    """
    dlat, dlon = _box(lat, radius_km)
    side = max(CELL_DEGREES, 2 * dlat)
    rows = range(math.floor((lat - dlat) / side), math.floor((lat + dlat) / side) + 1)
    columns = range(math.floor((lon - dlon) / side), math.floor((lon + dlon) / side) + 1)
    return frozenset(_cell_key(category, row, column) for row in rows for column in columns)


def _cell_key(category: str, row: int, column: int) -> int:
    """A signed 32-bit key, the same in every process (crc32: Python's hash() differs per process)."""
    value = zlib.crc32(f"{category}:{row}:{column}".encode())
    return value - 2**32 if value >= 2**31 else value


def _box(lat: float, radius_km: float) -> tuple[float, float]:
    """Half the height and half the width, in degrees, of the box around a point that holds its radius."""
    return radius_km / 111.0, radius_km / max(0.01, 111.0 * math.cos(math.radians(lat)))


def hold_cells(session: Session, keys: Iterable[int]) -> None:
    """Wait for, then hold until this transaction ends, these cells' locks (PostgreSQL).

    A batch takes all its reports' cells at once, in sorted order, before the first report (see
    processing), so two replicas wait for each other rather than deadlock; a report then finds its
    cells held. READ COMMITTED: every query after the wait sees what the other replica committed.
    """
    if not _postgresql(session):
        return
    held = per_transaction(session, _CELLS, set[int])
    missing = sorted(set(keys) - held)
    if missing:
        session.execute(_LOCK, {"cls": INCIDENT_LOCK, "keys": missing})
        held.update(missing)


def lock_incidents(session: Session, *incidents: Incident) -> None:
    """Lock these incidents' rows until this transaction ends, and read them again (PostgreSQL).

    Taken before a report is counted into an incident or an officer's decision is written to it:
    another replica's report or decision waits, and ours is made on what it committed. Locked in
    the order of their ids (two officers merging two incidents both ways wait, not deadlock).
    """
    if not _postgresql(session):
        return
    locked = per_transaction(session, _ROWS, set[int])
    for incident in sorted(incidents, key=lambda i: i.id):
        if incident.id in locked:  # ours since the last time: nobody else has changed it
            continue
        if session.is_modified(incident):  # this transaction's own changes are kept
            session.execute(_ROW, {"id": incident.id})
        else:
            session.refresh(incident, with_for_update=True)
        locked.add(incident.id)


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
    """The open incident this report belongs to, if any (on PostgreSQL, locked till the commit)."""
    times = {"category": category, "since": shifted(at, -window), "until": shifted(at, window)}
    if lat is None or lon is None:
        # Nowhere to compare: only the same sender repeating themselves joins. Their own recent
        # reports (found through the sender index) name the candidates.
        senders = keyring_of(session).indexes(sender)
        mine = list(session.scalars(_SENDERS_INCIDENTS, {"senders": senders}))
        if not mine:
            return None
        query = _UNLOCATED_LOCKING if _postgresql(session) else _UNLOCATED
        found = session.scalars(query, times | {"mine": mine}).first()
        return _locked(session, found) if found is not None else None
    dlat, dlon = _box(lat, radius_km)
    box = {"lat_lo": lat - dlat, "lat_hi": lat + dlat, "lon_lo": lon - dlon, "lon_hi": lon + dlon}
    best: tuple[float, Incident] | None = None
    query = _NEARBY_LOCKING if _postgresql(session) else _NEARBY
    for incident in session.scalars(query, times | box):
        _locked(session, incident)
        assert incident.lat is not None and incident.lon is not None
        d = distance_km(lat, lon, incident.lat, incident.lon)
        if d <= radius_km and (best is None or d < best[0]):
            best = (d, incident)
    return best[1] if best else None


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _locked(session: Session, incident: Incident) -> Incident:
    """Note an incident the candidates' query locked in this transaction: lock_incidents need not again."""
    if _postgresql(session):
        per_transaction(session, _ROWS, set[int]).add(incident.id)
    return incident


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
# Located incidents only: one opened by a report without a place sits at its country's centre,
# which says nothing of where the event is (and is opened under no cell's lock).
_NEARBY = _CANDIDATES.where(
    Incident.precision.in_((Precision.PLACE, Precision.HOME)),
    Incident.lat.between(bindparam("lat_lo"), bindparam("lat_hi")),
    Incident.lon.between(bindparam("lon_lo"), bindparam("lon_hi")),
).limit(50)
# On PostgreSQL the candidates are locked as they are read, and read again after any wait (READ
# COMMITTED: a row another transaction holds is waited for, then read as it committed and checked
# against the query again, so an incident an officer closed meanwhile is no longer found).
_UNLOCATED_LOCKING = _UNLOCATED.with_for_update().execution_options(populate_existing=True)
_NEARBY_LOCKING = _NEARBY.with_for_update().execution_options(populate_existing=True)
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
