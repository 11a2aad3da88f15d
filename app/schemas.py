"""What the JSON API shows: public views of the models."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from app.enums import (
    Direction,
    IncidentStatus,
    MessageStatus,
    Outcome,
    PersonStatus,
    Precision,
    Purpose,
    Role,
)
from app.phones import scrub_data
from keywords.parser import Intent

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MAX_ID = 2**63 - 1  # the largest row id the databases hold (BIGINT)
CODE_PREFIX = "K"  # an incident's code is this and its number: K42


# -- an incident as people name it: by id or by code ----------------------------------------------
# ASCII only: neither a Kelvin sign (which ignoring case would take for a K) nor other digits.
_INCIDENT_KEY = re.compile(rf"(?P<code>{CODE_PREFIX})?(?P<number>[0-9]+)", re.IGNORECASE | re.ASCII)
INCIDENT_KEY_EXPECTED = f"expected an incident id (42) or code ({CODE_PREFIX}42)"


class IncidentKey:
    """An incident as a caller names it: its id (42), or its code (K42, in any case)."""

    __slots__ = ("code", "id")

    def __init__(self, *, id: int | None = None, code: str | None = None) -> None:
        if (id is None) == (code is None):
            raise TypeError("an incident key is an id or a code")
        self.id = id
        self.code = code

    @classmethod
    def parse(cls, value: object) -> IncidentKey:
        """Read an id or a code; raise ValueError saying what was expected."""
        if isinstance(value, bool):  # JSON true is no incident, though Python counts it as 1
            raise ValueError(INCIDENT_KEY_EXPECTED)
        if isinstance(value, int):
            digits, is_code = str(value), False
        elif isinstance(value, str) and (found := _INCIDENT_KEY.fullmatch(value)):
            digits, is_code = found["number"].lstrip("0") or "0", found["code"] is not None
        else:
            raise ValueError(INCIDENT_KEY_EXPECTED)
        if len(digits) > len(str(MAX_ID)) or not 1 <= int(digits) <= MAX_ID:
            raise ValueError(f"out of range: an incident's number is 1 to {MAX_ID}")
        return cls(code=f"{CODE_PREFIX}{digits}") if is_code else cls(id=int(digits))

    def __str__(self) -> str:
        return self.code if self.code is not None else str(self.id)

    def __repr__(self) -> str:
        return f"IncidentKey({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IncidentKey) and (self.id, self.code) == (other.id, other.code)

    def __hash__(self) -> int:
        return hash((self.id, self.code))


def _incident_key(value: object) -> IncidentKey:
    try:
        return IncidentKey.parse(value)
    except ValueError as exc:  # the message alone: the field's name is put before it
        raise PydanticCustomError("incident_key", str(exc)) from None


KEY_PATTERN = f"^[{CODE_PREFIX}{CODE_PREFIX.lower()}]?[0-9]+$"
KEY_DESCRIPTION = f"incident id or code: 42 or {CODE_PREFIX}42 (any case)"
# An incident named in a path: a string of digits, or the code.
IncidentPathKey = Annotated[
    IncidentKey,
    PlainValidator(_incident_key),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "pattern": KEY_PATTERN, "examples": ["K42", "42"]}),
]
# An incident named in a JSON body: its id as a number, or its code as a string.
IncidentBodyKey = Annotated[
    IncidentKey,
    PlainValidator(_incident_key),
    PlainSerializer(str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": KEY_PATTERN},
            ],
            "description": KEY_DESCRIPTION,
            "examples": ["K42", 42],
        }
    ),
]


def for_viewer(view: M) -> M:
    """Mask every number-like run in every text of a view, nested views included (in place).

    Field by field would miss the next field someone adds; every `str` of the view is scrubbed,
    while times, numbers and enums (the service's own values) stay as they are.
    """
    for name in type(view).model_fields:
        value = getattr(view, name)
        if isinstance(value, BaseModel):
            for_viewer(value)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for item in value:
                for_viewer(item)
        else:
            setattr(view, name, scrub_data(value))
    return view


class ErrorOut(BaseModel):
    """Every refusal of the API: one sentence that names the field or the thing refused."""

    detail: str


# What each refusal means; a route declares those it can answer (`responses=refusals(...)`), so
# the API document lists every status a client can get, each with the body it carries.
REFUSALS: dict[int, str] = {
    400: "a body that cannot be read at all (not UTF-8 text)",
    401: "no bearer token, or an unknown or revoked one",
    403: "the token's role is below the one this operation needs",
    404: "no such incident, alert or person; `detail` names it",
    409: "a clash with the roster (a phone already on it, a registration no longer pending)",
    413: "a body larger than this operation takes",
    422: "a parameter or field missing or malformed, or a decision refused; `detail` names it",
}


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these refusals, each an ErrorOut."""
    return {code: {"model": ErrorOut, "description": REFUSALS[code]} for code in codes}


class Readiness(BaseModel):
    status: str  # "ready" or "unavailable"
    detail: str | None = None  # what is not: the database, or the worker that stopped


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    direction: Direction
    provider: str | None
    provider_message_id: str | None
    sender: str | None
    recipient: str | None
    phone_valid: bool
    text: str
    purpose: Purpose | None
    status: MessageStatus
    intent: Intent | None
    outcome: Outcome | None
    language: str | None
    incident_id: int | None
    in_reply_to: int | None
    created_at: datetime
    reported_at: datetime | None
    sent_at: datetime | None
    attempts: int
    error: str | None


class AlertPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    incident_id: int | None
    message_id: int
    category: str
    severity: str
    place_name: str | None
    place_query: str | None
    lat: float | None
    lon: float | None
    precision: Precision
    language: str | None
    sender: str
    reported_at: datetime
    text: str
    details: dict[str, Any]
    confidence: float
    # Read with low confidence (a cry for help with no category, a word read by its stem): an
    # officer should read the text before trusting its category and place.
    needs_review: bool = False


class IncidentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str | None
    category: str
    severity: str
    status: IncidentStatus
    place_name: str | None
    lat: float | None
    lon: float | None
    precision: Precision
    first_reported_at: datetime
    last_reported_at: datetime
    report_count: int
    reporter_count: int
    escalation_level: int
    area: str | None = None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    closed_by: str | None
    closed_at: datetime | None


class Notification(BaseModel):
    """One SMS sent about an incident: who was told, when, and whether it arrived."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    recipient: str | None
    purpose: Purpose | None
    status: MessageStatus
    provider: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    attempts: int
    error: str | None


class HistoryEntry(BaseModel):
    """One step of an incident's audit log: forwarded, escalated, handed on, acknowledged, closed..."""

    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    action: str  # an AuditAction, kept a string: the log holds the actions of every past version
    details: dict[str, Any]


class IncidentDetail(IncidentPublic):
    reports: list[AlertPublic]
    needs_review: bool = False  # one of its reports still needs review
    notifications: list[Notification] = []
    history: list[HistoryEntry] = []


class MergeRequest(BaseModel):
    into: IncidentBodyKey


class MoveRequest(BaseModel):
    incident_id: IncidentBodyKey | None = None  # None: an incident of its own


class WebhookIn(BaseModel):
    """A URL to POST every incident change to; without `secret`, one is made and shown once."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000)
    secret: str | None = Field(None, max_length=200)
    description: str = Field("", max_length=200)


class WebhookOut(BaseModel):
    """A subscription as admins see it: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    description: str
    active: bool
    created_by: str
    created_at: datetime
    disabled_at: datetime | None


class WebhookCreated(WebhookOut):
    """A new subscription; `secret` is the one Kengele made (null when the caller gave its own)."""

    secret: str | None = None


class PersonIn(BaseModel):
    """A new roster entry: the columns of a roster CSV row (checked by the same rules)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    phone: str
    role: str  # checked by the roster's rules (in any case), as a CSV row's is
    language: str | None = None
    place: str | None = None
    lat: float | None = None
    lon: float | None = None
    level: int | None = None
    area: str | None = None
    active: bool = True
    shifts: str | None = None


class PersonPatch(BaseModel):
    """Fields to change; place, lat and lon are one location: giving any of them replaces all three."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    phone: str | None = None
    role: str | None = None
    language: str | None = None
    place: str | None = None
    lat: float | None = None
    lon: float | None = None
    level: int | None = None
    area: str | None = None
    active: bool | None = None
    shifts: str | None = None


class PersonOut(BaseModel):
    id: int
    name: str
    phone: str
    role: Role
    status: PersonStatus
    language: str | None
    place: str | None
    lat: float | None
    lon: float | None
    level: int | None
    area: str | None
    active: bool
    opted_out: bool
    demo: bool = Field(description="loaded by `kengele demo load`: its number is invented and never texted")
    shifts: str | None
    last_seen_at: datetime | None
    silent_since: datetime | None
    created_at: datetime
    updated_at: datetime


class RowErrorOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    row: int
    column: str
    reason: str


class RowResultOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    row: int
    outcome: str
    id: int | None


class ImportReport(BaseModel):
    """A roster import: nothing is applied while a row is bad, unless bad rows are skipped."""

    model_config = ConfigDict(from_attributes=True)

    applied: bool
    rows: int
    created: int
    updated: int
    unchanged: int
    invalid: int
    errors: list[RowErrorOut]
    results: list[RowResultOut]


class SilentFocalPoint(BaseModel):
    id: int
    name: str
    phone: str | None  # masked for viewers
    silent_since: datetime | None
    last_message_at: datetime | None


class AreaHealth(BaseModel):
    area: str  # "" = focal points with no area
    focal_points: int  # active, approved
    opted_out: int
    last_round_at: datetime | None
    asked_last_round: int
    answered_last_round: int
    silent: int
    silent_focal_points: list[SilentFocalPoint]


class NetworkHealth(BaseModel):
    areas: list[AreaHealth]
    focal_points: int
    silent: int
