"""Twilio: inbound SMS form, signature check, status callbacks, and sending through the official SDK."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

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
    Verifier,
    Webhook,
    WebhookKind,
    WebhookRequest,
    retry_after_seconds,
)

NAME = "twilio"
SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
SID = "SM0123456789abcdef0123456789abcdef"  # a message id as Twilio writes them (the docs' example)
# Refusing the call costs the caller nothing: that is what a "beep" relies on.
REJECT_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Reject/></Response>'

# Twilio's message statuses -> ours. Anything unknown is recorded but changes nothing.
STATUSES: Mapping[str, DeliveryStatus] = {
    "accepted": DeliveryStatus.QUEUED,
    "scheduled": DeliveryStatus.QUEUED,
    "queued": DeliveryStatus.QUEUED,
    "sending": DeliveryStatus.SENDING,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,
    "partially_delivered": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.FAILED,
    "failed": DeliveryStatus.FAILED,
    "canceled": DeliveryStatus.FAILED,
}
_HASHES = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
# Error codes about the recipient: no other gateway can deliver to them either.
RECIPIENT_CODES = {21211, 21214, 21217, 21401, 21407, 21610, 21614}


class _HeaderKeepingClient(TwilioHttpClient):
    """The SDK's HTTP client, keeping its last answer: a 429's Retry-After is only in the headers."""

    last: Response | None = None

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self.last = super().request(*args, **kwargs)
        return self.last


def parse_inbound(form: Form) -> InboundSms:
    """Read an inbound SMS webhook; raise PayloadError naming the first missing or bad field."""
    sid = form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid")
    if sid is None or not sid.strip():
        raise PayloadError("MessageSid", "missing")
    if len(sid) > 100:
        raise PayloadError("MessageSid", "longer than 100 characters")
    return InboundSms(
        provider=NAME,
        provider_message_id=sid.strip(),
        sender=form.require("From", max_len=40).strip(),
        recipient=(form.get("To") or "").strip()[:40] or None,
        text=form.require("Body", allow_empty=True),
        reported_at=None,  # Twilio sends no date: the message is placed at its arrival
        raw=form.multi(),
    )


def parse_voice(form: Form) -> InboundSms:
    """Read a voice webhook: an incoming call, rejected, recorded as a beep."""
    sid = form.require("CallSid", max_len=100).strip()
    return InboundSms(
        provider=NAME,
        provider_message_id=sid,
        sender=form.require("From", max_len=40).strip(),
        recipient=(form.get("To") or "").strip()[:40] or None,
        text="",
        reported_at=None,
        raw=form.multi(),
        kind=MessageKind.BEEP,
    )


def parse_status(form: Form) -> DeliveryReport:
    """Read a status callback."""
    sid = form.require("MessageSid", max_len=100).strip()
    provider_status = form.require("MessageStatus", max_len=40).strip().lower()
    code = (form.get("ErrorCode") or "").strip()
    error = f"twilio error {code}" if code and code != "0" else None
    status = STATUSES.get(provider_status, DeliveryStatus.UNKNOWN)
    if status == DeliveryStatus.FAILED and error is None:
        error = f"twilio status {provider_status}"
    return DeliveryReport(NAME, sid, status, provider_status, error, form.multi())


def compute_signature(
    token: str, url: str, params: dict[str, list[str]], algorithm: str = "HMAC_SHA1"
) -> str:
    """Sign as Twilio does: URL, then each parameter name and value in sorted order."""
    parts = [url]
    for name in sorted(params):
        for value in sorted(set(params[name])):
            parts.append(name + value)
    digest = hmac.new(token.encode(), "".join(parts).encode("utf-8"), _HASHES[algorithm]).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> tuple[str, str]:
    """The URL without its port and with the scheme's default port, as Twilio may sign either.

    The host is kept exactly as written (urlsplit's `hostname` would lowercase it).
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.port is not None:
        netloc = netloc.rsplit(":", 1)[0]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    without = urlunsplit(parts._replace(netloc=netloc))
    with_port = urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))
    return without, with_port


def signature_valid(
    *, token: str, url: str, params: dict[str, list[str]], signature: str, settings_header: str | None = None
) -> bool:
    """Check X-Twilio-Signature against the URL with and without the default port, in constant time."""
    algorithm = "HMAC_SHA1"
    for part in (settings_header or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "algorithm" and value.strip():
            algorithm = value.strip().upper()
    if algorithm not in _HASHES or not signature:
        return False
    given = signature.strip().encode("utf-8", "surrogatepass")
    ok = False
    for variant in _url_variants(url):
        expected = compute_signature(token, variant, params, algorithm).encode()
        ok |= hmac.compare_digest(given, expected)
    return ok


def twiml_message(text: str) -> str:
    """A TwiML answer carrying one reply."""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(text)}</Message></Response>'


class TwilioSettings(Protocol):
    """What the Twilio provider reads from the service's settings."""

    @property
    def twilio_account_sid(self) -> str | None: ...
    @property
    def twilio_auth_token(self) -> Secret | None: ...
    @property
    def twilio_from(self) -> str | None: ...
    @property
    def twilio_webhook_key(self) -> Secret | None: ...
    @property
    def twilio_api_base(self) -> str | None: ...
    @property
    def send_timeout(self) -> float: ...
    @property
    def public_url(self) -> str: ...


class SignatureCheck(Verifier):
    """X-Twilio-Signature with the auth token, or with the SharedKey secret when Twilio says so."""

    def __init__(self, *, auth_token: str, shared_key: str | None = None) -> None:
        self._token = auth_token
        self._shared_key = shared_key

    def verify(self, request: WebhookRequest) -> None:
        signature_settings = request.headers.get(SIGNATURE_SETTINGS_HEADER)
        key = self._shared_key if signature_settings and self._shared_key else self._token
        valid = signature_valid(
            token=key,
            url=request.url,
            params=request.form.multi(),
            signature=request.headers.get(SIGNATURE_HEADER, ""),
            settings_header=signature_settings,
        )
        if not valid:
            raise Forbidden("signature", "X-Twilio-Signature does not match")


class TwilioGateway(Gateway):
    """Twilio: webhooks signed with the auth token; sends through the official `twilio` SDK."""

    name = NAME
    title = "Twilio"
    verification_setting = "TWILIO_AUTH_TOKEN"
    signature_header = "X-Twilio-Signature"
    webhooks: ClassVar[Mapping[str, Webhook]] = {
        "sms": Webhook(
            WebhookKind.MESSAGE,
            parse_inbound,
            Answer(200, EMPTY_TWIML.encode(), b"text/xml"),
            frozenset({"Body"}),
            summary="inbound SMS",
            fields=(
                FormField("MessageSid", "the message's id (SmsMessageSid or SmsSid when absent)", True, SID),
                FormField("From", "the sender's number, E.164", True, "+243810000001"),
                FormField("Body", "the text, as written (may be empty)", True, "A1 Djugu 20"),
                FormField("To", "the number the SMS was sent to (ours)", example="+243990001000"),
                FormField("SmsMessageSid", "older name of MessageSid", example=SID),
                FormField("SmsSid", "older name of MessageSid", example=SID),
            ),
            answer_description="empty TwiML: replies are sent apart, through the outbox",
        ),
        # A call to the alert number is stored as a beep, then rejected so it costs the caller nothing.
        "voice": Webhook(
            WebhookKind.MESSAGE,
            parse_voice,
            Answer(200, REJECT_TWIML.encode(), b"text/xml"),
            summary="incoming call (a beep: recorded, then rejected so it costs the caller nothing)",
            fields=(
                FormField("CallSid", "the call's id", True, "CA" + SID[2:]),
                FormField("From", "the caller's number, E.164", True, "+243810000001"),
                FormField("To", "the number called (ours)", example="+243990001000"),
            ),
            answer_description="TwiML rejecting the call",
        ),
        "status": Webhook(
            WebhookKind.RECEIPT,
            parse_status,
            Answer(204, b"", b"text/plain"),
            summary="delivery status callback",
            fields=(
                FormField("MessageSid", "the id Twilio gave the sent message", True, SID),
                FormField("MessageStatus", "Twilio's status: " + ", ".join(STATUSES), True, "delivered"),
                FormField("ErrorCode", "Twilio's error code of a failed message", example="30003"),
            ),
            answer_description="nothing",
        ),
    }

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        sender: str,
        timeout: float,
        status_callback: str | None,
        api_base: str | None = None,
    ) -> None:
        self._sid, self._token, self._from = account_sid, auth_token, sender
        self._timeout = timeout
        self._callback = status_callback
        self._base = api_base
        self._local = threading.local()

    @classmethod
    def verifier(cls, settings: TwilioSettings) -> Verifier | None:
        if settings.twilio_auth_token is None:
            return None
        shared = settings.twilio_webhook_key
        return SignatureCheck(
            auth_token=settings.twilio_auth_token.get_secret_value(),
            shared_key=shared.get_secret_value() if shared is not None else None,
        )

    @classmethod
    def from_settings(cls, settings: TwilioSettings) -> TwilioGateway:
        if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from):
            raise ValueError("twilio gateway needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM")
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            sender=settings.twilio_from,
            timeout=settings.send_timeout,
            status_callback=settings.public_url + "/webhooks/twilio/status",
            api_base=settings.twilio_api_base,
        )

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = Client(self._sid, self._token, http_client=_HeaderKeepingClient(timeout=self._timeout))
            if self._base:
                client.api.base_url = self._base.rstrip("/")
            self._local.client = client
        return client

    def warm(self) -> None:
        """Build this thread's client and load the SDK's lazily imported message API."""
        _ = self._client().api.v2010.account.messages

    def _retry_after(self) -> float | None:
        """The Retry-After of this thread's last answer (TwilioRestException carries no headers)."""
        http = self._client().http_client
        last = http.last if isinstance(http, _HeaderKeepingClient) else None
        return retry_after_seconds(last.headers.get("Retry-After")) if last and last.headers else None

    def send(self, *, to: str, text: str, idempotency_key: str, label: str = "") -> SendResult:
        kwargs = {"to": to, "from_": self._from, "body": text}
        if self._callback:
            kwargs["status_callback"] = self._callback
        try:
            message = self._client().messages.create(**kwargs)
        except TwilioRestException as exc:
            # A 400 is refused again on a retry; credentials, rate limits and server errors recover.
            retryable = exc.status in (401, 403, 404, 408, 429) or exc.status >= 500
            raise SendError(
                f"twilio {exc.status} code {exc.code}: {exc.msg}",
                retryable=retryable,
                recipient=exc.code in RECIPIENT_CODES,
                retry_after=self._retry_after() if exc.status in (429, 503) else None,
            ) from exc
        except requests.Timeout as exc:
            raise SendError("twilio timeout", retryable=True) from exc
        except (requests.RequestException, TwilioException) as exc:
            raise SendError(f"twilio unreachable: {type(exc).__name__}", retryable=True) from exc
        return SendResult(
            provider_message_id=message.sid, status=STATUSES.get(message.status or "", DeliveryStatus.SENT)
        )
