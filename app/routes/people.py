"""The roster over the API (admins only): people, a CSV import, and approval of self-registrations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import policy
from email.parser import BytesParser
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth import Principal, require
from app.db import transaction
from app.enums import ApiRole, PersonStatus, Role
from app.models import Person
from app.routes.api import Limit, Offset, RowId, paged
from app.schemas import ErrorOut, ImportReport, Page, PersonIn, PersonOut, PersonPatch, refusals
from app.services import roster

router = APIRouter(prefix="/api/v1", tags=["people"], responses=refusals(401, 403, 422))
Admin = Annotated[Principal, Depends(require(ApiRole.ADMIN))]
MAX_UPLOAD = 10_000_000  # bytes: a roster of 100,000 people fits


def _rules(request: Request, session: Session) -> roster.Rules:
    runtime = request.app.state.runtime
    return roster.rules_for(
        session=session,
        region=runtime.settings.default_region,
        languages=runtime.pipeline.lexicon.grammars,
        places=runtime.pipeline.places,
    )


def _actor(principal: Principal) -> str:
    return f"api:{principal.name}"


def _person(session: Session, person_id: int) -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise HTTPException(404, f"no person {person_id}")
    return person


@contextmanager
def _refusals() -> Iterator[None]:
    """Answer what the roster refuses: 422 for a bad value, 409 for a clash with the roster."""
    try:
        yield
    except roster.Invalid as exc:
        raise HTTPException(422, str(exc)) from None
    except roster.Conflict as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/people", response_model=Page[PersonOut])
def list_people(
    request: Request,
    _: Admin,
    role: Role | None = None,
    area: str | None = None,
    active: bool | None = None,
    status: PersonStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[PersonOut]:
    """Roster entries, in the order they were added; `area` by any name or code of the area."""
    with request.app.state.runtime.factory() as session:
        query = roster.listing(
            rules=_rules(request, session),
            keyring=request.app.state.runtime.keyring,
            role=role,
            area=area,
            active=active,
            status=status,
        )
    people, total = paged(request, query, (Person.id,), lambda p: p, limit, offset)
    with transaction(request.app.state.runtime.factory) as session:
        return Page[PersonOut](items=roster.views(session=session, people=people), total=total)


@router.post("/people", response_model=PersonOut, status_code=201, responses=refusals(400, 409))
def create_person(request: Request, body: PersonIn, principal: Admin) -> PersonOut:
    """Add one person, checked as one row of a roster file."""
    with transaction(request.app.state.runtime.factory) as session, _refusals():
        person = roster.add(
            session=session, values=body.model_dump(), rules=_rules(request, session), actor=_actor(principal)
        )
        return roster.views(session=session, people=[person])[0]


@router.get("/people/{person_id}", response_model=PersonOut, responses=refusals(404))
def get_person(request: Request, person_id: RowId, _: Admin) -> PersonOut:
    with transaction(request.app.state.runtime.factory) as session:
        return roster.views(session=session, people=[_person(session, person_id)])[0]


@router.patch("/people/{person_id}", response_model=PersonOut, responses=refusals(400, 404, 409))
def update_person(request: Request, person_id: RowId, body: PersonPatch, principal: Admin) -> PersonOut:
    """Change the fields given; the person is checked again as a whole row."""
    with transaction(request.app.state.runtime.factory) as session, _refusals():
        person = roster.change(
            session=session,
            person=_person(session, person_id),
            values=body.model_dump(exclude_unset=True),
            rules=_rules(request, session),
            actor=_actor(principal),
        )
        return roster.views(session=session, people=[person])[0]


def _set(request: Request, person_id: int, principal: Principal, decide: Callable[..., Person]) -> PersonOut:
    with transaction(request.app.state.runtime.factory) as session, _refusals():
        person = decide(session=session, person=_person(session, person_id), actor=_actor(principal))
        return roster.views(session=session, people=[person])[0]


@router.delete("/people/{person_id}", response_model=PersonOut, responses=refusals(404, 409))
def deactivate_person(request: Request, person_id: RowId, principal: Admin) -> PersonOut:
    """Deactivate: no more check-ins or forwards. The person stays, so their reports keep their history."""
    return _set(request, person_id, principal, roster.deactivate)


@router.post("/people/{person_id}/approve", response_model=PersonOut, responses=refusals(404, 409))
def approve_person(request: Request, person_id: RowId, principal: Admin) -> PersonOut:
    """Approve a pending self-registration (JOIN): the person becomes an active focal point."""
    return _set(request, person_id, principal, roster.approve)


@router.post("/people/{person_id}/reject", response_model=PersonOut, responses=refusals(404, 409))
def reject_person(request: Request, person_id: RowId, principal: Admin) -> PersonOut:
    """Reject a pending self-registration: they stay known (a new JOIN does not re-open it), inactive."""
    return _set(request, person_id, principal, roster.reject)


def _upload(content_type: str, body: bytes) -> bytes:
    """The CSV of a request: its body, or the `file` field of a multipart form."""
    if not content_type.lower().startswith("multipart/form-data"):
        return body
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    form = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    for part in form.iter_parts() if form.is_multipart() else ():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else b""
    raise HTTPException(422, "file: a multipart upload needs the CSV in a field named file")


# The body is read raw (a CSV, or a multipart form with it), so the document is told what it takes.
IMPORT_BODY = {
    "required": True,
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}


@router.post(
    "/people/import",
    response_model=ImportReport,
    responses=refusals(413)
    | {
        422: {
            "model": ImportReport | ErrorOut,
            "description": "a bad row (the report, nothing changed), or no CSV in a multipart upload",
        }
    },
    openapi_extra={"requestBody": IMPORT_BODY},
)
async def import_people(request: Request, principal: Admin, skip_bad: bool = False) -> JSONResponse:
    """Import a roster CSV (the raw body, or a multipart field `file`); 422 with the report, and
    nothing changed, when a row is bad and bad rows are not skipped."""
    if int(request.headers.get("content-length") or 0) > MAX_UPLOAD:
        raise HTTPException(413, f"body: larger than {MAX_UPLOAD} bytes")
    body = await request.body()
    if len(body) > MAX_UPLOAD:
        raise HTTPException(413, f"body: larger than {MAX_UPLOAD} bytes")
    data = _upload(request.headers.get("content-type", ""), body)

    def run() -> roster.Report:
        return roster.import_csv(
            request.app.state.runtime.factory,
            data,
            rules=lambda session: _rules(request, session),
            actor=_actor(principal),
            skip_bad=skip_bad,
        )

    report = await run_in_threadpool(run)
    view = ImportReport.model_validate(report).model_dump(mode="json")
    return JSONResponse(view, status_code=200 if report.applied else 422)
