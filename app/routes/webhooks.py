"""Provider webhooks: read the form, check who sent it, hand it to intake, answer fast.

This is the hottest path of the service, so it is a plain ASGI middleware that answers
`/webhooks/...` itself instead of going through the framework's routing, dependency injection
and middleware stack (which cost more than everything below on a 2-core machine; see bench/).
Every other path goes on to the FastAPI application.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from app.db import transaction
from app.metrics import WEBHOOK_REJECTED
from app.services import ussd
from app.services.outbox import record_delivery
from app.services.runtime import Runtime
from gateways import africastalking, twilio
from gateways.base import DeliveryReport, Form, PayloadError, secrets_equal

log = logging.getLogger("kengele.webhooks")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFIX = "/webhooks/"
MAX_BODY = 64 * 1024
MAX_FIELDS = 200
FORM_TYPE = "application/x-www-form-urlencoded"
TEXT_FIELDS = {"Body", "text"}
AT_ROUTES = ("sms", "delivery", "voice", "ussd")


class Refused(Exception):
    """A webhook request answered with a 4xx and not processed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_form(body: bytes, content_type: str) -> Form:
    """The body as a form, refusing what no provider sends: not form-encoded, not UTF-8."""
    if body and content_type.split(";")[0].strip().lower() != FORM_TYPE:
        raise Refused(415, f"body must be {FORM_TYPE}")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS
        )
    except UnicodeDecodeError:
        raise Refused(400, f"{_field_not_utf8(body)}: not valid UTF-8") from None
    except ValueError as exc:  # too many fields
        raise Refused(400, f"malformed form: {exc}") from None
    for name, value in pairs:
        # NUL cannot be stored by PostgreSQL; in a message text it is replaced, elsewhere refused.
        if "\x00" in name or ("\x00" in value and name not in TEXT_FIELDS):
            raise Refused(400, f"{name.replace(chr(0), '?')}: contains a NUL character")
    return Form(pairs)


def _field_not_utf8(body: bytes) -> str:
    """The name of the first field whose value is not UTF-8 once percent-decoded."""
    for part in body.split(b"&"):
        name, _, value = part.partition(b"=")
        try:
            unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8")
            unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace") or "body"
    return "body"


async def read_body(scope: Scope, receive: Receive) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
            raise Refused(413, f"body larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refused(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise Refused(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


async def respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, detail: str) -> None:
    await respond(send, status, json.dumps({"detail": detail}).encode(), b"application/json")


class Webhooks:
    """ASGI middleware answering the provider webhooks; everything else goes to `app`."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.routes: dict[str, Callable[[Scope, Form], Awaitable[tuple[int, bytes, bytes]]]] = {
            "twilio/sms": self.twilio_sms,
            "twilio/status": self.twilio_status,
            "africastalking/sms": self.at_sms,
            "africastalking/delivery": self.at_delivery,
            "twilio/voice": self.twilio_voice,
            "africastalking/voice": self.at_voice,
            "africastalking/ussd": self.at_ussd,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        route, secret = self.route(path[len(PREFIX) :])
        if route is None:
            await respond_json(send, 404, "no such webhook")
            return
        if scope["method"] != "POST":
            await respond_json(send, 405, "webhooks take POST")
            return
        try:
            if secret is not None:
                self.check_at_secret(secret)
            body = await read_body(scope, receive)
            form = parse_form(body, header(scope, b"content-type") or "")
            status, payload, ctype = await self.routes[route](scope, form)
        except Refused as exc:
            await respond_json(send, exc.status, exc.detail)
            return
        except PayloadError as exc:
            WEBHOOK_REJECTED.labels(route.split("/")[0], "payload").inc()
            await respond_json(send, 422, str(exc))
            return
        await respond(send, status, payload, ctype)

    @staticmethod
    def route(rest: str) -> tuple[str | None, str | None]:
        """`twilio/sms` -> ("twilio/sms", None); `africastalking/<secret>/sms` -> (..., secret)."""
        parts = rest.split("/")
        if len(parts) == 2 and parts[0] == "twilio" and parts[1] in ("sms", "status", "voice"):
            return rest, None
        if len(parts) == 3 and parts[0] == "africastalking" and parts[2] in AT_ROUTES:
            return f"africastalking/{parts[2]}", parts[1]
        return None, None

    # -- authentication ------------------------------------------------------------------------
    def check_twilio(self, scope: Scope, form: Form) -> None:
        settings = self.runtime.settings
        signature_settings = header(scope, twilio.SIGNATURE_SETTINGS_HEADER.encode())
        key = settings.twilio_auth_token
        if signature_settings and settings.twilio_webhook_key is not None:
            key = settings.twilio_webhook_key  # signed with the account's SharedKey secret
        if key is None:
            return
        query = scope.get("query_string", b"").decode("latin-1")
        url = settings.public_url + scope["path"] + (f"?{query}" if query else "")
        valid = twilio.signature_valid(
            token=key.get_secret_value(),
            url=url,
            params=form.multi(),
            signature=header(scope, twilio.SIGNATURE_HEADER.encode()) or "",
            settings_header=signature_settings,
        )
        if not valid:
            WEBHOOK_REJECTED.labels("twilio", "signature").inc()
            raise Refused(403, "X-Twilio-Signature does not match")

    def check_at_secret(self, secret: str) -> None:
        configured = self.runtime.settings.at_webhook_secret
        expected = configured.get_secret_value() if configured is not None else africastalking.NO_SECRET
        if not secrets_equal(secret, expected):
            WEBHOOK_REJECTED.labels("africastalking", "secret").inc()
            raise Refused(403, "unknown webhook path secret")

    # -- handlers --------------------------------------------------------------------------------
    async def twilio_sms(self, scope: Scope, form: Form) -> tuple[int, bytes, bytes]:
        """Inbound SMS from Twilio; empty TwiML once the message is committed."""
        self.check_twilio(scope, form)
        await self.runtime.writer.store(twilio.parse_inbound(form))
        return 200, twilio.EMPTY_TWIML.encode(), b"text/xml"

    async def twilio_voice(self, scope: Scope, form: Form) -> tuple[int, bytes, bytes]:
        """A call to the alert number: stored as a beep, then rejected so it costs the caller nothing."""
        self.check_twilio(scope, form)
        await self.runtime.writer.store(twilio.parse_voice(form))
        return 200, twilio.REJECT_TWIML.encode(), b"text/xml"

    async def at_voice(self, scope: Scope, form: Form) -> tuple[int, bytes, bytes]:
        """Africa's Talking voice callback: the same, once per call session."""
        await self.runtime.writer.store(africastalking.parse_voice(form))
        return 200, africastalking.REJECT_XML.encode(), b"application/xml"

    async def twilio_status(self, scope: Scope, form: Form) -> tuple[int, bytes, bytes]:
        """Twilio's delivery status callback."""
        self.check_twilio(scope, form)
        await asyncio.to_thread(self.record, twilio.parse_status(form))
        return 204, b"", b"text/plain"

    async def at_sms(self, scope: Scope, form: Form) -> tuple[int, bytes, bytes]:
        """Inbound SMS from Africa's Talking."""
        await self.runtime.writer.store(africastalking.parse_inbound(form))
        return 200, b"", b"text/plain"

    async def at_ussd(self, scope: Scope, form: Form) -> tuple[int, bytes, bytes]:
        """One step of an Africa's Talking USSD session: the next screen, `CON ...` or `END ...`."""
        request = africastalking.parse_ussd(form)
        text = await ussd.answer(runtime=self.runtime, request=request)
        return 200, text.encode(), b"text/plain; charset=utf-8"

    async def at_delivery(self, scope: Scope, form: Form) -> tuple[int, bytes, bytes]:
        """Africa's Talking delivery report."""
        await asyncio.to_thread(self.record, africastalking.parse_delivery(form))
        return 200, b"", b"text/plain"

    def record(self, report: DeliveryReport) -> None:
        with transaction(self.runtime.factory) as session:
            message = record_delivery(session=session, report=report, gateways=len(self.runtime.gateways))
            retry = message is not None and message.status == "queued"
        if retry:  # a failed receipt: the next gateway tries it now
            self.runtime.dispatcher.notify()
