"""Provider webhooks: thin. Read the form, check who sent it, hand it to intake, answer fast."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, unquote_to_bytes

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from app.db import transaction
from app.metrics import WEBHOOK_REJECTED
from app.services.outbox import record_delivery
from app.services.runtime import Runtime
from gateways import africastalking, twilio
from gateways.base import Form, PayloadError, secrets_equal

log = logging.getLogger("kengele.webhooks")
router = APIRouter(prefix="/webhooks", include_in_schema=True, tags=["webhooks"])

MAX_BODY = 64 * 1024
MAX_FIELDS = 200


class Refused(Exception):
    """A webhook request answered with a 4xx and not processed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def refused_response(exc: Refused) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def read_form(request: Request) -> Form:
    """The body as a form, refusing what no provider sends: too large, not form-encoded, not UTF-8."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise Refused(413, f"body larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Refused(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and ctype != "application/x-www-form-urlencoded":
        raise Refused(415, "body must be application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS
        )
    except UnicodeDecodeError:
        raise Refused(400, f"{_field_not_utf8(body)}: not valid UTF-8") from None
    except ValueError as exc:  # too many fields
        raise Refused(400, f"malformed form: {exc}") from None
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


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def _check_twilio(request: Request, form: Form) -> None:
    settings = runtime(request).settings
    if settings.twilio_auth_token is None:
        return
    url = settings.public_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    valid = twilio.signature_valid(
        token=settings.twilio_auth_token.get_secret_value(),
        url=url,
        params=form.multi(),
        signature=request.headers.get(twilio.SIGNATURE_HEADER, ""),
        settings_header=request.headers.get(twilio.SIGNATURE_SETTINGS_HEADER),
    )
    if not valid:
        WEBHOOK_REJECTED.labels("twilio", "signature").inc()
        raise Refused(403, "X-Twilio-Signature does not match")


def _check_at_secret(request: Request, secret: str) -> None:
    configured = runtime(request).settings.at_webhook_secret
    expected = configured.get_secret_value() if configured is not None else africastalking.NO_SECRET
    if not secrets_equal(secret, expected):
        WEBHOOK_REJECTED.labels("africastalking", "secret").inc()
        raise Refused(403, "unknown webhook path secret")


def _payload(provider: str, exc: PayloadError) -> Refused:
    WEBHOOK_REJECTED.labels(provider, "payload").inc()
    return Refused(422, str(exc))


@router.post("/twilio/sms")
async def twilio_sms(request: Request) -> Response:
    """Inbound SMS from Twilio; answers empty TwiML once the message is committed."""
    try:
        form = await read_form(request)
        _check_twilio(request, form)
        sms = twilio.parse_inbound(form)
    except Refused as exc:
        return refused_response(exc)
    except PayloadError as exc:
        return refused_response(_payload("twilio", exc))
    await runtime(request).writer.store(sms)
    return Response(twilio.EMPTY_TWIML, media_type="text/xml")


@router.post("/twilio/status")
async def twilio_status(request: Request) -> Response:
    """Twilio's delivery status callback."""
    try:
        form = await read_form(request)
        _check_twilio(request, form)
        report = twilio.parse_status(form)
    except Refused as exc:
        return refused_response(exc)
    except PayloadError as exc:
        return refused_response(_payload("twilio", exc))
    with transaction(runtime(request).factory) as session:
        record_delivery(session=session, report=report)
    return Response(status_code=204)


@router.post("/africastalking/{secret}/sms")
async def at_sms(secret: str, request: Request) -> Response:
    """Inbound SMS from Africa's Talking."""
    try:
        _check_at_secret(request, secret)
        form = await read_form(request)
        sms = africastalking.parse_inbound(form)
    except Refused as exc:
        return refused_response(exc)
    except PayloadError as exc:
        return refused_response(_payload("africastalking", exc))
    await runtime(request).writer.store(sms)
    return PlainTextResponse("")


@router.post("/africastalking/{secret}/delivery")
async def at_delivery(secret: str, request: Request) -> Response:
    """Africa's Talking delivery report."""
    try:
        _check_at_secret(request, secret)
        form = await read_form(request)
        report = africastalking.parse_delivery(form)
    except Refused as exc:
        return refused_response(exc)
    except PayloadError as exc:
        return refused_response(_payload("africastalking", exc))
    with transaction(runtime(request).factory) as session:
        record_delivery(session=session, report=report)
    return PlainTextResponse("")
