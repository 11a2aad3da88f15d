"""The network's health over the API: check-in figures per area and the silent focal points."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.auth import Principal, require
from app.db import transaction
from app.enums import ApiRole
from app.schemas import NetworkHealth, refusals
from app.services import network

router = APIRouter(prefix="/api/v1", tags=["network"], responses=refusals(401))
Viewer = Annotated[Principal, Depends(require(ApiRole.VIEWER))]


@router.get("/network/health", response_model=NetworkHealth)
def network_health(request: Request, principal: Viewer) -> NetworkHealth:
    """Per area: focal points, how many the last round asked and how many answered, the silent ones."""
    with transaction(request.app.state.runtime.factory) as session:
        return network.health(session=session, full=principal.at_least(ApiRole.OFFICER))
