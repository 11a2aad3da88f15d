"""The data model. Tables come from Alembic migrations (migrations/), never from create_all."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    inspect,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column
from sqlalchemy.sql.elements import TextClause

from app.crypto import BlindIndex, Encrypted, blind_indexes, keyring_of
from app.db import UTCDateTime, utcnow
from app.enums import (
    FORWARDS,
    DeliveryState,
    Direction,
    IncidentStatus,
    MessageStatus,
    PersonStatus,
    Precision,
)
from gateways.base import MessageKind

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer, "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


@event.listens_for(Base, "before_update", propagate=True)
def _refresh_blind_indexes(_mapper: Mapper[Any], connection: Connection, target: Base) -> None:
    """An ORM change of an indexed number changes its blind index (inserts fill it by default)."""
    pairs = blind_indexes(target.__table__)
    if not pairs:
        return
    state = inspect(target)
    for source, index in pairs:
        if state.attrs[source].history.has_changes():
            value = getattr(target, source)
            setattr(target, index, None if value is None else keyring_of(connection).index(value))


class Place(Base):
    """A village, town or locality of the gazetteer."""

    __tablename__ = "places"
    __table_args__ = (Index(None, "lat", "lon"),)  # the villages near a caller's home (USSD)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ext_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_norm: Mapped[str] = mapped_column(String(200), index=True)
    alt_names: Mapped[str] = mapped_column(Text, default="")
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    # Area names (app/services/areas.py), never GeoNames codes: officers' areas are names.
    admin1: Mapped[str | None] = mapped_column(String(120))
    admin2: Mapped[str | None] = mapped_column(String(120))
    # A GeoNames place's codes as its dump gives them ("11", "219056"): named again when an admin
    # code file is imported later.
    admin1_code: Mapped[str | None] = mapped_column(String(20))
    admin2_code: Mapped[str | None] = mapped_column(String(80))
    country: Mapped[str | None] = mapped_column(String(2))
    kind: Mapped[str | None] = mapped_column(String(40))
    population: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(40), default="csv")


class GazetteerVersion(Base):
    """One row, counted up by every import that changes places or areas: running processes reload."""

    __tablename__ = "gazetteer_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class AdminArea(Base):
    """A province or district imported from GeoNames' admin code files (the shipped ones are not rows)."""

    __tablename__ = "areas"

    code: Mapped[str] = mapped_column(String(100), primary_key=True)  # "CD.11", "CD.11.219056"
    name: Mapped[str] = mapped_column(String(120))
    ascii_name: Mapped[str] = mapped_column(String(200), default="")
    level: Mapped[int] = mapped_column(Integer)
    geonameid: Mapped[int | None] = mapped_column(BigInteger)


class Person(Base):
    """Someone on the roster: a focal point, a duty officer, an admin, or a pending reporter."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(Encrypted())
    phone_index: Mapped[str] = mapped_column(String(64), unique=True, default=BlindIndex("phone"))
    phone_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    role: Mapped[str] = mapped_column(String(20))  # Role
    status: Mapped[str] = mapped_column(String(12), default=PersonStatus.APPROVED)
    language: Mapped[str | None] = mapped_column(String(8))
    place_id: Mapped[int | None] = mapped_column(ForeignKey("places.id", ondelete="SET NULL"))
    home_lat: Mapped[float | None] = mapped_column(Float)
    home_lon: Mapped[float | None] = mapped_column(Float)
    level: Mapped[int | None] = mapped_column(Integer)
    area: Mapped[str | None] = mapped_column(String(120))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    # An officer's weekly on-duty table (app/services/shifts.py); NULL = always on duty.
    shifts: Mapped[str | None] = mapped_column(Text)
    # Loaded by `kengele demo load`: an invented person whose number no gateway that texts phones
    # is ever given (the dispatcher fails their SMS instead).
    demo: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The last message we received from them, and since when a focal point is flagged silent.
    last_seen_at: Mapped[datetime | None]
    silent_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Incident(Base):
    """One event on the ground, made of one or more reports."""

    __tablename__ = "incidents"
    __table_args__ = (
        Index(None, "category", "status", "last_reported_at"),
        Index(None, "status", "next_escalation_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str | None] = mapped_column(String(16), unique=True)
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.OPEN)
    place_id: Mapped[int | None] = mapped_column(ForeignKey("places.id", ondelete="SET NULL"))
    place_name: Mapped[str | None] = mapped_column(String(200))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    precision: Mapped[str] = mapped_column(String(12), default=Precision.UNKNOWN)
    area: Mapped[str | None] = mapped_column(String(120))
    first_reported_at: Mapped[datetime]
    last_reported_at: Mapped[datetime]
    report_count: Mapped[int] = mapped_column(Integer, default=0)
    reporter_count: Mapped[int] = mapped_column(Integer, default=0)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    escalation_step: Mapped[int] = mapped_column(Integer, default=0)  # forward = 1, then one per escalation
    beep: Mapped[bool] = mapped_column(Boolean, default=False)  # began with a missed call: "call back"
    next_escalation_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    acknowledged_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(200))
    closed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def status_is(status: MessageStatus) -> TextClause:
    """`status = '<status>'` with the value written into the SQL, where a partial index can see it."""
    return text(f"status = '{MessageStatus(status)}'")


# The queues' partial indexes hold only the rows still to be done: a few hundred, beside the
# millions of a deployment's history. A query uses one when its WHERE repeats the index's
# condition with the values written in. PostgreSQL's generic plan of a prepared statement (psycopg
# prepares a query from its fifth run) cannot see a bound value, so it would scan the table; SQLite
# sees one only by preparing the statement again at every run. So the queue queries put these very
# clauses in their WHERE (tests/test_scale_indexes.py EXPLAINs them).
#
# A query that takes the oldest rows first orders by all of its index's columns (the constant ones
# too: by id, then). PostgreSQL estimates a condition on two columns as if they were independent:
# of a table half outbound, where no outbound row is ever processed, it takes a quarter of all rows
# for unprocessed inbound ones, so the primary key walked in id order looks as good as the index,
# and reads millions of rows before the few it wants. Only the index gives its own order.
UNPROCESSED = text(f"processed_at IS NULL AND direction = '{Direction.INBOUND}'")  # outbound: never
QUEUED = status_is(MessageStatus.QUEUED)
SENDING = status_is(MessageStatus.SENDING)
FAILED_FORWARD = text(
    f"status = '{MessageStatus.FAILED}' AND purpose IN ({', '.join(repr(str(p)) for p in FORWARDS)})"
    " AND followed_up_at IS NULL"
)


def _partial(name: str, *columns: str, where: TextClause) -> Index:
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


class Message(Base):
    """An SMS in either direction. Inbound rows are the raw provider message; outbound rows are the outbox."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("direction", "provider", "provider_message_id"),
        # Constant columns (see above); equal to the query's terms, they also make SQLite without
        # statistics (the service never runs ANALYZE) prefer this index to (direction, created_at).
        _partial("ix_messages_unprocessed", "processed_at", "direction", "id", where=UNPROCESSED),
        _partial("ix_messages_due", "priority", "next_attempt_at", where=QUEUED),
        _partial("ix_messages_stale", "claimed_until", where=SENDING),
        _partial("ix_messages_failed", "followed_up_at", "id", where=FAILED_FORWARD),
        Index(None, "direction", "created_at"),
        Index(None, "recipient_index", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))  # Direction
    provider: Mapped[str | None] = mapped_column(String(20))
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    sender: Mapped[str | None] = mapped_column(Encrypted())
    recipient: Mapped[str | None] = mapped_column(Encrypted())
    # Replies to one number in a window (KENGELE_REPLY_LIMIT), counted across replicas.
    recipient_index: Mapped[str | None] = mapped_column(String(64), default=BlindIndex("recipient"))
    kind: Mapped[str] = mapped_column(String(8), default=MessageKind.SMS)  # or a beep (a missed call)
    phone_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    text: Mapped[str] = mapped_column(Encrypted(), default="")  # may hold a number someone typed
    purpose: Mapped[str | None] = mapped_column(String(20))  # Purpose, of an outbound row
    status: Mapped[str] = mapped_column(String(12))  # MessageStatus
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    in_reply_to: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Inbound: when the sender sent it (Africa's Talking `date`), else when it arrived.
    reported_at: Mapped[datetime | None]
    # Inbound: the provider's date as given (ISO 8601) where it was not taken as reported_at
    # (too far in the past or the future); text, not a timestamp, so no value can overflow.
    given_date: Mapped[str | None] = mapped_column(String(40))
    # The provider's whole form, as JSON; loaded (and decrypted) only when read.
    raw: Mapped[str | None] = mapped_column(Encrypted(), deferred=True)
    # Inbound processing: a row with processed_at NULL is picked up again after a crash.
    processed_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(40))
    intent: Mapped[str | None] = mapped_column(String(16))  # keywords.parser.Intent
    outcome: Mapped[str | None] = mapped_column(String(16))  # Outcome
    parse: Mapped[dict[str, Any] | None]
    # Outbound dispatch.
    idempotency_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    gateway_index: Mapped[int] = mapped_column(Integer, default=0)
    gateway_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Sent in this order when the outbox is long: forwards before replies before check-ins.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # A failed forward: when the escalator handed it on to the next officer or level.
    followed_up_at: Mapped[datetime | None]


class Alert(Base):
    """One report: what one inbound message said, placed and categorised."""

    __tablename__ = "alerts"
    __table_args__ = (Index(None, "reported_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(12))
    place_id: Mapped[int | None] = mapped_column(ForeignKey("places.id", ondelete="SET NULL"))
    place_name: Mapped[str | None] = mapped_column(String(200))
    place_query: Mapped[str | None] = mapped_column(String(200))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    precision: Mapped[str] = mapped_column(String(12), default=Precision.UNKNOWN)
    language: Mapped[str | None] = mapped_column(String(8))
    sender: Mapped[str] = mapped_column(Encrypted())
    # Reports of one sender (dedup: the same person reporting again is not a second reporter).
    sender_index: Mapped[str] = mapped_column(String(64), index=True, default=BlindIndex("sender"))
    # The report opened its incident (KENGELE_FLOOD_LIMIT counts the incidents one sender opens).
    opened: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    reported_at: Mapped[datetime]
    text: Mapped[str] = mapped_column(Encrypted())
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    confidence: Mapped[float] = mapped_column(Float, default=1.0)
    # The parser was unsure of its reading (a cry for help with no category, a word read by its
    # stem): an officer looks at the words as written and clears the flag on /triage.
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryEvent(Base):
    """A provider's delivery receipt for an outbound message."""

    __tablename__ = "delivery_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    provider_message_id: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(12))  # gateways.base.DeliveryStatus
    provider_status: Mapped[str] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    raw: Mapped[str | None] = mapped_column(Encrypted(), deferred=True)


class CheckInRound(Base):
    """One scheduled check-in of one area: sent once, whichever replica fires it."""

    __tablename__ = "checkin_rounds"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    round_key: Mapped[str] = mapped_column(String(160), unique=True)
    area: Mapped[str] = mapped_column(String(120))  # "" = focal points with no area
    scheduled_for: Mapped[datetime]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    sent: Mapped[int] = mapped_column(Integer, default=0)


class CheckIn(Base):
    """A check-in sent to a focal point for one round, and whether they answered."""

    __tablename__ = "checkins"
    __table_args__ = (UniqueConstraint("person_id", "round_key"), Index(None, "round_key"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    round_key: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None]
    answer_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))


class UssdSession(Base):
    """One USSD session (Africa's Talking sessionId): where the caller is in the menu."""

    __tablename__ = "ussd_sessions"

    session_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    phone: Mapped[str] = mapped_column(Encrypted())
    service_code: Mapped[str | None] = mapped_column(String(40))
    language: Mapped[str | None] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Encrypted(), default="")  # the provider's input so far ("1*2*3")
    screen: Mapped[str] = mapped_column(String(40), default="start")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    incident_code: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(12))  # ApiRole
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class User(Base):
    """A person who signs in to the dashboard; only an argon2 hash of the password is kept."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(12))  # ApiRole
    password_hash: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8), default="en")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Failed sign-ins in a row (reset by a good one); from LOCK_AFTER on, refused until locked_until.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]


class UserSession(Base):
    """A signed-in browser: the cookie's SHA-256 and the CSRF token its forms must carry."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class LoginFailure(Base):
    """A failed sign-in from one address (a keyed hash of it, never the address): the lock-out per address."""

    __tablename__ = "login_failures"
    __table_args__ = (Index(None, "address", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentNote(Base):
    """A note an officer wrote on an incident (the dashboard's incident page)."""

    __tablename__ = "incident_notes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditLog(Base):
    """Who did what to which record, and when."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))  # AuditAction
    entity: Mapped[str] = mapped_column(String(40))  # AuditEntity
    entity_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class SendPacing(Base):
    """One gateway's pacing and daily budget, shared by every dispatcher of every replica.

    A dispatcher reserves send slots here under a row lock, so the rate holds for all of them at
    once; times are epoch seconds (floats) read from the dispatchers' clocks.
    """

    __tablename__ = "send_pacing"

    gateway: Mapped[str] = mapped_column(String(40), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float, default=0.0)  # the first free slot
    day: Mapped[str] = mapped_column(String(10), default="")  # the local day `spent` counts
    spent: Mapped[int] = mapped_column(Integer, default=0)
    noticed: Mapped[str] = mapped_column(String(10), default="")  # the day admins were told of 80 %


class Webhook(Base):
    """An outbound webhook subscription: every incident change is POSTed to its URL, signed."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    # The HMAC key of its signatures: sealed at rest as the phone numbers are (app/crypto.py), so a
    # stolen backup cannot forge deliveries; rotated with them by `kengele keys rotate`.
    secret: Mapped[str] = mapped_column(Encrypted())
    description: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One incident change for one subscription: an outbox row a deliverer POSTs (services/webhooks.py)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(None, "state", "next_attempt_at"),
        # The earlier undelivered change of the same incident, which a delivery waits for.
        Index(None, "subscription_id", "incident_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))  # WebhookEvent
    # The incident as the change left it, masked (no phone number, no reporter): fixed when the
    # change is committed, so a retry tells what happened then, not what the incident is now.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(12), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claim_token: Mapped[str | None] = mapped_column(String(36))
    claimed_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    response_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
