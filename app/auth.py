"""Who is calling: a bearer token (the API) or a signed-in browser (the dashboard); admin > officer > viewer.

A browser's session cookie authenticates the API as well (the dashboard's scripts call it), but a
write made with the cookie must carry the session's CSRF token in `X-CSRF-Token`: another site
can make a browser send the cookie, never read the token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import transaction, utcnow
from app.enums import ApiRole, AuditAction, AuditEntity
from app.models import ApiToken, AuditLog
from gateways.base import secrets_equal

ROLES = tuple(ApiRole)
RANK: dict[str, int] = {role: i for i, role in enumerate(ROLES)}


SESSION_COOKIE = "kengele_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    user_id: int | None = None  # a dashboard user (signed in with a session cookie)
    csrf: str | None = None  # that session's CSRF token
    language: str = "en"

    def at_least(self, role: ApiRole) -> bool:
        return RANK[self.role] >= RANK[role]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "kg_" + secrets.token_urlsafe(32)


# -- tokens, as the command line manages them -----------------------------------------------------
class TokenError(ValueError):
    """A token command that cannot be done; the message names the token."""


def create_token(*, session: Session, name: str, role: ApiRole, actor: str) -> str:
    """Store a new token (its hash only) and return it; a name is given to one live token at a time."""
    taken = session.scalar(select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))
    if taken is not None:  # `token revoke NAME` must know which token it revokes
        raise TokenError(f"a token named {name!r} exists; revoke it first or choose another name")
    token = new_token()
    row = ApiToken(name=name, role=role, token_hash=hash_token(token))
    session.add(row)
    session.flush()
    _audit(session, actor, AuditAction.TOKEN_CREATE, row, role=str(role))
    return token


def list_tokens(*, session: Session) -> Sequence[ApiToken]:
    """Every token ever created, oldest first (revoked ones too)."""
    return session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)).all()


def revoke_token(*, session: Session, name: str, actor: str, now: datetime | None = None) -> int:
    """Revoke the live tokens of this name (answered 401 from now on); how many were live."""
    rows = session.scalars(select(ApiToken).where(ApiToken.name == name)).all()
    if not rows:
        raise TokenError(f"no token named {name!r}")
    live = [row for row in rows if row.revoked_at is None]
    for row in live:
        row.revoked_at = now or utcnow()
        _audit(session, actor, AuditAction.TOKEN_REVOKE, row)
    return len(live)


def _audit(session: Session, actor: str, action: AuditAction, row: ApiToken, **details: object) -> None:
    session.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=AuditEntity.TOKEN,
            entity_id=str(row.id),
            details={"name": row.name, **details},
        )
    )


def authenticate(request: Request) -> Principal:
    """The caller: its bearer token, else its session cookie; 401 without either."""
    header = request.headers.get("authorization", "")
    if not header and request.cookies.get(SESSION_COOKIE):
        principal = session_principal(request)
        if principal is None:
            raise HTTPException(401, "session ended: sign in again at /login")
        if request.method not in SAFE_METHODS:
            check_csrf(request, principal, request.headers.get(CSRF_HEADER))
        return principal
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


def session_principal(request: Request) -> Principal | None:
    """The signed-in user of the request's session cookie, or None (no cookie, or an ended session)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 200:
        return None
    cached = request.scope.get("kengele.principal")
    if isinstance(cached, Principal):
        return cached
    from app.services.accounts import current

    with transaction(request.app.state.runtime.factory) as session:
        user = current(session=session, token=token)
    if user is None:
        return None
    principal = Principal(user.name, user.role, user.user_id, user.csrf, user.language)
    request.scope["kengele.principal"] = principal
    return principal


def check_csrf(request: Request, principal: Principal, given: str | None) -> None:
    """403 unless a cookie-authenticated write carries its session's CSRF token and comes from here."""
    if principal.csrf is None:  # a bearer token: no cookie, nothing another site could ride on
        return
    if not given or not secrets_equal(given, principal.csrf):
        raise HTTPException(403, "csrf_token: missing or wrong (reload the page and try again)")
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") not in _own_origins(request):
        raise HTTPException(403, f"origin: {origin} is not this site")


def _own_origins(request: Request) -> set[str]:
    """This site as a browser names it: the host asked for, and KENGELE_PUBLIC_URL (behind a proxy)."""
    public = urlsplit(request.app.state.runtime.settings.public_url)
    return {
        f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}",
        f"{public.scheme}://{public.netloc}",
    }


def require(role: ApiRole) -> Callable[[Principal], Principal]:
    """A dependency that admits callers of `role` or above."""

    def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.at_least(role):
            raise HTTPException(403, f"role {role} required")
        return principal

    return dependency
