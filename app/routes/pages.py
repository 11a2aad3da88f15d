"""The dashboard's work pages: triage (messages nobody could read), network health, the message log.

Thin: triage calls services/triage (the normal pipeline from the parse on), the network page
services/network (what `GET /api/v1/network/health` shows), the log reads the messages table.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, or_, select

from app.auth import Principal
from app.db import transaction, utcnow
from app.enums import ApiRole, Direction, MessageStatus
from app.models import Alert, Message, Person, status_is
from app.phones import normalize
from app.routes.dashboard import CATEGORIES, Csrf
from app.routes.web import OfficerPage, ViewerPage, check_form_csrf, open_search, render, searched
from app.schemas import MessagePublic
from app.services import incidents, network, triage
from app.services.incidents import Actor

router = APIRouter(include_in_schema=False)
PAGE = 50
MessageId = Annotated[int, Path(ge=1, le=2**53)]
AlertId = Annotated[int, Path(ge=1, le=2**53)]


@router.get("/triage", response_class=HTMLResponse)
def triage_page(
    request: Request, principal: OfficerPage, page: Annotated[int, Query(ge=1, le=10_000)] = 1
) -> Response:
    """Alerts read with low confidence, newest first; then inbound messages that produced no alert
    and no command, oldest first: for a person to read."""
    query = select(Message).where(Message.direction == Direction.INBOUND, Message.outcome.in_(triage.TRIAGED))
    with transaction(request.app.state.runtime.factory) as session:
        alerts, review_total = incidents.to_review(session=session, limit=PAGE)
        reviews = [incidents.report_view(alert=a, full=True) for a in alerts]
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(Message.id).limit(PAGE).offset((page - 1) * PAGE)).all()
        items = [MessagePublic.model_validate(m) for m in rows]
    return render(
        request,
        "triage.html",
        principal,
        title="Triage",
        reviews=reviews,
        review_total=review_total,
        code_of=incidents.code_of,
        items=items,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE)),
        categories=CATEGORIES,
    )


@router.post("/triage/{message_id}/alert")
def triage_alert(
    request: Request,
    message_id: MessageId,
    principal: OfficerPage,
    csrf_token: Csrf = "",
    category: Annotated[str, Form(max_length=40)] = "",
    place: Annotated[str, Form(max_length=200)] = "",
    count: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Make the message the alert the officer read in it (category, place, count)."""
    check_form_csrf(principal, csrf_token)
    if category not in CATEGORIES:
        raise HTTPException(422, f"category: one of {', '.join(CATEGORIES)}")
    people: int | None = None
    if count.strip():
        if not count.strip().isdigit() or not 0 < int(count) <= 100_000:
            raise HTTPException(422, "count: a whole number of people, 1 to 100000 (or empty)")
        people = int(count)
    runtime = request.app.state.runtime
    with transaction(runtime.factory) as session:
        try:
            message = triage.waiting(session=session, message_id=message_id)
        except triage.NotForTriage as exc:
            raise HTTPException(409, str(exc)) from None
        recorded = triage.make_alert(
            session=session,
            message=message,
            reading=triage.Reading(category, place.strip(), people),
            actor=Actor.dashboard(principal.name),
            config=runtime.pipeline,
            now=utcnow(),
        )
        code = recorded.incident.code
    runtime.dispatcher.notify()
    return RedirectResponse(f"/incidents/{code}", status_code=303)


@router.post("/triage/alerts/{alert_id}/reviewed")
def alert_reviewed(
    request: Request, alert_id: AlertId, principal: OfficerPage, csrf_token: Csrf = ""
) -> Response:
    """Clear a report's needs_review: an officer has read what was written."""
    check_form_csrf(principal, csrf_token)
    with transaction(request.app.state.runtime.factory) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise HTTPException(404, f"no alert {alert_id}")
        incidents.mark_reviewed(
            session=session, alert=alert, actor=Actor.dashboard(principal.name), now=utcnow()
        )
    return RedirectResponse("/triage", status_code=303)


@router.post("/triage/{message_id}/dismiss")
def triage_dismiss(
    request: Request,
    message_id: MessageId,
    principal: OfficerPage,
    csrf_token: Csrf = "",
    reason: Annotated[str, Form(max_length=triage.MAX_REASON)] = "",
) -> Response:
    """Set the message aside with a reason (not an alert)."""
    check_form_csrf(principal, csrf_token)
    if not reason.strip():
        raise HTTPException(422, "reason: required to dismiss a message")
    with transaction(request.app.state.runtime.factory) as session:
        try:
            message = triage.waiting(session=session, message_id=message_id)
        except triage.NotForTriage as exc:
            raise HTTPException(409, str(exc)) from None
        triage.dismiss(
            session=session,
            message=message,
            reason=reason,
            actor=Actor.dashboard(principal.name),
            now=utcnow(),
        )
    return RedirectResponse("/triage", status_code=303)


@router.get("/network", response_class=HTMLResponse)
def network_page(request: Request, principal: ViewerPage) -> Response:
    """Per area: focal points answering check-ins, the silent ones, the last round."""
    with transaction(request.app.state.runtime.factory) as session:
        health = network.health(session=session, full=principal.at_least(ApiRole.OFFICER))
    return render(request, "network.html", principal, title="Network", health=health)


@router.get("/messages", response_class=HTMLResponse)
def messages_page(
    request: Request,
    principal: OfficerPage,
    who: Annotated[str, Query(max_length=400)] = "",
    direction: Annotated[str, Query(max_length=10)] = "",
    status: Annotated[str, Query(max_length=12)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """Inbound and outbound SMS, newest first, with delivery status and failures; by phone (`who`:
    the number sealed, as the search form's redirect left it)."""
    return _messages(request, principal, open_search(request, who), direction, status, page)


@router.post("/messages", response_class=HTMLResponse)
def search_messages(
    request: Request,
    principal: OfficerPage,
    csrf_token: Csrf = "",
    phone: Annotated[str, Form(max_length=40)] = "",
    direction: Annotated[str, Form(max_length=10)] = "",
    status: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """The search form: back to the log with the number sealed in the URL, or the field at fault."""
    check_form_csrf(principal, csrf_token)
    number = normalize(phone, request.app.state.runtime.settings.default_region) if phone.strip() else None
    if number is not None and not number.valid:
        return _messages(request, principal, phone, direction, status, 1)
    found = number.value if number is not None else ""
    return searched(request, "/messages", found, direction=direction, status=status)


def _messages(
    request: Request, principal: Principal, phone: str, direction: str, status: str, page: int
) -> Response:
    runtime = request.app.state.runtime
    query = select(Message)
    error = ""
    if direction in tuple(Direction):
        query = query.where(Message.direction == direction)
    if status in tuple(MessageStatus):
        query = query.where(status_is(MessageStatus(status)))  # queued, sending: by their partial index
    if phone.strip():
        number = normalize(phone, runtime.settings.default_region)
        if not number.valid:
            error = f"phone: {phone.strip()!r} is not a phone number"
        query = query.where(_of_phone(runtime.keyring.indexes(number.value)))
    with transaction(runtime.factory) as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(Message.id.desc()).limit(PAGE).offset((page - 1) * PAGE)).all()
        items = [MessagePublic.model_validate(m) for m in rows]
    filters = {"phone": phone, "direction": direction, "status": status}
    return render(
        request,
        "messages.html",
        principal,
        status=422 if error else 200,
        title="Messages",
        items=items,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE)),
        filters=filters,
        error=error,
        newest_first=True,
        directions=tuple(Direction),
        statuses=tuple(MessageStatus),
    )


def _of_phone(indexes: list[str]) -> Any:
    """Messages to or from a number: found by its blind indexes (numbers are encrypted at rest)."""
    people = select(Person.id).where(Person.phone_index.in_(indexes))
    reports = select(Alert.message_id).where(Alert.sender_index.in_(indexes))
    return or_(
        Message.recipient_index.in_(indexes),
        Message.person_id.in_(people),
        Message.id.in_(reports),
    )
