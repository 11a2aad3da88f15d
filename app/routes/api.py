"""The JSON API under /api/v1: thin; queries and services do the work."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from sqlalchemy import Select, func, select

from app.auth import Principal, require
from app.db import transaction
from app.enums import ApiRole, Direction, MessageStatus, Outcome, Purpose
from app.models import Message, status_is
from app.schemas import MAX_ID, MessagePublic, Page, refusals

router = APIRouter(prefix="/api/v1", tags=["api"], responses=refusals(401, 403, 422))
T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def as_utc(value: datetime | None, field: str = "since") -> datetime | None:
    """A time from a query string; one without an offset is taken as UTC."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise HTTPException(422, f"{field}: out of range") from None


def paged(
    request: Request,
    query: Select[Any],
    order: tuple[Any, ...],
    view: Callable[[Any], T],
    limit: int,
    offset: int,
) -> tuple[list[T], int]:
    """One page of a query, newest first, and how many rows the whole query has."""
    with transaction(request.app.state.runtime.factory) as session:
        total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
        rows = session.scalars(query.order_by(*order).limit(limit).offset(offset)).all()
        return [view(r) for r in rows], total


def _page(request: Request, query: Select[Any], limit: int, offset: int) -> Page[MessagePublic]:
    items, total = paged(request, query, (Message.id.desc(),), MessagePublic.model_validate, limit, offset)
    return Page[MessagePublic](items=items, total=total)


@router.get("/messages", response_model=Page[MessagePublic])
def list_messages(
    request: Request,
    _: Annotated[Principal, Depends(require(ApiRole.OFFICER))],
    direction: Direction | None = None,
    purpose: Purpose | None = None,
    status: MessageStatus | None = None,
    since: datetime | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[MessagePublic]:
    """Inbound and outbound messages, newest first."""
    query = select(Message)
    if direction:
        query = query.where(Message.direction == direction)
    if purpose:
        query = query.where(Message.purpose == purpose)
    if status:
        query = query.where(status_is(status))  # queued, sending: by their partial index
    if since:
        query = query.where(Message.created_at >= as_utc(since))
    return _page(request, query, limit, offset)


@router.get("/triage", response_model=Page[MessagePublic])
def triage(
    request: Request,
    _: Annotated[Principal, Depends(require(ApiRole.OFFICER))],
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[MessagePublic]:
    """Inbound messages that produced no alert and no command: for a human to read."""
    query = select(Message).where(
        Message.direction == Direction.INBOUND, Message.outcome.in_((Outcome.UNKNOWN, Outcome.ERROR))
    )
    return _page(request, query, limit, offset)
