"""The network's health: per area, who was asked at the last check-in, who answered, who is silent."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import func, select

from app.auth import Principal, require
from app.db import transaction
from app.models import CheckIn, CheckInRound, Person, Place
from app.phones import mask

router = APIRouter(prefix="/api/v1", tags=["network"])
Viewer = Annotated[Principal, Depends(require("viewer"))]


class SilentFocalPoint(BaseModel):
    id: int
    name: str
    phone: str | None  # masked for viewers
    silent_since: datetime | None
    last_message_at: datetime | None


class AreaHealth(BaseModel):
    area: str  # "" = focal points with no area
    focal_points: int  # active, approved
    opted_out: int
    last_round_at: datetime | None
    asked_last_round: int
    answered_last_round: int
    silent: int
    silent_focal_points: list[SilentFocalPoint]


class NetworkHealth(BaseModel):
    areas: list[AreaHealth]
    focal_points: int
    silent: int


_PEOPLE = (
    select(Person, Place.admin2, Place.admin1)
    .outerjoin(Place, Place.id == Person.place_id)
    .where(Person.role == "focal_point", Person.active.is_(True), Person.status == "approved")
    .order_by(Person.name)
)
_LAST_ROUNDS = select(CheckInRound.area, func.max(CheckInRound.scheduled_for)).group_by(CheckInRound.area)


@router.get("/network/health", response_model=NetworkHealth)
def network_health(request: Request, principal: Viewer) -> NetworkHealth:
    """Per area: focal points, how many the last round asked and how many answered, the silent ones."""
    people: dict[str, list[Person]] = defaultdict(list)
    with transaction(request.app.state.runtime.factory) as session:
        for person, admin2, admin1 in session.execute(_PEOPLE):
            people[person.area or admin2 or admin1 or ""].append(person)
        last: dict[str, datetime] = {area: when for area, when in session.execute(_LAST_ROUNDS)}
        figures: dict[str, tuple[int, int]] = {}
        for area, when in last.items():
            asked, answered = session.execute(
                select(func.count(CheckIn.id), func.count(CheckIn.answered_at))
                .join(CheckInRound, CheckIn.round_key == CheckInRound.round_key)
                .where(CheckInRound.area == area, CheckInRound.scheduled_for == when)
            ).one()
            figures[area] = (int(asked), int(answered))
    full = principal.at_least("officer")
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
    return NetworkHealth(
        areas=areas,
        focal_points=sum(a.focal_points for a in areas),
        silent=sum(a.silent for a in areas),
    )
