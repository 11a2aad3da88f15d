"""The one small interface every provider implements, the values it hands the core, and typed errors.

A provider module declares, side by side: its webhooks (path -> parser and fixed answer), how a
webhook is verified as coming from it, how it is built from settings, and how it sends. The core
asks the registry (`gateways.PROVIDERS`) and never names a vendor.
"""

from __future__ import annotations

import hmac
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

# The path segment of a path-secret provider's webhooks when no secret is configured
# (development only: everywhere else such webhooks are not served at all).
NO_SECRET = "-"  # noqa: S105


class PayloadError(ValueError):
    """A webhook body the provider would never send: a field is missing, malformed or repeated."""

    def __init__(self, field_name: str, reason: str, *, status: int = 422) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason
        self.status = status  # 422 for a missing or bad field, 400 for a malformed form


class Forbidden(Exception):
    """A webhook that is not provably the provider's (bad signature, unknown path secret)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # a short label for metrics: "signature", "secret"
        self.detail = detail


class SendError(Exception):
    """Sending failed. `retryable`: the same gateway may accept it later. `recipient`: the fault is
    the recipient's (invalid number, unsubscribed), so no other gateway can deliver it either.
    `retry_after`: seconds the provider asked us to wait before sending anything more through it
    (a 429's Retry-After), or None."""

    def __init__(
        self, reason: str, *, retryable: bool, recipient: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.recipient = recipient
        self.retry_after = retry_after


# The longest Retry-After obeyed: a provider's typo ("86400") must not stop alerts for a day.
MAX_RETRY_AFTER = 600.0


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a Retry-After header (delay-seconds or an HTTP date) as seconds from now; None if bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class Form:
    """A form-encoded body as the provider sent it: every name, every value, in order.

    A field that a parser reads must appear once: a signature covers a field's values sorted, so
    `Body=HELLO&Body=A1 Djugu 99` re-sent with its values swapped would still verify, and which
    value is "the" body would be ours to guess. Reading a repeated field is refused (400).
    """

    __slots__ = ("_values", "pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)
        self._values: dict[str, list[str]] = {}
        for key, value in self.pairs:
            self._values.setdefault(key, []).append(value)

    def get(self, name: str) -> str | None:
        values = self._values.get(name)
        if values is None:
            return None
        if len(values) > 1:
            raise PayloadError(name, f"given {len(values)} times; expected once", status=400)
        return values[0]

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
        return {key: list(values) for key, values in self._values.items()}


class MessageKind(StrEnum):
    SMS = "sms"
    BEEP = "beep"  # a call hung up on purpose, asking to be called back


class DeliveryStatus(StrEnum):
    """Where a provider says a sent SMS is, in our words: each but UNKNOWN is one of the core's
    message statuses (its tests hold the two lists together)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"  # a provider status no table maps: recorded, it changes nothing


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
    kind: MessageKind = MessageKind.SMS


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A delivery receipt mapped to our statuses."""

    provider: str
    provider_message_id: str
    status: DeliveryStatus
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
    status: DeliveryStatus = DeliveryStatus.SENT


class Secret(Protocol):
    """A secret value as settings hold it (pydantic's SecretStr): never printed by accident."""

    def get_secret_value(self) -> str: ...


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What a provider's verification sees of one webhook request."""

    url: str  # as the provider called it: the public URL, the path and the query string
    headers: Mapping[str, str]  # names in lower case
    form: Form
    path_secret: str | None  # the secret path segment, for providers that use one


class Verifier(ABC):
    """Proves a webhook request came from the provider."""

    def verify_path(self, path_secret: str | None) -> None:  # noqa: B027  (most need the body)
        """Refuse a request by its path alone, before its body is read (raise Forbidden)."""

    @abstractmethod
    def verify(self, request: WebhookRequest) -> None:
        """Return when the whole request is the provider's; raise Forbidden when it is not."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP answer a provider expects from a webhook once its content is handled."""

    status: int
    body: bytes
    content_type: bytes


class WebhookKind(StrEnum):
    MESSAGE = "message"  # an inbound SMS or a beep: parsed to InboundSms, stored by intake
    RECEIPT = "receipt"  # a delivery report: parsed to DeliveryReport
    USSD = "ussd"  # one step of a USSD session: parsed to UssdRequest, answered with a screen


Parsed = InboundSms | DeliveryReport | UssdRequest


@dataclass(frozen=True, slots=True)
class FormField:
    """One field of a webhook's form as the provider names it: what the API document shows.

    `required` means the parser refuses the form without it; `example` is a value it accepts.
    """

    name: str
    description: str
    required: bool = False
    example: str = ""


@dataclass(frozen=True, slots=True)
class Webhook:
    """One webhook of a provider: how to read its form and what to answer when it is handled."""

    kind: WebhookKind
    parse: Callable[[Form], Parsed]
    answer: Answer  # for USSD: the status and content type; the body is the next screen
    # Fields holding what a person wrote: a NUL there is replaced, anywhere else it is refused.
    text_fields: frozenset[str] = frozenset()
    # For the API document: what the provider posts it for, the fields the parser reads (the
    # provider's names), and what the answer's body is.
    summary: str = ""
    fields: tuple[FormField, ...] = ()
    answer_description: str = ""


class Gateway(ABC):
    """One provider: its webhooks, how they are verified, and sending SMS through it."""

    name: ClassVar[str]
    # Webhook path (after /webhooks/<name>/) -> what it is; a provider with none has no routes.
    webhooks: ClassVar[Mapping[str, Webhook]] = {}
    # True: the routes are /webhooks/<name>/<secret>/<path>, the secret proving the caller.
    path_secret: ClassVar[bool] = False
    # The setting that configures the verification (named in errors and warnings).
    verification_setting: ClassVar[str] = ""
    # For the API document: the provider's name as people write it, and the header (if any) that
    # carries its webhooks' signature.
    title: ClassVar[str] = ""
    signature_header: ClassVar[str | None] = None
    # False for a gateway that shows a person what it would send and texts no one (the console):
    # it is handed a label saying who each SMS is for, and invented numbers (the demo network's)
    # may be loaded only where every gateway is such a one.
    reaches_phones: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def verifier(cls, settings: Any) -> Verifier | None:
        """The check of this provider's webhooks from settings; None when it is not configured."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Any) -> Gateway:
        """Build the sender from settings; raise ValueError naming what is missing."""

    def warm(self) -> None:  # noqa: B027  (optional hook: most gateways need none)
        """Make this thread ready to send at once (an SDK's client built), before waiting for a slot."""

    @abstractmethod
    def send(self, *, to: str, text: str, idempotency_key: str, label: str = "") -> SendResult:
        """Hand one SMS to the provider; raise SendError when it was not accepted.

        `label` says who `to` is, in words and never a number ("officer Capt. Dufour, level 1,
        Djugu; alert_forward"), for a gateway that shows a person what it sends (`reaches_phones`
        False); the others are given "".
        """


def secrets_equal(given: str, expected: str) -> bool:
    """Compare secrets in constant time (bytes, so non-ASCII input cannot raise)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))
