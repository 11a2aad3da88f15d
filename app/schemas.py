"""What the JSON API shows: public views of the models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    direction: str
    provider: str | None
    provider_message_id: str | None
    sender: str | None
    recipient: str | None
    phone_valid: bool
    text: str
    purpose: str | None
    status: str
    intent: str | None
    outcome: str | None
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
    precision: str
    language: str | None
    sender: str
    reported_at: datetime
    text: str
    details: dict[str, Any]
    confidence: float


class IncidentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str | None
    category: str
    severity: str
    status: str
    place_name: str | None
    lat: float | None
    lon: float | None
    precision: str
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
    purpose: str | None
    status: str
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
    action: str
    details: dict[str, Any]


class IncidentDetail(IncidentPublic):
    reports: list[AlertPublic]
    notifications: list[Notification] = []
    history: list[HistoryEntry] = []


class MergeRequest(BaseModel):
    into: int = Field(ge=1, le=2**63 - 1)


class MoveRequest(BaseModel):
    incident_id: int | None = Field(None, ge=1, le=2**63 - 1)  # None: an incident of its own
