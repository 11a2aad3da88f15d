"""The dashboard's sign-in and its incident pages: the live list and map, and one incident.

Thin, as every route: each button calls the service function the SMS command and the API call
(services/incidents, services/accounts). Forms answer 303 to the page they came from, so they
work with JavaScript off; every form carries the session's CSRF token.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.auth import SESSION_COOKIE, Principal
from app.db import transaction, utcnow
from app.enums import ApiRole, IncidentStatus
from app.i18n import languages
from app.models import Alert, Incident, IncidentNote
from app.routes.web import (
    LOGIN_CSRF_COOKIE,
    OfficerPage,
    ViewerPage,
    check_form_csrf,
    new_login_csrf,
    render,
    safe_next,
    secure_cookies,
    viewer_or_login,
)
from app.schemas import IncidentKey, IncidentPathKey
from app.services import accounts
from app.services import incidents as actions
from gateways.base import secrets_equal
from keywords.grammar import CATEGORIES as GRAMMAR_CATEGORIES

router = APIRouter(include_in_schema=False)
# The card's categories (keywords/grammar.py), and "other" for what fits none.
CATEGORIES = (*GRAMMAR_CATEGORIES, "other")
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
# The list's time filter: a choice of the last hours, so a link says what it shows.
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "all": None}
LIST_LIMIT = 200
MAX_NOTE = 2000


# -- signing in and out --------------------------------------------------------------------------
def _address(request: Request) -> str:
    """The caller's address as the lock-out counts it: a keyed hash, never the address itself."""
    host = request.client.host if request.client else "unknown"
    return request.app.state.runtime.keyring.index(f"login:{host}")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form (a signed-in user goes straight on)."""
    from app.auth import session_principal

    if session_principal(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_form(request, next_url=safe_next(next))


def _login_form(request: Request, *, next_url: str, error: str = "", status: int = 200) -> Response:
    token = new_login_csrf()
    response = render(
        request,
        "login.html",
        None,
        status=status,
        title="Sign in",
        next_url=next_url,
        error=error,
        login_csrf=token,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax", secure=secure_cookies(request), path="/login"
    )
    return response


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the name and password; a session cookie and on to `next`, or the form again saying why."""
    next_url = safe_next(next)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not secrets_equal(cookie, csrf_token):
        return _login_form(
            request, next_url=next_url, error="The form expired. Please sign in again.", status=403
        )
    if not username.strip() or not password:
        return _login_form(request, next_url=next_url, error="Enter your name and password.", status=422)
    refused: accounts.SignInRefused | None = None
    with transaction(request.app.state.runtime.factory) as session:
        try:
            signed = accounts.sign_in(
                session=session, name=username, password=password, address=_address(request)
            )
        except accounts.SignInRefused as exc:  # caught inside: the failure is counted (committed)
            refused = exc
    if refused is not None:
        if refused.locked:
            error, status = "Too many failed sign-ins. Wait 15 minutes, or ask an admin.", 429
        else:
            error, status = "Wrong name or password.", 401
        return _login_form(request, next_url=next_url, error=error, status=status)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        signed.token,
        max_age=int(accounts.SESSION_MAX.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(
    request: Request,
    principal: Annotated[Principal, Depends(viewer_or_login)],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """End this browser's session."""
    check_form_csrf(principal, csrf_token)
    with transaction(request.app.state.runtime.factory) as session:
        accounts.sign_out(session=session, token=request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language")
def set_language(
    request: Request,
    principal: ViewerPage,
    language: Annotated[str, Form(max_length=8)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    back: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Show the dashboard to this user in another language."""
    check_form_csrf(principal, csrf_token)
    if language not in languages():
        raise HTTPException(422, f"language: one of {', '.join(languages())}")
    assert principal.user_id is not None  # a page's principal is a signed-in user
    with transaction(request.app.state.runtime.factory) as session:
        accounts.set_language(session=session, user_id=principal.user_id, language=language)
    return RedirectResponse(safe_next(back), status_code=303)


# -- incidents -----------------------------------------------------------------------------------
def incident_query(
    *, status: str | None, category: str | None, area: str | None, period: str | None
) -> Select[Any]:
    """The incidents a list shows: open and acknowledged unless a status is chosen."""
    query = select(Incident)
    if status in tuple(IncidentStatus):
        query = query.where(Incident.status == status)
    elif status != "all":
        query = query.where(Incident.status != IncidentStatus.CLOSED)
    if category in CATEGORIES:
        query = query.where(Incident.category == category)
    if area:
        query = query.where(func.lower(Incident.area) == area.strip().lower())
    delta = PERIODS.get(period or "7d", PERIODS["7d"])
    if delta is not None:
        query = query.where(Incident.last_reported_at >= utcnow() - delta)
    return query


def _listed(session: Session, query: Select[Any], full: bool) -> list[Any]:
    """Newest first, the most severe first within the same hour: what an officer must read now on top."""
    rows = session.scalars(query.order_by(Incident.last_reported_at.desc()).limit(LIST_LIMIT)).all()
    views = [actions.incident_view(incident=i, full=full) for i in rows]
    views.sort(
        key=lambda v: (
            -int(v.last_reported_at.timestamp() // 3600),
            SEVERITY_ORDER.get(v.severity, 9),
            -v.last_reported_at.timestamp(),
        )
    )
    return views


def _areas(session: Session) -> list[str]:
    names = session.scalars(select(Incident.area).where(Incident.area.is_not(None)).distinct()).all()
    return sorted({name for name in names if name})


Filter = Annotated[str | None, Query(max_length=120)]


@router.get("/", response_class=HTMLResponse)
def incidents_page(
    request: Request,
    principal: ViewerPage,
    status: Filter = None,
    category: Filter = None,
    area: Filter = None,
    period: Filter = None,
    partial: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    """The live list of incidents (refreshed every few seconds by the page's script) and their map."""
    full = principal.at_least(ApiRole.OFFICER)
    query = incident_query(status=status, category=category, area=area, period=period)
    with transaction(request.app.state.runtime.factory) as session:
        items = _listed(session, query, full)
        areas = _areas(session) if partial is None else []
    filters = {
        "status": status or "",
        "category": category or "",
        "area": area or "",
        "period": period or "7d",
    }
    if partial == "list":
        return _fresh(
            request, render(request, "_incident_list.html", principal, items=items, filters=filters)
        )
    located = [
        {
            "code": i.code,
            "lat": i.lat,
            "lon": i.lon,
            "place": i.place_name or "",
            "category": i.category,
            "severity": i.severity,
            "status": i.status,
            "reports": i.report_count,
        }
        for i in items
        if i.lat is not None and i.lon is not None
    ]
    return render(
        request,
        "incidents.html",
        principal,
        title="Incidents",
        items=items,
        located=located,
        filters=filters,
        categories=CATEGORIES,
        statuses=tuple(IncidentStatus),
        periods=tuple(PERIODS),
        areas=areas,
    )


def _fresh(request: Request, response: HTMLResponse) -> Response:
    """A partial with an ETag: a poll that finds nothing new costs a 304 and no body."""
    tag = '"' + hashlib.sha256(bytes(response.body)).hexdigest()[:20] + '"'
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers={"etag": tag, "cache-control": "no-cache, private"})
    response.headers["etag"] = tag
    response.headers["cache-control"] = "no-cache, private"
    return response


IncidentCode = Annotated[IncidentPathKey, Path()]


def _incident(session: Session, key: IncidentKey) -> Incident:
    incident = actions.find(session=session, key=key)
    if incident is None:
        raise HTTPException(404, f"no incident {key}")
    return incident


def _notes(session: Session, incident_id: int) -> list[IncidentNote]:
    return list(
        session.scalars(
            select(IncidentNote).where(IncidentNote.incident_id == incident_id).order_by(IncidentNote.id)
        )
    )


@router.get("/incidents/{code}", response_class=HTMLResponse)
def incident_page(
    request: Request,
    code: IncidentCode,
    principal: ViewerPage,
    partial: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    """One incident: its reports as written and as read, who was told and who acknowledged, notes."""
    full = principal.at_least(ApiRole.OFFICER)
    with transaction(request.app.state.runtime.factory) as session:
        incident = _incident(session, code)
        detail = actions.detail(session=session, incident=incident, full=full)
        notes = _notes(session, incident.id) if full else []
    context: dict[str, Any] = {"incident": detail, "notes": notes, "revealed": {}}
    if partial == "reports":
        return _fresh(request, render(request, "_reports.html", principal, **context))
    return render(request, "incident.html", principal, title=detail.code or "", **context)


def _decision(
    request: Request, code: IncidentKey, principal: Principal, decide: Any, **extra: Any
) -> Response:
    runtime = request.app.state.runtime
    with transaction(runtime.factory) as session:
        try:
            decision = decide(
                session=session,
                incident=_incident(session, code),
                officer=actions.Actor.dashboard(principal.name),
                now=utcnow(),
                **extra,
            )
        except actions.Refused as exc:
            raise HTTPException(422, str(exc)) from None
        target = decision.incident.code
    if decision.told:
        runtime.dispatcher.notify()
    return RedirectResponse(_back(request, f"/incidents/{target}"), status_code=303)


def _back(request: Request, default: str) -> str:
    """The page a form came from (its `back` field was read by the route), else `default`."""
    back = request.scope.get("kengele.back")
    return safe_next(back) if isinstance(back, str) and back else default


Csrf = Annotated[str, Form(max_length=100)]
Back = Annotated[str, Form(max_length=2000)]


@router.post("/incidents/{code}/ack")
def ack(
    request: Request, code: IncidentCode, principal: OfficerPage, csrf_token: Csrf = "", back: Back = ""
) -> Response:
    """Acknowledge, as the SMS `OK K42` and the API do."""
    check_form_csrf(principal, csrf_token)
    request.scope["kengele.back"] = back
    return _decision(
        request,
        code,
        principal,
        actions.acknowledge,
        escalation=request.app.state.runtime.pipeline.escalation,
    )


@router.post("/incidents/{code}/close")
def close(
    request: Request, code: IncidentCode, principal: OfficerPage, csrf_token: Csrf = "", back: Back = ""
) -> Response:
    """Close: the incident takes no more reports."""
    check_form_csrf(principal, csrf_token)
    request.scope["kengele.back"] = back
    return _decision(
        request, code, principal, actions.close, escalation=request.app.state.runtime.pipeline.escalation
    )


@router.post("/incidents/{code}/merge")
def merge(
    request: Request,
    code: IncidentCode,
    principal: OfficerPage,
    csrf_token: Csrf = "",
    into: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Merge this incident into another (its reports move; this one closes)."""
    check_form_csrf(principal, csrf_token)
    runtime = request.app.state.runtime
    with transaction(runtime.factory) as session:
        source = _incident(session, code)
        target_key = _key(into, "into")
        target = actions.find(session=session, key=target_key)
        if target is None:
            raise HTTPException(404, f"into: no incident {into.strip()}")
        try:
            decision = actions.merge(
                session=session,
                source=source,
                target=target,
                officer=actions.Actor.dashboard(principal.name),
                now=utcnow(),
            )
        except actions.Refused as exc:
            raise HTTPException(422, f"into: {exc}") from None
        landing = decision.incident.code
    return RedirectResponse(f"/incidents/{landing}", status_code=303)


def _key(text: str, field: str) -> IncidentKey:
    try:
        return IncidentKey.parse(text.strip())
    except ValueError as exc:
        raise HTTPException(422, f"{field}: {exc}") from None


@router.post("/incidents/{code}/reports/{alert_id}/move")
def move_report(
    request: Request,
    code: IncidentCode,
    alert_id: Annotated[int, Path(ge=1, le=2**53)],
    principal: OfficerPage,
    csrf_token: Csrf = "",
    to: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Move one report to another incident (or to a new one: `new`)."""
    check_form_csrf(principal, csrf_token)
    runtime = request.app.state.runtime
    with transaction(runtime.factory) as session:
        _incident(session, code)
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise HTTPException(404, f"no report {alert_id}")
        target = None
        if to.strip().lower() != "new":
            target = actions.find(session=session, key=_key(to, "to"))
            if target is None:
                raise HTTPException(404, f"to: no incident {to.strip()}")
        try:
            decision = actions.move(
                session=session,
                alert=alert,
                target=target,
                officer=actions.Actor.dashboard(principal.name),
                now=utcnow(),
                radius_km=runtime.pipeline.dedup_radius_km,
            )
        except actions.Refused as exc:
            raise HTTPException(422, f"to: {exc}") from None
        landing = decision.incident.code
    return RedirectResponse(f"/incidents/{landing}", status_code=303)


@router.post("/incidents/{code}/notes")
def add_note(
    request: Request,
    code: IncidentCode,
    principal: OfficerPage,
    csrf_token: Csrf = "",
    text: Annotated[str, Form(max_length=MAX_NOTE)] = "",
) -> Response:
    """Add an officer's note to the incident."""
    check_form_csrf(principal, csrf_token)
    if not text.strip():
        raise HTTPException(422, "text: empty")
    with transaction(request.app.state.runtime.factory) as session:
        incident = _incident(session, code)
        actions.add_note(
            session=session,
            incident=incident,
            actor=actions.Actor.dashboard(principal.name),
            text=text.strip(),
        )
        landing = incident.code
    return RedirectResponse(f"/incidents/{landing}#notes", status_code=303)


@router.post("/incidents/{code}/reports/{alert_id}/reveal", response_class=HTMLResponse)
def reveal(
    request: Request,
    code: IncidentCode,
    alert_id: Annotated[int, Path(ge=1, le=2**53)],
    principal: Annotated[Principal, Depends(viewer_or_login)],
    csrf_token: Csrf = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Show an admin one reporter's number, audit-logged with the reason; nobody else."""
    check_form_csrf(principal, csrf_token)
    if not principal.at_least(ApiRole.ADMIN):
        raise HTTPException(403, f"role {ApiRole.ADMIN} required to reveal a phone")
    if not reason.strip():
        raise HTTPException(422, "reason: required to reveal a phone (who asked is logged, and why)")
    with transaction(request.app.state.runtime.factory) as session:
        incident = _incident(session, code)
        alert = session.get(Alert, alert_id)
        if alert is None or alert.incident_id != incident.id:
            raise HTTPException(404, f"no report {alert_id} in {incident.code}")
        shown = actions.reveal_sender(
            session=session,
            alert=alert,
            actor=actions.Actor.dashboard(principal.name),
            reason=reason.strip(),
            now=utcnow(),
        )
        detail = actions.detail(session=session, incident=incident, full=True)
        notes = _notes(session, incident.id)
    return render(
        request,
        "incident.html",
        principal,
        title=detail.code or "",
        incident=detail,
        notes=notes,
        revealed={alert_id: shown.sender},
    )
