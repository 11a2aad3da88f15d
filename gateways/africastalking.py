"""Africa's Talking: inbound SMS, delivery and USSD forms, the secret path segment, sending (SDK)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import requests
from africastalking.Service import AfricasTalkingException
from africastalking.SMS import SMSService

from gateways.base import (
    Answer,
    DeliveryReport,
    DeliveryStatus,
    Forbidden,
    Form,
    FormField,
    Gateway,
    InboundSms,
    MessageKind,
    PayloadError,
    Secret,
    SendError,
    SendResult,
    UssdRequest,
    Verifier,
    Webhook,
    WebhookKind,
    WebhookRequest,
    retry_after_seconds,
    secrets_equal,
)

NAME = "africastalking"

# Delivery report statuses -> ours.
STATUSES: Mapping[str, DeliveryStatus] = {
    "sent": DeliveryStatus.SENT,
    "submitted": DeliveryStatus.SENT,
    "buffered": DeliveryStatus.SENT,
    "success": DeliveryStatus.DELIVERED,
    "rejected": DeliveryStatus.FAILED,
    "failed": DeliveryStatus.FAILED,
}
# Per-recipient status codes of the send answer: accepted, or why not and whether retrying helps.
ACCEPTED_CODES = {100, 101, 102}
RETRYABLE_CODES = {405, 407, 500, 501, 502}  # balance, routing, provider errors
RECIPIENT_CODES = {403, 404, 406, 409}  # invalid or unsupported number, blacklisted, do-not-disturb


def parse_date(value: str) -> datetime:
    """Read AT's `date`: ISO 8601, or `YYYY-MM-DD HH:MM:SS` taken as UTC."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)  # also accepts the space-separated form
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_inbound(form: Form) -> InboundSms:
    """Read an inbound SMS callback; raise PayloadError naming the first missing or bad field."""
    message_id = form.require("id", max_len=100).strip()
    sender = form.require("from", max_len=40).strip()
    text = form.require("text", allow_empty=True)
    reported_at = None
    date = form.get("date")
    if date is not None and date.strip():
        try:
            reported_at = parse_date(date)
        except (ValueError, OverflowError):
            raise PayloadError("date", "not ISO 8601 or YYYY-MM-DD HH:MM:SS") from None
    return InboundSms(
        provider=NAME,
        provider_message_id=message_id,
        sender=sender,
        recipient=(form.get("to") or "").strip()[:40] or None,
        text=text,
        reported_at=reported_at,
        raw=form.multi(),
    )


REJECT_XML = '<?xml version="1.0" encoding="UTF-8"?><Response><Reject/></Response>'


def parse_voice(form: Form) -> InboundSms:
    """Read a voice callback: an incoming call, rejected, recorded as a beep (once per session)."""
    return InboundSms(
        provider=NAME,
        provider_message_id="call-" + form.require("sessionId", max_len=90).strip(),
        sender=form.require("callerNumber", max_len=40).strip(),
        recipient=(form.get("destinationNumber") or "").strip()[:40] or None,
        text="",
        reported_at=None,
        raw=form.multi(),
        kind=MessageKind.BEEP,
    )


def parse_ussd(form: Form) -> UssdRequest:
    """Read a USSD callback; raise PayloadError naming the first missing or bad field."""
    # Stored reports are `ussd-<sessionId>`, within the 100 characters of a provider message id.
    session_id = form.require("sessionId", max_len=90).strip()
    phone = form.require("phoneNumber", max_len=40).strip()
    text = form.require("text", allow_empty=True, max_len=1000).replace("\x00", "")
    return UssdRequest(
        provider=NAME,
        session_id=session_id,
        service_code=(form.get("serviceCode") or "").strip()[:40] or None,
        phone=phone,
        text=text.strip(),
        network_code=(form.get("networkCode") or "").strip()[:20] or None,
    )


def parse_delivery(form: Form) -> DeliveryReport:
    """Read a delivery report."""
    message_id = form.require("id", max_len=100).strip()
    provider_status = form.require("status", max_len=40).strip()
    status = STATUSES.get(provider_status.lower(), DeliveryStatus.UNKNOWN)
    reason = (form.get("failureReason") or "").strip()
    error = f"africastalking {provider_status}: {reason}" if status == DeliveryStatus.FAILED else None
    return DeliveryReport(NAME, message_id, status, provider_status, error, form.multi())


class AfricasTalkingSettings(Protocol):
    """What the Africa's Talking provider reads from the service's settings."""

    @property
    def at_username(self) -> str | None: ...
    @property
    def at_api_key(self) -> Secret | None: ...
    @property
    def at_sender(self) -> str | None: ...
    @property
    def at_webhook_secret(self) -> Secret | None: ...
    @property
    def at_api_base(self) -> str | None: ...
    @property
    def send_timeout(self) -> float: ...


class PathSecret(Verifier):
    """Africa's Talking does not sign its callbacks: a secret path segment proves the caller."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def verify_path(self, path_secret: str | None) -> None:
        if not secrets_equal(path_secret or "", self._secret):
            raise Forbidden("secret", "unknown webhook path secret")

    def verify(self, request: WebhookRequest) -> None:
        self.verify_path(request.path_secret)


class AfricasTalkingGateway(Gateway):
    """Africa's Talking: webhooks under a secret path segment; sends through the official SDK."""

    name = NAME
    title = "Africa's Talking"
    path_secret = True
    verification_setting = "KENGELE_AT_WEBHOOK_SECRET"
    webhooks: ClassVar[Mapping[str, Webhook]] = {
        "sms": Webhook(
            WebhookKind.MESSAGE,
            parse_inbound,
            Answer(200, b"", b"text/plain"),
            frozenset({"text"}),
            summary="inbound SMS",
            fields=(
                FormField("id", "the message's id", True, "ATXid_0123456789abcdef"),
                FormField("from", "the sender's number", True, "+243810000001"),
                FormField("text", "the text, as written (may be empty)", True, "A1 Djugu 20"),
                FormField("to", "the short code or number the SMS was sent to (ours)", example="12345"),
                FormField(
                    "date",
                    "when it was sent (ISO 8601, or YYYY-MM-DD HH:MM:SS as UTC): the report's time",
                    example="2026-11-20 07:30:00",
                ),
                FormField("linkId", "the session of a premium SMS (kept, not used)", example="lnk"),
                FormField("networkCode", "the sender's network (kept, not used)", example="63902"),
            ),
            answer_description="nothing: replies are sent apart, through the outbox",
        ),
        "delivery": Webhook(
            WebhookKind.RECEIPT,
            parse_delivery,
            Answer(200, b"", b"text/plain"),
            summary="delivery report",
            fields=(
                FormField(
                    "id", "the id Africa's Talking gave the sent message", True, "ATXid_0123456789abcdef"
                ),
                FormField(
                    "status",
                    "Africa's Talking's status: " + ", ".join(s.capitalize() for s in STATUSES),
                    True,
                    "Success",
                ),
                FormField("failureReason", "why a message failed", example="UserInBlacklist"),
            ),
            answer_description="nothing",
        ),
        # A call is stored as a beep (once per call session), then rejected: free for the caller.
        "voice": Webhook(
            WebhookKind.MESSAGE,
            parse_voice,
            Answer(200, REJECT_XML.encode(), b"application/xml"),
            summary="incoming call (a beep: recorded once per call, then rejected so it costs nothing)",
            fields=(
                FormField("sessionId", "the call's session", True, "ATVId_0123456789abcdef"),
                FormField("callerNumber", "the caller's number", True, "+243810000001"),
                FormField("destinationNumber", "the number called (ours)", example="+243990001000"),
            ),
            answer_description="voice XML rejecting the call",
        ),
        "ussd": Webhook(
            WebhookKind.USSD,
            parse_ussd,
            Answer(200, b"", b"text/plain; charset=utf-8"),
            frozenset({"text"}),
            summary="USSD session step",
            fields=(
                FormField("sessionId", "the USSD session", True, "ATUid_0123456789abcdef"),
                FormField("phoneNumber", "the caller's number", True, "+243810000001"),
                FormField(
                    "text", "every input of the session so far, joined by * (empty at first)", True, "1*2"
                ),
                FormField("serviceCode", "the code dialled", example="*384*123#"),
                FormField("networkCode", "the caller's network", example="63902"),
            ),
            answer_description="the next screen: `CON ` and a menu (the session goes on), or `END ` and text",
        ),
    }

    def __init__(
        self, *, username: str, api_key: str, sender: str | None, timeout: float, api_base: str | None = None
    ) -> None:
        self._username, self._api_key, self._sender = username, api_key, sender
        self._timeout = timeout
        self._base = api_base
        self._local = threading.local()

    @classmethod
    def verifier(cls, settings: AfricasTalkingSettings) -> Verifier | None:
        secret = settings.at_webhook_secret
        return PathSecret(secret.get_secret_value()) if secret is not None else None

    @classmethod
    def from_settings(cls, settings: AfricasTalkingSettings) -> AfricasTalkingGateway:
        if not (settings.at_username and settings.at_api_key):
            raise ValueError("africastalking gateway needs AT_USERNAME and AT_API_KEY")
        return cls(
            username=settings.at_username,
            api_key=settings.at_api_key.get_secret_value(),
            sender=settings.at_sender,
            timeout=settings.send_timeout,
            api_base=settings.at_api_base,
        )

    def _service(self) -> SMSService:
        service: SMSService | None = getattr(self._local, "service", None)
        if service is None:
            service = SMSService(self._username, self._api_key)
            if self._base:
                # The SDK has no public option for its host; this attribute is what it builds URLs from.
                service._baseUrl = self._base.rstrip("/") + "/version1"
            # The SDK raises on a non-2xx answer with its body only: the status and a 429's
            # Retry-After are kept here, from the one (private, static) function that POSTs.
            service._Service__make_post_request = self._keeping_post
            self._local.service = service
        return service

    def _keeping_post(self, url: str, headers: Any, data: Any, params: Any, **kwargs: Any) -> Any:
        response = requests.post(
            url=url, headers=headers, params=params, data=data, timeout=kwargs.get("timeout")
        )
        self._local.last = response
        return response

    def warm(self) -> None:
        """Build this thread's SDK service."""
        self._service()

    def _retry_after(self) -> float | None:
        """The Retry-After of this thread's last answer when it was a 429 or 503, else None."""
        last: requests.Response | None = getattr(self._local, "last", None)
        if last is None or last.status_code not in (429, 503):
            return None
        return retry_after_seconds(last.headers.get("Retry-After"))

    def send(self, *, to: str, text: str, idempotency_key: str, label: str = "") -> SendResult:
        try:
            answer: Any = self._service().send(
                text, [to], sender_id=self._sender, timeout=(3.05, self._timeout)
            )
        except ValueError as exc:  # the SDK refuses a number before sending
            raise SendError(
                f"africastalking refused the number: {exc}", retryable=False, recipient=True
            ) from exc
        except requests.Timeout as exc:
            raise SendError("africastalking timeout", retryable=True) from exc
        except requests.RequestException as exc:
            raise SendError(f"africastalking unreachable: {type(exc).__name__}", retryable=True) from exc
        except AfricasTalkingException as exc:
            # The SDK reports any non-2xx answer with its body only: a provider-side failure.
            raise SendError(
                f"africastalking error: {str(exc)[:200]}", retryable=True, retry_after=self._retry_after()
            ) from exc
        return _read_answer(answer)


def _read_answer(answer: Any) -> SendResult:
    if isinstance(answer, str | bytes):
        # The SDK parses JSON only for a Content-Type of exactly application/json.
        try:
            answer = json.loads(answer)
        except ValueError:
            raise SendError(
                f"africastalking answered unexpectedly: {str(answer)[:200]}", retryable=True
            ) from None
    try:
        recipient = answer["SMSMessageData"]["Recipients"][0]
        code = int(recipient["statusCode"])
    except (TypeError, KeyError, IndexError, ValueError):
        raise SendError(
            f"africastalking answered unexpectedly: {str(answer)[:200]}", retryable=True
        ) from None
    if code in ACCEPTED_CODES:
        return SendResult(provider_message_id=str(recipient.get("messageId") or "") or None)
    reason = f"africastalking {code} {recipient.get('status', '')}".strip()
    raise SendError(reason, retryable=code in RETRYABLE_CODES, recipient=code in RECIPIENT_CODES)
