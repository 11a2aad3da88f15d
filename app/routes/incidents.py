"""Incidents and their reports over the API: lists, details, GeoJSON, and officers' decisions.

Each decision is a call to services/incidents, the same one the SMS commands make.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.auth import Principal, require
from app.db import transaction, utcnow
from app.enums import ApiRole, IncidentStatus
from app.models import Alert, Incident
from app.routes.api import MAX_ID, Limit, Offset, RowId, as_utc, paged
from app.schemas import (
    KEY_DESCRIPTION,
    AlertPublic,
    IncidentDetail,
    IncidentKey,
    IncidentPathKey,
    IncidentPublic,
    MergeRequest,
    MoveRequest,
    Page,
    refusals,
)
from app.services import incidents as actions

log = logging.getLogger("kengele.api")
router = APIRouter(prefix="/api/v1", tags=["incidents"], responses=refusals(401, 422))
Viewer = Annotated[Principal, Depends(require(ApiRole.VIEWER))]
Officer = Annotated[Principal, Depends(require(ApiRole.OFFICER))]
# The incident of every /incidents/{incident_id}/... path: officers only ever see codes, so a code
# is as good as an id. A malformed one is a validation error (422 naming `incident_id`), checked
# after the caller's token, as any path parameter is.
IncidentId = Annotated[IncidentPathKey, Path(description=f"The {KEY_DESCRIPTION}.")]


def _incident(session: Session, key: IncidentKey, field: str | None = None) -> Incident:
    """Find the incident a caller named (in the path, or in a body's `field`), else 404 naming it."""
    incident = actions.find(session=session, key=key)
    if incident is None:
        raise HTTPException(404, f"{field}: no incident {key}" if field else f"no incident {key}")
    return incident


def _actor(principal: Principal) -> actions.Actor:
    """The audit log's name for the caller: a token's holder, or a dashboard user (its scripts)."""
    if principal.user_id is not None:
        return actions.Actor.dashboard(principal.name)
    return actions.Actor.api(principal.name)


def _detail(session: Session, incident: Incident, principal: Principal) -> IncidentDetail:
    return actions.detail(session=session, incident=incident, full=principal.at_least(ApiRole.OFFICER))


def incident_filter(
    status: IncidentStatus | None = None, category: str | None = None, since: datetime | None = None
) -> Select[Incident]:
    """The incidents the filters of a list name: the JSON page, the CSV and the Atom feed."""
    return actions.incidents_query(status=status, category=category, since=as_utc(since))


def alert_filter(
    incident_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    since: datetime | None = None,
    needs_review: bool | None = None,
) -> Select[Alert]:
    """The reports the filters of a list name: the JSON page and the CSV."""
    return actions.alerts_query(incident_id=incident_id, since=as_utc(since), needs_review=needs_review)


# Declared after the caller's token in each route, so a bad token is refused before a bad filter.
IncidentFilter = Annotated[Select[Incident], Depends(incident_filter)]
AlertFilter = Annotated[Select[Alert], Depends(alert_filter)]


@router.get("/incidents", response_model=Page[IncidentPublic])
def list_incidents(
    request: Request, principal: Viewer, query: IncidentFilter, limit: Limit = 50, offset: Offset = 0
) -> Page[IncidentPublic]:
    """Incidents, newest first."""
    full = principal.at_least(ApiRole.OFFICER)
    items, total = paged(
        request,
        query,
        actions.INCIDENT_ORDER,
        lambda i: actions.incident_view(incident=i, full=full),
        limit,
        offset,
    )
    return Page[IncidentPublic](items=items, total=total)


@router.get("/incidents.geojson")
def incidents_geojson(
    request: Request, principal: Viewer, status: IncidentStatus | None = None
) -> dict[str, Any]:
    """Located incidents as a GeoJSON FeatureCollection (for a map)."""
    query = select(Incident).where(Incident.lat.is_not(None))
    if status:
        query = query.where(Incident.status == status)
    full = principal.at_least(ApiRole.OFFICER)
    with transaction(request.app.state.runtime.factory) as session:
        features = [
            {
                "type": "Feature",
                "id": i.id,
                "geometry": {"type": "Point", "coordinates": [i.lon, i.lat]},
                "properties": actions.incident_view(incident=i, full=full).model_dump(mode="json"),
            }
            for i in session.scalars(query.order_by(Incident.id.desc()).limit(5000))
        ]
    return {"type": "FeatureCollection", "features": features}


@router.get("/incidents/{incident_id}", response_model=IncidentDetail, responses=refusals(404))
def get_incident(request: Request, incident_id: IncidentId, principal: Viewer) -> IncidentDetail:
    """One incident with its reports."""
    with transaction(request.app.state.runtime.factory) as session:
        return _detail(session, _incident(session, incident_id), principal)


def _decide(
    request: Request, incident_id: IncidentKey, principal: Principal, decide: Callable[..., actions.Decision]
) -> IncidentDetail:
    """Acknowledge or close (the officers told about the incident learn who), then show it."""
    runtime = request.app.state.runtime
    with transaction(runtime.factory) as session:
        decision = decide(
            session=session,
            incident=_incident(session, incident_id),
            officer=_actor(principal),
            escalation=runtime.pipeline.escalation,
            now=utcnow(),
        )
        detail = _detail(session, decision.incident, principal)
    if decision.told:
        runtime.dispatcher.notify()
    return detail


@router.post("/incidents/{incident_id}/ack", response_model=IncidentDetail, responses=refusals(403, 404))
def ack_incident(request: Request, incident_id: IncidentId, principal: Officer) -> IncidentDetail:
    """Acknowledge (the first acknowledgement wins; a later one changes nothing)."""
    return _decide(request, incident_id, principal, actions.acknowledge)


@router.post("/incidents/{incident_id}/close", response_model=IncidentDetail, responses=refusals(403, 404))
def close_incident(request: Request, incident_id: IncidentId, principal: Officer) -> IncidentDetail:
    """Close: the incident takes no more reports."""
    return _decide(request, incident_id, principal, actions.close)


@router.post(
    "/incidents/{incident_id}/merge", response_model=IncidentDetail, responses=refusals(400, 403, 404)
)
def merge_incident(
    request: Request, incident_id: IncidentId, body: MergeRequest, principal: Officer
) -> IncidentDetail:
    """Merge this incident into another: its reports move, it is closed."""
    with transaction(request.app.state.runtime.factory) as session:
        source, target = _incident(session, incident_id), _incident(session, body.into, "into")
        try:
            decision = actions.merge(
                session=session,
                source=source,
                target=target,
                officer=_actor(principal),
                now=utcnow(),
            )
        except actions.Refused as exc:
            raise HTTPException(422, str(exc)) from None
        return _detail(session, decision.incident, principal)


@router.get("/alerts", response_model=Page[AlertPublic])
def list_alerts(
    request: Request, principal: Viewer, query: AlertFilter, limit: Limit = 50, offset: Offset = 0
) -> Page[AlertPublic]:
    """Reports, newest first."""
    full = principal.at_least(ApiRole.OFFICER)
    items, total = paged(
        request, query, actions.ALERT_ORDER, lambda a: actions.report_view(alert=a, full=full), limit, offset
    )
    return Page[AlertPublic](items=items, total=total)


@router.get("/alerts/{alert_id}", response_model=AlertPublic, responses=refusals(403, 404))
def get_alert(
    request: Request,
    alert_id: RowId,
    principal: Viewer,
    reveal: Literal["phone"] | None = None,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> AlertPublic:
    """One report; `reveal=phone` shows an admin its sender's number, audit-logged with the `reason`."""
    if reveal and not principal.at_least(ApiRole.ADMIN):
        raise HTTPException(403, f"role {ApiRole.ADMIN} required to reveal a phone")
    if reveal and not (reason or "").strip():
        raise HTTPException(422, "reason: required to reveal a phone (who asked is logged, and why)")
    with transaction(request.app.state.runtime.factory) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise HTTPException(404, f"no alert {alert_id}")
        if not reveal:
            return actions.report_view(alert=alert, full=principal.at_least(ApiRole.OFFICER))
        view = actions.reveal_sender(
            session=session,
            alert=alert,
            actor=_actor(principal),
            reason=(reason or "").strip(),
            now=utcnow(),
        )
    log.info("reporter phone revealed", extra={"alert": alert_id, "actor": principal.name})
    return view


@router.post("/alerts/{alert_id}/move", response_model=IncidentDetail, responses=refusals(400, 403, 404))
def move_alert(request: Request, alert_id: RowId, body: MoveRequest, principal: Officer) -> IncidentDetail:
    """Move a report out of its incident: into another, or into an incident of its own."""
    with transaction(request.app.state.runtime.factory) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise HTTPException(404, f"no alert {alert_id}")
        key = body.incident_id
        target = _incident(session, key, "incident_id") if key is not None else None
        try:
            decision = actions.move(
                session=session,
                alert=alert,
                target=target,
                officer=_actor(principal),
                now=utcnow(),
                radius_km=request.app.state.runtime.pipeline.dedup_radius_km,
            )
        except actions.Refused as exc:
            raise HTTPException(422, str(exc)) from None
        return _detail(session, decision.incident, principal)
