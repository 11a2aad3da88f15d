"""Provider webhooks: a loop over the registry. Read the form, verify it, hand it on, answer fast.

Each provider in `gateways/` declares its webhooks and how they are verified; this module never
names a vendor. A provider's webhooks are served only when its verification is configured; in
`development` only, an unconfigured provider's webhooks are served unchecked (for `make run`),
and named in one warning at start-up. Anywhere else they answer 404, as if they did not exist.

This is the hottest path of the service, so it is a plain ASGI middleware that answers
`/webhooks/...` itself instead of going through the framework's routing, dependency injection
and middleware stack (which cost more than everything below on a 2-core machine; see bench/).
Every other path goes on to the FastAPI application. Not being routes, the webhooks are put in
the OpenAPI document from the same registry (`openapi_paths`): each provider's own field names.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import gateways
from app.config import Settings
from app.metrics import WEBHOOK_REJECTED
from app.outage import RETRY_AFTER, unavailable
from app.routes.headers import SECURITY_HEADERS
from app.services import ussd
from app.services.outbox import receive_receipt
from app.services.runtime import Runtime
from gateways.base import (
    NO_SECRET,
    Answer,
    DeliveryReport,
    Forbidden,
    Form,
    Gateway,
    InboundSms,
    PayloadError,
    UssdRequest,
    Verifier,
    Webhook,
    WebhookKind,
    WebhookRequest,
    secrets_equal,
)

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


class Refused(Exception):
    """A webhook request answered with a 4xx and not processed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_form(body: bytes, content_type: str, *, text_fields: frozenset[str] = frozenset()) -> Form:
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
        if "\x00" in name or ("\x00" in value and name not in text_fields):
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
            return str(value.decode("latin-1"))
    return None


async def respond(
    send: Send, status: int, body: bytes, content_type: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, detail: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await respond(send, status, json.dumps({"detail": detail}).encode(), b"application/json", extra)


UNAVAILABLE_DETAIL = "database unavailable: nothing was kept, retry later"
RETRY_HEADERS = ((b"retry-after", str(RETRY_AFTER).encode()),)


class Unchecked(Verifier):
    """Development only: a provider without its verification configured is served unchecked.

    A path-secret provider's path then carries `-` in place of the secret, so a configured
    secret is never mistaken for an unconfigured one.
    """

    def __init__(self, *, path_secret: bool) -> None:
        self.path_secret = path_secret

    def verify_path(self, path_secret: str | None) -> None:
        if self.path_secret and not secrets_equal(path_secret or "", NO_SECRET):
            raise Forbidden("secret", "unknown webhook path secret")

    def verify(self, request: WebhookRequest) -> None:
        self.verify_path(request.path_secret)


@dataclass(frozen=True, slots=True)
class Route:
    """One served webhook: whose it is, what it is, and the check every request passes first."""

    provider: str
    path_secret: bool
    webhook: Webhook
    verifier: Verifier


def build_routes(settings: Settings) -> dict[tuple[str, str], Route]:
    """The webhooks this process serves, by (provider, path): only those it can verify."""
    routes: dict[tuple[str, str], Route] = {}
    unchecked: list[str] = []
    for name, provider in gateways.PROVIDERS.items():
        if not provider.webhooks:
            continue
        verifier = provider.verifier(settings)
        if verifier is None:
            if settings.env != "development":
                continue  # no route without its check: 404, nothing stored
            verifier = Unchecked(path_secret=provider.path_secret)
            segment = f"{NO_SECRET}/" if provider.path_secret else ""
            unchecked += [f"{PREFIX}{name}/{segment}{path}" for path in provider.webhooks]
        for path, webhook in provider.webhooks.items():
            routes[(name, path)] = Route(name, provider.path_secret, webhook, verifier)
    if unchecked:
        log.warning(
            "development: webhooks served WITHOUT verification (anyone can post to them)",
            extra={"routes": unchecked},
        )
    return routes


class Webhooks:
    """ASGI middleware answering the provider webhooks; everything else goes to `app`."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.routes = build_routes(runtime.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        route, secret = self.match(path[len(PREFIX) :])
        if route is None:
            await respond_json(send, 404, "no such webhook")
            return
        if scope["method"] != "POST":
            await respond_json(send, 405, "webhooks take POST")
            return
        try:
            route.verifier.verify_path(secret)  # a wrong path secret is refused unread
            body = await read_body(scope, receive)
            form = parse_form(
                body, header(scope, b"content-type") or "", text_fields=route.webhook.text_fields
            )
            route.verifier.verify(self.request(scope, form, secret))
            answer = await self.handle(route, form)
        except Forbidden as exc:
            WEBHOOK_REJECTED.labels(route.provider, exc.reason).inc()
            await respond_json(send, 403, exc.detail)
            return
        except Refused as exc:
            await respond_json(send, exc.status, exc.detail)
            return
        except PayloadError as exc:
            WEBHOOK_REJECTED.labels(route.provider, "payload").inc()
            await respond_json(send, exc.status, str(exc))
            return
        except Exception as exc:
            if not unavailable(exc):
                raise  # a bug: 500 with its traceback
            # Never a 2xx for what was not committed: the provider keeps the message and may retry.
            WEBHOOK_REJECTED.labels(route.provider, "database").inc()
            self.runtime.signals.database.failed(where=f"webhook {route.provider}", exc=exc)
            await respond_json(send, 503, UNAVAILABLE_DETAIL, RETRY_HEADERS)
            return
        await respond(send, answer.status, answer.body, answer.content_type)

    def match(self, rest: str) -> tuple[Route | None, str | None]:
        """`twilio/sms` -> (route, None); `africastalking/<secret>/sms` -> (route, secret)."""
        parts = rest.split("/")
        provider = gateways.PROVIDERS.get(parts[0])
        if provider is None or len(parts) != (3 if provider.path_secret else 2):
            return None, None
        route = self.routes.get((parts[0], parts[-1]))
        return route, parts[1] if provider.path_secret else None

    def request(self, scope: Scope, form: Form, secret: str | None) -> WebhookRequest:
        """The request as the provider signed it: our public URL, the path and the query."""
        query = scope.get("query_string", b"").decode("latin-1")
        url = self.runtime.settings.public_url + scope["path"] + (f"?{query}" if query else "")
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        return WebhookRequest(url, headers, form, secret)

    async def handle(self, route: Route, form: Form) -> Answer:
        """Hand the parsed webhook to the service that owns it; the answer the provider expects."""
        webhook = route.webhook
        parsed = webhook.parse(form)
        answer = webhook.answer
        if webhook.kind is WebhookKind.MESSAGE and isinstance(parsed, InboundSms):
            await self.runtime.writer.store(parsed)  # committed before the 2xx
        elif webhook.kind is WebhookKind.RECEIPT and isinstance(parsed, DeliveryReport):
            await asyncio.to_thread(self.receipt, parsed)
        elif webhook.kind is WebhookKind.USSD and isinstance(parsed, UssdRequest):
            screen = await ussd.answer(runtime=self.runtime, request=parsed)
            answer = Answer(answer.status, screen.encode(), answer.content_type)
        else:  # a provider module declaring a webhook wrongly: never a 2xx for what was not kept
            raise TypeError(f"{route.provider}: a {webhook.kind} webhook parsed to {type(parsed).__name__}")
        return answer

    def receipt(self, report: DeliveryReport) -> None:
        runtime = self.runtime
        if receive_receipt(factory=runtime.factory, report=report, gateways=len(runtime.gateways)):
            runtime.dispatcher.notify()  # a failed receipt: the next gateway tries it now


# -- the API document ----------------------------------------------------------------------------
TAG = "webhooks"
TAG_DESCRIPTION = (
    "Called by the SMS/USSD providers, not by API clients: set these URLs (after KENGELE_PUBLIC_URL) "
    "in the provider's console. Form-encoded, with the provider's own field names."
)
ERRORS: dict[int, str] = {
    400: "a malformed form: a field given twice, not UTF-8, a NUL character",
    403: "not the provider's: a bad signature or path secret (nothing is kept)",
    404: "no such webhook, or its verification is not configured (outside development)",
    413: f"a body larger than {MAX_BODY} bytes",
    415: f"a body that is not {FORM_TYPE}",
    422: "a required field missing or malformed; `detail` names it",
    503: f"the database is unavailable: nothing was kept; retry (`Retry-After: {RETRY_AFTER}`)",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_DETAIL = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
_HANDLING: dict[WebhookKind, str] = {
    WebhookKind.MESSAGE: (
        "Answered 2xx once the message is committed; the provider's retry of the same id is answered "
        "2xx and changes nothing."
    ),
    WebhookKind.RECEIPT: "Updates the status of the message it is about.",
    WebhookKind.USSD: (
        "Answered with the next screen of the session. While the database is unavailable, with "
        "200 and an `END` screen asking the caller to dial again (never a 503: Africa's Talking "
        "would end the session with only the network's error)."
    ),
}


def openapi_paths() -> dict[str, Any]:
    """Describe every provider's webhooks for the OpenAPI document; a path secret only by its name.

    The document is served to anyone: it says which setting verifies each webhook, never whether
    this process has it (that would tell a caller which webhooks take an unchecked post).
    """
    paths: dict[str, Any] = {}
    for name, provider in gateways.PROVIDERS.items():
        segment = "{secret}/" if provider.path_secret else ""
        for path, webhook in provider.webhooks.items():
            paths[f"{PREFIX}{name}/{segment}{path}"] = {"post": _operation(name, path, provider, webhook)}
    return paths


def _verification(provider: type[Gateway]) -> str:
    """Say which setting verifies the provider's webhooks, whatever this process is given."""
    return (
        f"Verified with {provider.verification_setting}; without it the webhook answers 404 "
        "(in development it is served unverified)."
    )


def _operation(name: str, path: str, provider: type[Gateway], webhook: Webhook) -> dict[str, Any]:
    """Describe one webhook: the provider's form, the answer it gets, the refusals."""
    setting = provider.verification_setting
    parameters: list[dict[str, Any]] = []
    if provider.path_secret:
        parameters.append(
            {
                "name": "secret",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": f"the secret path segment: the value of {setting} "
                f"(`{NO_SECRET}` where it is unset, in development only)",
            }
        )
    if provider.signature_header:
        parameters.append(
            {
                "name": provider.signature_header,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": f"the provider's signature of the URL and the form, checked with {setting}",
            }
        )
    form = {
        "type": "object",
        "properties": {
            f.name: {"type": "string", "description": f.description}
            | ({"examples": [f.example]} if f.example else {})
            for f in webhook.fields
        },
        "required": [f.name for f in webhook.fields if f.required],
        "additionalProperties": {"type": "string"},  # the provider's other fields: kept, not read
    }
    answer = webhook.answer
    handled: dict[str, Any] = {"description": webhook.answer_description or "handled"}
    if answer.status != 204:
        media = answer.content_type.decode("latin-1").split(";")[0].strip()
        example = {"example": answer.body.decode()} if answer.body else {}
        handled["content"] = {media: {"schema": {"type": "string"}} | example}
    refused = {
        str(code): {"description": text, "content": {"application/json": {"schema": _DETAIL}}}
        | ({"headers": _RETRY_AFTER} if code == 503 else {})
        for code, text in ERRORS.items()
        if not (code == 503 and webhook.kind is WebhookKind.USSD)
    }
    title = provider.title or name
    return {
        "tags": [TAG],
        "summary": f"{title}: {webhook.summary or path}",
        "description": f"Posted by {title}. {_HANDLING[webhook.kind]} {_verification(provider)}",
        "operationId": f"webhook_{name}_{path}",
        "parameters": parameters,
        "requestBody": {"required": True, "content": {FORM_TYPE: {"schema": form}}},
        "responses": {str(answer.status): handled} | refused,
    }
