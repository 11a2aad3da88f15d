"""Outbound webhook subscriptions over the API (admins only): register, list, disable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from app.auth import Principal, require
from app.db import transaction, utcnow
from app.enums import ApiRole
from app.models import Webhook
from app.routes.api import RowId
from app.schemas import Page, WebhookCreated, WebhookIn, WebhookOut, refusals
from app.services import webhooks

# Not "webhooks": that tag is the providers' inbound ones (routes/webhooks.TAG).
router = APIRouter(prefix="/api/v1", tags=["outbound webhooks"], responses=refusals(401, 403, 422))
Admin = Annotated[Principal, Depends(require(ApiRole.ADMIN))]


@router.post("/webhooks", response_model=WebhookCreated, status_code=201, responses=refusals(400))
def create_webhook(request: Request, body: WebhookIn, principal: Admin) -> WebhookCreated:
    """Register a URL to POST every incident change to, signed with its secret (made when not given)."""
    settings = request.app.state.runtime.settings
    with transaction(request.app.state.runtime.factory) as session:
        try:
            created = webhooks.create(
                session=session,
                url=body.url,
                secret=body.secret,
                description=body.description,
                actor=f"api:{principal.name}",
                production=settings.env == "production",
                own_url=settings.public_url,
                now=utcnow(),
            )
        except webhooks.Invalid as exc:
            raise HTTPException(422, str(exc)) from None
        view = WebhookOut.model_validate(created.webhook)
        return WebhookCreated(**view.model_dump(), secret=created.secret)


@router.get("/webhooks", response_model=Page[WebhookOut])
def list_webhooks(request: Request, _: Admin) -> Page[WebhookOut]:
    """Every subscription, oldest first (disabled ones too); secrets are never shown."""
    with transaction(request.app.state.runtime.factory) as session:
        items = [WebhookOut.model_validate(w) for w in webhooks.subscriptions(session=session)]
    return Page[WebhookOut](items=items, total=len(items))


@router.delete("/webhooks/{webhook_id}", response_model=WebhookOut, responses=refusals(404))
def disable_webhook(request: Request, webhook_id: RowId, principal: Admin) -> WebhookOut:
    """Disable a subscription: nothing more is POSTed to it."""
    with transaction(request.app.state.runtime.factory) as session:
        webhook = session.get(Webhook, webhook_id)
        if webhook is None:
            raise HTTPException(404, f"no webhook {webhook_id}")
        webhooks.disable(session=session, webhook=webhook, actor=f"api:{principal.name}", now=utcnow())
        return WebhookOut.model_validate(webhook)
