"""Dashboard accounts: users, their argon2 passwords, sign-in with lock-out, browser sessions.

A session is a random cookie value; the database keeps its SHA-256 (a stolen database signs no
one in) and the CSRF token every form and cookie-authenticated write of that session must carry.
Lock-out counts failures per user (LOCK_AFTER in a row locks the account for LOCK_FOR) and per
address (ADDRESS_LIMIT failures within LOCK_FOR, whatever the names tried, refuse that address:
guessing across many names is stopped too). An unknown name costs the same argon2 work as a
known one and is refused in the same words, so sign-in does not tell which names exist.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.enums import ApiRole, AuditAction, AuditEntity
from app.models import AuditLog, LoginFailure, User, UserSession

# argon2id with the library's defaults (RFC 9106's second recommended option, about 50 ms here).
HASHER = PasswordHasher()
# Verified for a name no user has: the same work as a real check, so timing tells nothing.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))
MIN_PASSWORD, MAX_PASSWORD = 10, 256
LOCK_AFTER = 5  # failed sign-ins in a row that lock an account
LOCK_FOR = timedelta(minutes=15)
ADDRESS_LIMIT = 20  # failed sign-ins from one address within LOCK_FOR that refuse it
# A session ends after this long without a request, and in any case after SESSION_MAX.
SESSION_IDLE = timedelta(hours=12)
SESSION_MAX = timedelta(days=7)
# last_seen_at is written at most this often (not on every request of a polling page).
_TOUCH_EVERY = timedelta(minutes=1)
LANGUAGES = ("en", "fr", "sw")


class AccountError(ValueError):
    """A user command that cannot be done; the message names the user or the field."""


class SignInRefused(Exception):
    """Sign-in refused: `locked` says whether waiting (not a better password) is what helps."""

    def __init__(self, *, locked: bool) -> None:
        super().__init__("locked" if locked else "wrong name or password")
        self.locked = locked


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: User
    token: str  # the cookie's value, known only to the browser from now on
    csrf: str


@dataclass(frozen=True, slots=True)
class Current:
    """The user of a live session."""

    user_id: int
    name: str
    role: str
    language: str
    csrf: str
    session_id: int


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def check_password(password: str) -> str:
    """The password if it may be used, else AccountError saying why."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password: at most {MAX_PASSWORD} characters")
    if len(set(password)) < 4:
        raise AccountError("password: too simple (use several different characters, or a few words)")
    return password


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise AccountError("name: 1 to 100 characters")
    if any((ch.isspace() and ch != " ") or not ch.isprintable() for ch in name):
        raise AccountError("name: printable characters and spaces only")
    return name


def create_user(
    *, session: Session, name: str, role: ApiRole, password: str, language: str = "en", actor: str
) -> User:
    """Store a new user with an argon2 hash of the password."""
    name = _check_name(name)
    if language not in LANGUAGES:
        raise AccountError(f"language: one of {', '.join(LANGUAGES)}")
    if session.scalar(select(User.id).where(func.lower(User.name) == name.lower())) is not None:
        raise AccountError(f"a user named {name!r} exists")
    user = User(name=name, role=role, password_hash=HASHER.hash(check_password(password)), language=language)
    session.add(user)
    session.flush()
    _audit(session, actor, AuditAction.USER_CREATE, user, role=str(role))
    return user


def list_users(*, session: Session) -> Sequence[User]:
    """Every user, oldest first (disabled ones too)."""
    return session.scalars(select(User).order_by(User.created_at, User.id)).all()


def find_user(*, session: Session, name: str) -> User:
    user = session.scalar(select(User).where(func.lower(User.name) == name.strip().lower()))
    if user is None:
        raise AccountError(f"no user named {name!r}")
    return user


def disable_user(
    *, session: Session, name: str, actor: str, now: datetime | None = None, by_user: int | None = None
) -> bool:
    """Refuse the user's sign-ins and end their sessions at once; False if already disabled.

    `by_user`: the id of the signed-in user asking, who may not disable themself (nobody would be
    left signed in to undo it when they are the last admin).
    """
    user = find_user(session=session, name=name)
    if by_user is not None and user.id == by_user:
        raise AccountError("name: you cannot disable your own account; ask another admin")
    if not user.active:
        return False
    now = now or utcnow()
    user.active, user.disabled_at = False, now
    end_sessions(session=session, user_id=user.id, now=now)
    _audit(session, actor, AuditAction.USER_DISABLE, user)
    return True


def enable_user(*, session: Session, name: str, actor: str) -> bool:
    """Let a disabled user sign in again; False if they could already."""
    user = find_user(session=session, name=name)
    if user.active:
        return False
    user.active, user.disabled_at, user.failed_logins, user.locked_until = True, None, 0, None
    _audit(session, actor, AuditAction.USER_ENABLE, user)
    return True


def set_password(
    *,
    session: Session,
    name: str,
    password: str,
    actor: str,
    now: datetime | None = None,
    keep_csrf: str | None = None,
) -> None:
    """Give the user a new password, unlock them and end their sessions: every one but the session
    whose CSRF token is `keep_csrf` (an admin changing their own password stays signed in there)."""
    user = find_user(session=session, name=name)
    user.password_hash = HASHER.hash(check_password(password))
    user.failed_logins, user.locked_until = 0, None
    end_sessions(session=session, user_id=user.id, now=now or utcnow(), keep_csrf=keep_csrf)
    _audit(session, actor, AuditAction.USER_PASSWORD, user)


def set_language(*, session: Session, user_id: int, language: str) -> None:
    """Show the dashboard to this user in `language`."""
    if language not in LANGUAGES:
        raise AccountError(f"language: one of {', '.join(LANGUAGES)}")
    session.execute(update(User).where(User.id == user_id).values(language=language))


def sign_in(
    *, session: Session, name: str, password: str, address: str, now: datetime | None = None
) -> SignedIn:
    """Check a name and password from `address` (a keyed hash); a new session, or SignInRefused."""
    now = now or utcnow()
    recent = session.scalar(
        select(func.count()).where(LoginFailure.address == address, LoginFailure.at > now - LOCK_FOR)
    )
    user = session.scalar(select(User).where(func.lower(User.name) == name.strip().lower()))
    if (recent or 0) >= ADDRESS_LIMIT:
        raise SignInRefused(locked=True)
    good = _verify(user.password_hash if user is not None else _DUMMY_HASH, password)
    if user is None or not user.active:
        _failed(session, address, now, None)
        raise SignInRefused(locked=False)
    if user.locked_until is not None and user.locked_until > now:
        _failed(session, address, now, None)
        raise SignInRefused(locked=True)
    if not good:
        _failed(session, address, now, user)
        raise SignInRefused(locked=user.locked_until is not None and user.locked_until > now)
    if HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = HASHER.hash(password)
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(
        UserSession(
            user_id=user.id,
            token_hash=hash_secret(token),
            csrf_token=csrf,
            created_at=now,
            last_seen_at=now,
            expires_at=now + SESSION_MAX,
        )
    )
    _audit(session, user.name, AuditAction.SIGN_IN, user)
    return SignedIn(user, token, csrf)


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _failed(session: Session, address: str, now: datetime, user: User | None) -> None:
    session.add(LoginFailure(address=address, at=now))
    # Failures older than the window count for nothing: keep the table small.
    session.execute(delete(LoginFailure).where(LoginFailure.at < now - LOCK_FOR))
    if user is not None:
        user.failed_logins += 1
        if user.failed_logins >= LOCK_AFTER:
            user.locked_until = now + LOCK_FOR
            user.failed_logins = 0
            _audit(
                session, "sign-in", AuditAction.USER_LOCKED, user, minutes=int(LOCK_FOR.total_seconds() // 60)
            )


def current(*, session: Session, token: str, now: datetime | None = None) -> Current | None:
    """The user of the session whose cookie is `token`, or None (unknown, ended, expired, disabled)."""
    now = now or utcnow()
    row = session.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == hash_secret(token))
    ).one_or_none()
    if row is None:
        return None
    live, user = row
    if (
        live.revoked_at is not None
        or live.expires_at <= now
        or live.last_seen_at + SESSION_IDLE <= now
        or not user.active
    ):
        return None
    if now - live.last_seen_at > _TOUCH_EVERY:
        live.last_seen_at = now
    return Current(user.id, user.name, user.role, user.language, live.csrf_token, live.id)


def sign_out(*, session: Session, token: str, now: datetime | None = None) -> None:
    """End the session whose cookie is `token` (nothing if there is none)."""
    session.execute(
        update(UserSession)
        .where(UserSession.token_hash == hash_secret(token), UserSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )


def end_sessions(*, session: Session, user_id: int, now: datetime, keep_csrf: str | None = None) -> None:
    ending = update(UserSession).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
    if keep_csrf is not None:
        ending = ending.where(UserSession.csrf_token != keep_csrf)
    session.execute(ending.values(revoked_at=now))


def _audit(session: Session, actor: str, action: AuditAction, user: User, **details: object) -> None:
    session.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=AuditEntity.USER,
            entity_id=str(user.id),
            details={"name": user.name, **details},
        )
    )
