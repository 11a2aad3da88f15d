"""Bearer tokens and roles: admin > officer > viewer."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select

from app.db import transaction, utcnow
from app.enums import ApiRole
from app.models import ApiToken
from gateways.base import secrets_equal

ROLES = tuple(ApiRole)
RANK: dict[str, int] = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str

    def at_least(self, role: ApiRole) -> bool:
        return RANK[self.role] >= RANK[role]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "kg_" + secrets.token_urlsafe(32)


def authenticate(request: Request) -> Principal:
    """The caller of the API, from its bearer token; 401 without a valid one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401, "Authorization: Bearer <token> required", headers={"WWW-Authenticate": "Bearer"}
        )
    token = token.strip()
    runtime = request.app.state.runtime
    admin = runtime.settings.admin_token
    if admin is not None and secrets_equal(token, admin.get_secret_value()):
        return Principal("bootstrap-admin", ApiRole.ADMIN)
    with transaction(runtime.factory) as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        if row is None or row.revoked_at is not None:
            raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
        row.last_used_at = utcnow()
        return Principal(row.name, row.role)


def require(role: ApiRole) -> Callable[[Principal], Principal]:
    """A dependency that admits callers of `role` or above."""

    def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.at_least(role):
            raise HTTPException(403, f"role {role} required")
        return principal

    return dependency
