"""The dashboard's admin pages: the roster (search, edit, JOIN requests, CSV in and out) and the
dashboard's users, API tokens and outbound webhooks.

Thin, as every route: each form calls the service function the API and the command line call
(services/roster, services/accounts, auth's tokens, services/webhooks), which also writes the
audit log. Forms carry the session's CSRF token and answer 303 back, or the form again naming the
field at fault.
Admins see full numbers here (they manage the roster); nothing here logs one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app import auth
from app.auth import Principal
from app.db import transaction, utcnow
from app.enums import ApiRole, DeliveryState, PersonStatus, Role
from app.models import ApiToken, Person, Place, User, Webhook, WebhookDelivery
from app.routes.people import MAX_UPLOAD
from app.routes.web import AdminPage, check_form_csrf, open_search, render, safe_next, searched
from app.services import accounts, roster, webhooks
from app.services.incidents import Actor

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
# The multipart framing around an uploaded roster: the boundaries, the part headers, the other fields.
FORM_OVERHEAD = 64_000
# The fields of the person form, in the order a roster row has them (roster.person_row).
PERSON_FIELDS = ("name", "phone", "role", "language", "place", "lat", "lon", "level", "area", "shifts")
FLAGS = {"": None, "true": True, "false": False}

Csrf = Annotated[str, Form(max_length=100)]
Back = Annotated[str, Form(max_length=2000)]
Text = Annotated[str, Form(max_length=200)]
Filter = Annotated[str, Query(max_length=200)]
RowId = Annotated[int, Path(ge=1, le=2**53)]


def _actor(principal: Principal) -> str:
    """The audit log's name of a dashboard user, as the incident pages write it."""
    return Actor.dashboard(principal.name).audit


def _rules(request: Request, session: Session) -> roster.Rules:
    runtime = request.app.state.runtime
    return roster.rules_for(
        session=session,
        region=runtime.settings.default_region,
        languages=runtime.pipeline.lexicon.grammars,
        places=runtime.pipeline.places,
    )


def _person(session: Session, person_id: int) -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise HTTPException(404, f"no person {person_id}")
    return person


def _choice(value: str, allowed: tuple[str, ...], field: str) -> str | None:
    """A filter's value: None for "all" (empty), else one of `allowed` (422 naming the field)."""
    value = value.strip()
    if not value:
        return None
    if value not in allowed:
        raise HTTPException(422, f"{field}: one of {', '.join(allowed)}")
    return value


# -- the roster ------------------------------------------------------------------------------------
@router.get("/roster", response_class=HTMLResponse)
def roster_page(
    request: Request,
    principal: AdminPage,
    who: Annotated[str, Query(max_length=800)] = "",
    role: Filter = "",
    area: Filter = "",
    active: Filter = "",
    status: Filter = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    """The roster: search by name or number (`who`: sealed by the search form's redirect), filter,
    50 people a page; pending JOIN requests to decide."""
    q = open_search(request, who)
    chosen_role = _choice(role, tuple(Role), "role")
    chosen_status = _choice(status, tuple(PersonStatus), "status")
    if active.strip() not in FLAGS:
        raise HTTPException(422, "active: true, false or empty")
    runtime = request.app.state.runtime
    with transaction(runtime.factory) as session:
        query = roster.listing(
            rules=_rules(request, session),
            keyring=runtime.keyring,
            search=q,
            role=Role(chosen_role) if chosen_role else None,
            area=area,
            active=FLAGS[active.strip()],
            status=PersonStatus(chosen_status) if chosen_status else None,
        )
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(Person.id).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE))
        people = roster.views(session=session, people=list(rows))
        pending = session.scalar(
            select(func.count()).where(Person.status == PersonStatus.PENDING).select_from(Person)
        )
        areas = sorted({a for a in session.scalars(select(Person.area).distinct()) if a})
    filters = {"q": q, "who": who, "role": role, "area": area, "active": active, "status": status}
    pages = max(1, -(-total // PAGE_SIZE))
    return render(
        request,
        "roster.html",
        principal,
        title="Roster",
        people=people,
        total=total,
        page=page,
        pages=pages,
        filters=filters,
        roles=tuple(Role),
        statuses=tuple(PersonStatus),
        areas=areas,
        pending=pending or 0,
        back=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
    )


@router.post("/roster", response_class=HTMLResponse)
def search_roster(
    request: Request,
    principal: AdminPage,
    csrf_token: Csrf = "",
    q: Text = "",
    role: Text = "",
    area: Text = "",
    active: Text = "",
    status: Text = "",
) -> Response:
    """The search form: back to the roster with the name or number sealed in the URL."""
    check_form_csrf(principal, csrf_token)
    return searched(request, "/roster", q, role=role, area=area, active=active, status=status)


@router.get("/roster/export.csv")
def export_roster(request: Request, principal: AdminPage) -> Response:
    """The roster as CSV, in the columns an import reads (`kengele roster export` writes the same)."""
    runtime = request.app.state.runtime
    with transaction(runtime.factory) as session:
        text = roster.export_csv(session, runtime.pipeline.places.get(session))
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": 'attachment; filename="roster.csv"',
            "cache-control": "no-store",
        },
    )


@router.get("/roster/import")
def import_form(_: AdminPage) -> Response:
    """The import form is on the roster page (a reload after an import, or a typed URL, lands there)."""
    return RedirectResponse("/roster#import", status_code=303)


@router.post("/roster/import", response_class=HTMLResponse)
async def import_roster(request: Request, principal: AdminPage) -> Response:
    """Import a roster CSV from the upload form; the per-row report (422, nothing changed, when a row
    is bad and bad rows are not skipped)."""
    if int(request.headers.get("content-length") or 0) > MAX_UPLOAD + FORM_OVERHEAD:
        raise HTTPException(413, f"file: larger than {MAX_UPLOAD} bytes")
    form = await request.form(max_files=1, max_fields=10)
    check_form_csrf(principal, form.get("csrf_token"))
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise HTTPException(422, "file: choose a roster CSV file to import")
    data = await upload.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise HTTPException(413, f"file: larger than {MAX_UPLOAD} bytes")
    skip_bad = form.get("skip_bad") in ("1", "true", "on")

    def run() -> roster.Report:
        return roster.import_csv(
            request.app.state.runtime.factory,
            data,
            rules=lambda session: _rules(request, session),
            actor=_actor(principal),
            skip_bad=skip_bad,
        )

    report = await run_in_threadpool(run)
    return render(
        request,
        "roster_import.html",
        principal,
        status=200 if report.applied else 422,
        title="Roster import",
        report=report,
        skip_bad=skip_bad,
        filename=upload.filename,
    )


def _person_page(
    request: Request,
    principal: Principal,
    person_id: int,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    error: str = "",
    notice: str = "",
    status: int = 200,
) -> Response:
    """One person's page: the edit form (filled with `values`, else as stored) and its actions."""
    with transaction(request.app.state.runtime.factory) as session:
        person = _person(session, person_id)
        rules = _rules(request, session)
        stored = _row(session, person, rules)
        view = roster.views(session=session, people=[person])[0]
    return render(
        request,
        "roster_person.html",
        principal,
        status=status,
        title=view.name,
        person=view,
        values=values or stored,
        errors=errors or {},
        error=error,
        notice=notice,
        roles=tuple(Role),
        person_languages=sorted(rules.languages),
    )


def _row(session: Session, person: Person, rules: roster.Rules) -> dict[str, str]:
    """The person as the roster row an export writes: what the form shows and what an edit changes."""
    place = session.get(Place, person.place_id) if person.place_id is not None else None
    return roster.person_row(person, place, rules.places)


@router.get("/roster/{person_id}", response_class=HTMLResponse)
def person_page(
    request: Request,
    person_id: RowId,
    principal: AdminPage,
    saved: Annotated[str, Query(max_length=5)] = "",
) -> Response:
    """One person of the roster, to edit, deactivate, approve or reject."""
    return _person_page(request, principal, person_id, notice="Saved." if saved else "")


@router.post("/roster/{person_id}", response_class=HTMLResponse)
def edit_person(
    request: Request,
    person_id: RowId,
    principal: AdminPage,
    csrf_token: Csrf = "",
    name: Text = "",
    phone: Annotated[str, Form(max_length=50)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
    language: Annotated[str, Form(max_length=8)] = "",
    place: Text = "",
    lat: Annotated[str, Form(max_length=30)] = "",
    lon: Annotated[str, Form(max_length=30)] = "",
    level: Annotated[str, Form(max_length=10)] = "",
    area: Text = "",
    shifts: Annotated[str, Form(max_length=500)] = "",
    active: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Save the form: the fields that differ from the stored row, checked as `roster.change` checks
    an API edit (place, lat and lon are one location: changing one gives all three)."""
    check_form_csrf(principal, csrf_token)
    given = {
        "name": name,
        "phone": phone,
        "role": role,
        "language": language,
        "place": place,
        "lat": lat,
        "lon": lon,
        "level": level,
        "area": area,
        "shifts": shifts,
        "active": "true" if active else "false",
    }
    given = {k: v.strip() for k, v in given.items()}
    try:
        with transaction(request.app.state.runtime.factory) as session:
            person = _person(session, person_id)
            rules = _rules(request, session)
            stored = _row(session, person, rules)
            changed = {k: v for k, v in given.items() if v != stored.get(k, "")}
            if changed.keys() & set(roster.LOCATION):
                changed |= {k: given[k] for k in roster.LOCATION}
            if changed:
                roster.change(
                    session=session, person=person, values=changed, rules=rules, actor=_actor(principal)
                )
    except roster.Invalid as exc:
        errors: dict[str, list[str]] = {}
        for e in exc.errors:
            errors.setdefault(e.column, []).append(e.reason)
        return _person_page(
            request, principal, person_id, values=given, errors=errors, error=str(exc), status=422
        )
    except roster.Conflict as exc:
        field = str(exc).partition(":")[0]
        return _person_page(
            request,
            principal,
            person_id,
            values=given,
            errors={field: [str(exc).partition(": ")[2]]} if field in given else {},
            error=str(exc),
            status=409,
        )
    return RedirectResponse(f"/roster/{person_id}?saved=1", status_code=303)


def _decide(
    request: Request, person_id: int, principal: Principal, csrf_token: str, back: str, decide: Any
) -> Response:
    """Deactivate, approve or reject one person, then back to where the button was."""
    check_form_csrf(principal, csrf_token)
    with transaction(request.app.state.runtime.factory) as session:
        person = _person(session, person_id)
        try:
            decide(session=session, person=person, actor=_actor(principal))
        except roster.Refused as exc:
            raise HTTPException(409, str(exc)) from None
    return RedirectResponse(safe_next(back or f"/roster/{person_id}"), status_code=303)


@router.post("/roster/{person_id}/deactivate")
def deactivate_person(
    request: Request, person_id: RowId, principal: AdminPage, csrf_token: Csrf = "", back: Back = ""
) -> Response:
    """Deactivate: no more check-ins or forwards; the person stays, with their reports' history."""
    return _decide(request, person_id, principal, csrf_token, back, roster.deactivate)


@router.post("/roster/{person_id}/approve")
def approve_person(
    request: Request, person_id: RowId, principal: AdminPage, csrf_token: Csrf = "", back: Back = ""
) -> Response:
    """Approve a pending JOIN request: the person becomes an active focal point."""
    return _decide(request, person_id, principal, csrf_token, back, roster.approve)


@router.post("/roster/{person_id}/reject")
def reject_person(
    request: Request, person_id: RowId, principal: AdminPage, csrf_token: Csrf = "", back: Back = ""
) -> Response:
    """Reject a pending JOIN request: the number stays known (a new JOIN does not re-open it), inactive."""
    return _decide(request, person_id, principal, csrf_token, back, roster.reject)


# -- users and API tokens --------------------------------------------------------------------------
def _admin_page(
    request: Request,
    principal: Principal,
    *,
    status: int = 200,
    template: str = "admin.html",
    **context: Any,
) -> HTMLResponse:
    """The users and tokens page, with what a form left to show (an error, the values, a new token)."""
    with transaction(request.app.state.runtime.factory) as session:
        users = list(accounts.list_users(session=session))
        tokens = list(auth.list_tokens(session=session))
        hooks = list(webhooks.subscriptions(session=session))
        backlog = _backlog(session)
        session.expunge_all()
    defaults: dict[str, Any] = {"error": "", "error_form": "", "draft": {}, "notice": ""}
    return render(
        request,
        template,
        principal,
        status=status,
        title="Admin",
        users=users,
        tokens=tokens,
        hooks=hooks,
        backlog=backlog,
        now=utcnow(),
        roles=tuple(ApiRole),
        user_languages=accounts.LANGUAGES,
        status_of=user_status,
        **(defaults | context),
    )


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    return user


@router.get("/admin", response_class=HTMLResponse)
def admin_page(
    request: Request, principal: AdminPage, done: Annotated[str, Query(max_length=40)] = ""
) -> Response:
    """The dashboard's users and the API's tokens."""
    return _admin_page(request, principal, notice=done)


@router.post("/admin/users", response_class=HTMLResponse)
def create_user(
    request: Request,
    principal: AdminPage,
    csrf_token: Csrf = "",
    name: Text = "",
    role: Annotated[str, Form(max_length=20)] = "",
    language: Annotated[str, Form(max_length=8)] = "en",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Add a dashboard user."""
    check_form_csrf(principal, csrf_token)
    draft = {"name": name, "role": role, "language": language}  # never the password
    if role not in tuple(ApiRole):
        return _admin_page(
            request,
            principal,
            status=422,
            error=f"role: one of {', '.join(ApiRole)}",
            error_form="user",
            draft=draft,
        )
    try:
        with transaction(request.app.state.runtime.factory) as session:
            accounts.create_user(
                session=session,
                name=name,
                role=ApiRole(role),
                password=password,
                language=language,
                actor=_actor(principal),
            )
    except accounts.AccountError as exc:
        return _admin_page(request, principal, status=422, error=str(exc), error_form="user", draft=draft)
    return RedirectResponse("/admin?done=user_created", status_code=303)


@router.post("/admin/users/{user_id}/disable")
def disable_user(request: Request, user_id: RowId, principal: AdminPage, csrf_token: Csrf = "") -> Response:
    """Refuse the user's sign-ins and end their sessions; never one's own account."""
    check_form_csrf(principal, csrf_token)
    try:
        with transaction(request.app.state.runtime.factory) as session:
            user = _user(session, user_id)
            accounts.disable_user(
                session=session, name=user.name, actor=_actor(principal), by_user=principal.user_id
            )
    except accounts.AccountError as exc:
        return _admin_page(request, principal, status=409, error=str(exc), error_form=f"user-{user_id}")
    return RedirectResponse("/admin?done=user_disabled", status_code=303)


@router.post("/admin/users/{user_id}/enable")
def enable_user(request: Request, user_id: RowId, principal: AdminPage, csrf_token: Csrf = "") -> Response:
    """Let a disabled user sign in again."""
    check_form_csrf(principal, csrf_token)
    with transaction(request.app.state.runtime.factory) as session:
        user = _user(session, user_id)
        accounts.enable_user(session=session, name=user.name, actor=_actor(principal))
    return RedirectResponse("/admin?done=user_enabled", status_code=303)


@router.post("/admin/users/{user_id}/password", response_class=HTMLResponse)
def reset_password(
    request: Request,
    user_id: RowId,
    principal: AdminPage,
    csrf_token: Csrf = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Give a user a new password (it unlocks them and ends their sessions, but this one)."""
    check_form_csrf(principal, csrf_token)
    try:
        with transaction(request.app.state.runtime.factory) as session:
            user = _user(session, user_id)
            accounts.set_password(
                session=session,
                name=user.name,
                password=password,
                actor=_actor(principal),
                keep_csrf=principal.csrf if user.id == principal.user_id else None,
            )
    except accounts.AccountError as exc:
        return _admin_page(request, principal, status=422, error=str(exc), error_form=f"user-{user_id}")
    return RedirectResponse("/admin?done=password_set", status_code=303)


@router.post("/admin/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    principal: AdminPage,
    csrf_token: Csrf = "",
    name: Text = "",
    role: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Make an API token and show it, once: only its hash is kept."""
    check_form_csrf(principal, csrf_token)
    draft = {"token_name": name, "token_role": role}
    error = ""
    if not name.strip():
        error = "name: the token needs a name (who or what uses it)"
    elif role not in tuple(ApiRole):
        error = f"role: one of {', '.join(ApiRole)}"
    if error:
        return _admin_page(request, principal, status=422, error=error, error_form="token", draft=draft)
    try:
        with transaction(request.app.state.runtime.factory) as session:
            token = auth.create_token(
                session=session, name=name.strip(), role=ApiRole(role), actor=_actor(principal)
            )
    except auth.TokenError as exc:
        return _admin_page(
            request, principal, status=409, error=f"name: {exc}", error_form="token", draft=draft
        )
    response = _admin_page(request, principal, status=201, new_token=token, new_token_name=name.strip())
    response.headers["cache-control"] = "no-store"  # the token is on this page alone, and only once
    return response


@router.post("/admin/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: RowId, principal: AdminPage, csrf_token: Csrf = "") -> Response:
    """Revoke a token: the API answers 401 to it from now on."""
    check_form_csrf(principal, csrf_token)
    with transaction(request.app.state.runtime.factory) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise HTTPException(404, f"no token {token_id}")
        auth.revoke_token(session=session, name=row.name, actor=_actor(principal))
    return RedirectResponse("/admin?done=token_revoked", status_code=303)


# -- outbound webhooks -----------------------------------------------------------------------------
def _backlog(session: Session) -> dict[int, dict[str, Any]]:
    """Per subscription: changes waiting to be delivered, and the last failure's answer."""
    rows = session.execute(
        select(
            WebhookDelivery.subscription_id,
            func.count(),
            func.max(WebhookDelivery.attempts),
        )
        .where(WebhookDelivery.state != DeliveryState.DELIVERED)
        .group_by(WebhookDelivery.subscription_id)
    ).all()
    backlog: dict[int, dict[str, Any]] = {sid: {"waiting": n, "attempts": a} for sid, n, a in rows}
    for sid in backlog:
        error = session.scalar(
            select(WebhookDelivery.last_error)
            .where(WebhookDelivery.subscription_id == sid, WebhookDelivery.last_error.is_not(None))
            .order_by(WebhookDelivery.id.desc())
            .limit(1)
        )
        backlog[sid]["error"] = error or ""
    return backlog


@router.post("/admin/webhooks", response_class=HTMLResponse)
def create_webhook(
    request: Request,
    principal: AdminPage,
    csrf_token: Csrf = "",
    url: Annotated[str, Form(max_length=2000)] = "",
    description: Text = "",
) -> Response:
    """Register a URL for every incident change and show its signing secret, once."""
    check_form_csrf(principal, csrf_token)
    settings = request.app.state.runtime.settings
    draft = {"hook_url": url, "hook_description": description}
    try:
        with transaction(request.app.state.runtime.factory) as session:
            created = webhooks.create(
                session=session,
                url=url.strip(),
                secret=None,
                description=description,
                actor=_actor(principal),
                production=settings.env == "production",
                own_url=settings.public_url,
                now=utcnow(),
            )
            hook_id = created.webhook.id
    except webhooks.Invalid as exc:
        return _admin_page(request, principal, status=422, error=str(exc), error_form="webhook", draft=draft)
    response = _admin_page(request, principal, status=201, new_secret=created.secret, new_secret_hook=hook_id)
    response.headers["cache-control"] = "no-store"  # the secret is on this page alone, and only once
    return response


@router.post("/admin/webhooks/{webhook_id}/disable")
def disable_webhook(
    request: Request, webhook_id: RowId, principal: AdminPage, csrf_token: Csrf = ""
) -> Response:
    """Stop POSTing incident changes to a subscription."""
    check_form_csrf(principal, csrf_token)
    with transaction(request.app.state.runtime.factory) as session:
        webhook = session.get(Webhook, webhook_id)
        if webhook is None:
            raise HTTPException(404, f"no webhook {webhook_id}")
        webhooks.disable(session=session, webhook=webhook, actor=_actor(principal), now=utcnow())
    return RedirectResponse("/admin?done=webhook_disabled#webhooks", status_code=303)


def user_status(user: User, now: datetime) -> str:
    """What the users table says of an account: disabled, locked (for a while) or active."""
    if not user.active:
        return "disabled"
    if user.locked_until is not None and user.locked_until > now:
        return "locked"
    return "active"
