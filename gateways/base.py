"""The one small interface every provider implements, the values it hands the core, and typed errors."""

from __future__ import annotations

import hmac
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar


class PayloadError(ValueError):
    """A webhook body the provider would never send: a field is missing or malformed."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


class SendError(Exception):
    """Sending failed. `retryable`: the same gateway may accept it later. `recipient`: the fault is
    the recipient's (invalid number, unsubscribed), so no other gateway can deliver it either."""

    def __init__(self, reason: str, *, retryable: bool, recipient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.recipient = recipient


class Form:
    """A form-encoded body as the provider sent it: every name, every value, in order."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def get(self, name: str) -> str | None:
        for key, value in self.pairs:
            if key == name:
                return value
        return None

    def require(self, name: str, *, allow_empty: bool = False, max_len: int | None = None) -> str:
        value = self.get(name)
        if value is None:
            raise PayloadError(name, "missing")
        if not allow_empty and not value.strip():
            raise PayloadError(name, "empty")
        if max_len is not None and len(value) > max_len:
            raise PayloadError(name, f"longer than {max_len} characters")
        return value

    def multi(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, value in self.pairs:
            out.setdefault(key, []).append(value)
        return out


@dataclass(frozen=True, slots=True)
class InboundSms:
    """One inbound SMS as a provider delivered it, before anything is made of it."""

    provider: str
    provider_message_id: str
    sender: str
    recipient: str | None
    text: str
    reported_at: datetime | None
    raw: dict[str, list[str]] = field(default_factory=dict)
    kind: str = "sms"  # or "beep": a call hung up on purpose, asking to be called back


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A delivery receipt mapped to our statuses (queued|sending|sent|delivered|failed)."""

    provider: str
    provider_message_id: str
    status: str
    provider_status: str
    error: str | None
    raw: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UssdRequest:
    """One step of a USSD session: `text` is every input so far joined by `*` ("" on the first screen)."""

    provider: str
    session_id: str
    service_code: str | None
    phone: str  # as the provider sent it; the service normalises it
    text: str
    network_code: str | None


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_message_id: str | None
    status: str = "sent"


class Gateway(ABC):
    """Sends SMS through one provider."""

    name: ClassVar[str]

    @abstractmethod
    def send(self, *, to: str, text: str, idempotency_key: str) -> SendResult:
        """Hand one SMS to the provider; raise SendError when it was not accepted."""


def secrets_equal(given: str, expected: str) -> bool:
    """Compare secrets in constant time (bytes, so non-ASCII input cannot raise)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))
