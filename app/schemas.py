"""What the JSON API shows: public views of the models."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

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
