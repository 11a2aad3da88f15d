"""The network's health: per area, who was asked at the last check-in, who answered, who is silent."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.enums import PersonStatus, Role
from app.models import CheckIn, CheckInRound, Person, Place
from app.phones import mask
from app.schemas import AreaHealth, NetworkHealth, SilentFocalPoint, for_viewer
from app.services.incidents import person_area

_PEOPLE = (
    select(Person, Place.admin2, Place.admin1)
    .outerjoin(Place, Place.id == Person.place_id)
    .where(Person.role == Role.FOCAL_POINT, Person.active.is_(True), Person.status == PersonStatus.APPROVED)
    .order_by(Person.name)
)
_LAST_ROUNDS = select(CheckInRound.area, func.max(CheckInRound.scheduled_for)).group_by(CheckInRound.area)


def health(*, session: Session, full: bool) -> NetworkHealth:
    """Count per area the focal points, how many the last round asked and answered, and the silent ones.

    Without `full` (a viewer) the silent focal points' numbers are masked, and so is every number
    typed into a name or an area.
    """
    people: dict[str, list[Person]] = defaultdict(list)
    for person, admin2, admin1 in session.execute(_PEOPLE):
        # The area check-in rounds are grouped by (checkins.focal_points).
        people[person_area(area=person.area, home_admin2=admin2, home_admin1=admin1)].append(person)
    last: dict[str, datetime] = {area: when for area, when in session.execute(_LAST_ROUNDS)}
    figures: dict[str, tuple[int, int]] = {}
    for area, when in last.items():
        asked, answered = session.execute(
            select(func.count(CheckIn.id), func.count(CheckIn.answered_at))
            .join(CheckInRound, CheckIn.round_key == CheckInRound.round_key)
            .where(CheckInRound.area == area, CheckInRound.scheduled_for == when)
        ).one()
        figures[area] = (int(asked), int(answered))
    areas = []
    for area in sorted(set(people) | set(last)):
        members = people.get(area, [])
        silent = [p for p in members if p.silent_since is not None]
        asked, answered = figures.get(area, (0, 0))
        areas.append(
            AreaHealth(
                area=area,
                focal_points=len(members),
                opted_out=sum(p.opted_out for p in members),
                last_round_at=last.get(area),
                asked_last_round=asked,
                answered_last_round=answered,
                silent=len(silent),
                silent_focal_points=[
                    SilentFocalPoint(
                        id=p.id,
                        name=p.name,
                        phone=p.phone if full else mask(p.phone),
                        silent_since=p.silent_since,
                        last_message_at=p.last_seen_at,
                    )
                    for p in silent
                ],
            )
        )
    view = NetworkHealth(
        areas=areas,
        focal_points=sum(a.focal_points for a in areas),
        silent=sum(a.silent for a in areas),
    )
    return view if full else for_viewer(view)
