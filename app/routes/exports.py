"""Incidents and reports for other programs: CAP 1.2 alerts, an Atom feed of them, CSV files.

Thin: the filters are the JSON lists' (routes/incidents), the views services/incidents', the
documents services/exports'. CAP and Atom are built from the masked view whoever asks: they are
made to be passed on, and a passed-on alert must not carry a number someone typed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

from app.db import transaction, utcnow
from app.enums import ApiRole
from app.models import Alert, Incident
from app.routes.api import Limit
from app.routes.incidents import AlertFilter, IncidentFilter, IncidentId, Viewer
from app.schemas import AlertPublic, IncidentPublic, refusals
from app.services import exports
from app.services import incidents as actions

router = APIRouter(prefix="/api/v1", tags=["exports"], responses=refusals(401, 422))
# Rows read per transaction while a CSV streams: memory stays flat whatever the export's size.
CSV_BATCH = 1000


def _document(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answer of a route whose body is a document of this media type, not JSON."""
    return {200: {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}}


def _origin(request: Request) -> exports.Origin:
    settings = request.app.state.runtime.settings
    return exports.Origin(sender=settings.cap_origin, public_url=settings.public_url)


@router.get(
    "/incidents/{incident_id}/cap",
    response_class=Response,
    responses=_document(exports.CAP_MEDIA_TYPE, "The incident as an OASIS CAP 1.2 alert.") | refusals(404),
)
def incident_cap(request: Request, incident_id: IncidentId, _: Viewer) -> Response:
    """The incident as an OASIS CAP 1.2 `<alert>`: Alert when new, Update once changed, Cancel once closed."""
    with transaction(request.app.state.runtime.factory) as session:
        incident = actions.find(session=session, key=incident_id)
        if incident is None:
            raise HTTPException(404, f"no incident {incident_id}")
        changes = actions.change_times(session=session, incidents=[incident])[incident.id]
        source = exports.CapSource(actions.incident_view(incident=incident, full=False), changes)
    body = exports.cap_document(source=source, origin=_origin(request))
    return Response(body, media_type=exports.CAP_MEDIA_TYPE)


@router.get(
    "/incidents.cap",
    response_class=Response,
    responses=_document(exports.ATOM_MEDIA_TYPE, "An Atom feed of the incidents, each with its CAP alert."),
)
def incidents_feed(request: Request, _: Viewer, query: IncidentFilter, limit: Limit = 50) -> Response:
    """The incidents the filters name, newest first, as an Atom feed of their CAP alerts."""
    with transaction(request.app.state.runtime.factory) as session:
        incidents = session.scalars(query.order_by(*actions.INCIDENT_ORDER).limit(limit)).all()
        changes = actions.change_times(session=session, incidents=incidents)
        sources = [
            exports.CapSource(actions.incident_view(incident=i, full=False), changes[i.id]) for i in incidents
        ]
    origin = _origin(request)
    self_url = origin.public_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body = exports.atom_feed(sources=sources, origin=origin, url=self_url, now=utcnow())
    return Response(body, media_type=exports.ATOM_MEDIA_TYPE)


def _csv(
    request: Request,
    name: str,
    query: Select[Any],
    key: InstrumentedAttribute[int],
    model: type[BaseModel],
    view: Callable[[Any], BaseModel],
) -> StreamingResponse:
    """Stream every row of `query`, newest first, a batch per transaction (keyed by id).

    By id, not by the lists' last report: a row's id never changes, so an incident reported to
    while the file streams is neither skipped nor written twice.
    """
    factory, columns = request.app.state.runtime.factory, exports.csv_columns(model)

    def batch(after: int | None) -> tuple[str, int | None]:
        """One batch as CSV text, and the id to continue below (None: that was the last)."""
        with transaction(factory) as session:
            page = query if after is None else query.where(key < after)
            rows = session.scalars(page.order_by(key.desc()).limit(CSV_BATCH)).all()
            text = exports.csv_lines(exports.csv_rows((view(r) for r in rows), columns))
            return text, (getattr(rows[-1], key.key) if len(rows) == CSV_BATCH else None)

    first = batch(None)  # read before answering: a database that is down gets its 503, not half a file

    def lines() -> Iterator[str]:
        yield exports.csv_header(columns)
        text, after = first
        yield text
        while after is not None:
            text, after = batch(after)
            yield text

    filename = f"kengele-{name}-{utcnow():%Y-%m-%d}.csv"
    return StreamingResponse(
        lines(),
        media_type=f"{exports.CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/incidents.csv",
    response_class=StreamingResponse,
    responses=_document(exports.CSV_MEDIA_TYPE, "Every incident the filters name, newest first."),
)
def incidents_csv(request: Request, principal: Viewer, query: IncidentFilter) -> StreamingResponse:
    """Every incident the filters name, as CSV (the JSON list's fields; masked for viewers as it is)."""
    full = principal.at_least(ApiRole.OFFICER)
    return _csv(
        request,
        "incidents",
        query,
        Incident.id,
        IncidentPublic,
        lambda i: actions.incident_view(incident=i, full=full),
    )


@router.get(
    "/alerts.csv",
    response_class=StreamingResponse,
    responses=_document(exports.CSV_MEDIA_TYPE, "Every report the filters name, newest first."),
)
def alerts_csv(request: Request, principal: Viewer, query: AlertFilter) -> StreamingResponse:
    """Every report the filters name, as CSV (the JSON list's fields; masked for viewers as it is)."""
    full = principal.at_least(ApiRole.OFFICER)
    return _csv(
        request, "alerts", query, Alert.id, AlertPublic, lambda a: actions.report_view(alert=a, full=full)
    )
