"""No route without its check: which provider webhooks are served, and forms that repeat a field."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from gateways import twilio
from tests.helpers import AT_SECRET, TWILIO_TOKEN, at_form, count, twilio_form

ADMIN = "prod-admin-token-8c1e4f0b9a7d6e5c"
TW_PATHS = ("sms", "voice", "status")
AT_PATHS = ("sms", "delivery", "voice", "ussd")


def twilio_voice() -> dict[str, str]:
    return {
        "CallSid": "CA" + "1" * 32,
        "From": "+243810000001",
        "To": "+243990001000",
        "CallStatus": "ringing",
    }


def twilio_status() -> dict[str, str]:
    return {"MessageSid": "SM" + "2" * 32, "MessageStatus": "delivered", "ErrorCode": "0"}


def at_delivery() -> dict[str, str]:
    return {
        "id": "ATXid_1",
        "status": "Failed",
        "failureReason": "UserInBlacklist",
        "phoneNumber": "+243810000001",
    }


def at_voice() -> dict[str, str]:
    return {"sessionId": "ATVId_1", "callerNumber": "+243810000001", "destinationNumber": "+243990001000"}


def at_ussd() -> dict[str, str]:
    return {"sessionId": "ATUid_1", "serviceCode": "*384#", "phoneNumber": "+243810000001", "text": ""}


TW_FORMS: dict[str, Callable[[], dict[str, str]]] = {
    "sms": twilio_form,
    "voice": twilio_voice,
    "status": twilio_status,
}
AT_FORMS: dict[str, Callable[[], dict[str, str]]] = {
    "sms": at_form,
    "delivery": at_delivery,
    "voice": at_voice,
    "ussd": at_ussd,
}


def sign(pairs: list[tuple[str, str]], path: str, token: str = TWILIO_TOKEN) -> dict[str, str]:
    """Sign as Twilio does, repeated values included (the SDK's validator takes one value a name)."""
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    url = f"http://testserver/webhooks/twilio/{path}"
    return {
        "X-Twilio-Signature": twilio.compute_signature(token, url, multi),
        "content-type": "application/x-www-form-urlencoded",
    }


def production(make_settings: Callable[..., Settings], **providers: str | None) -> Settings:
    values: dict[str, str | None] = {"at_webhook_secret": None, **providers}
    return make_settings(env="production", admin_token=ADMIN, **values)


@pytest.mark.parametrize("path", AT_PATHS)
def test_production_with_only_twilio_serves_no_africastalking_route(
    make_settings: Callable[..., Settings], db_url: str, path: str
) -> None:
    settings = production(make_settings, twilio_auth_token=TWILIO_TOKEN)
    form = AT_FORMS[path]()
    with TestClient(create_app(settings)) as c:
        for segment in ("-", AT_SECRET, "anything"):
            r = c.post(f"/webhooks/africastalking/{segment}/{path}", data=form)
            assert (r.status_code, r.json()) == (404, {"detail": "no such webhook"})
        # Twilio's own webhook is served, and checked
        assert c.post("/webhooks/twilio/sms", data=twilio_form()).status_code == 403
    assert count(db_url) == 0


@pytest.mark.parametrize("path", TW_PATHS)
def test_production_with_only_africastalking_serves_no_twilio_route(
    make_settings: Callable[..., Settings], db_url: str, path: str
) -> None:
    settings = production(make_settings, at_webhook_secret=AT_SECRET)
    form = TW_FORMS[path]()
    with TestClient(create_app(settings)) as c:
        signed = sign(list(form.items()), path)
        for headers in ({}, signed):
            r = c.post(f"/webhooks/twilio/{path}", content=urlencode(form), headers=headers)
            assert (r.status_code, r.json()) == (404, {"detail": "no such webhook"})
        assert c.post("/webhooks/africastalking/-/sms", data=at_form()).status_code == 403
        assert c.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form()).status_code == 200
    assert count(db_url, provider="twilio") == 0
    assert count(db_url, provider="africastalking") == 1


def test_test_environment_is_not_development(make_settings: Callable[..., Settings], db_url: str) -> None:
    """Only `development` serves unchecked webhooks; a test or staging set-up gets 404 like production."""
    with TestClient(create_app(make_settings(at_webhook_secret=None))) as c:
        assert c.post("/webhooks/africastalking/-/sms", data=at_form()).status_code == 404
        assert c.post("/webhooks/twilio/sms", data=twilio_form()).status_code == 404
    assert count(db_url) == 0


def test_development_names_the_unchecked_routes_once(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(env="development", at_webhook_secret=None)
    with caplog.at_level(logging.WARNING, logger="kengele.webhooks"), TestClient(create_app(settings)) as c:
        assert c.post("/webhooks/twilio/sms", data=twilio_form()).status_code == 200
        assert c.post("/webhooks/africastalking/-/sms", data=at_form()).status_code == 200
    warnings = [r for r in caplog.records if r.name == "kengele.webhooks" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    routes = warnings[0].routes  # type: ignore[attr-defined]
    assert "/webhooks/twilio/sms" in routes and "/webhooks/africastalking/-/ussd" in routes
    assert len(routes) == len(TW_PATHS) + len(AT_PATHS)


# Every field a handler reads, by webhook: repeated, the form is refused with 400 naming it.
READ_FIELDS = [
    ("twilio", "sms", ("Body", "From", "MessageSid", "To")),
    ("twilio", "voice", ("CallSid", "From", "To")),
    ("twilio", "status", ("MessageSid", "MessageStatus", "ErrorCode")),
    ("africastalking", "sms", ("text", "from", "id", "to", "date")),
    ("africastalking", "delivery", ("id", "status", "failureReason")),
    ("africastalking", "voice", ("sessionId", "callerNumber", "destinationNumber")),
    ("africastalking", "ussd", ("sessionId", "phoneNumber", "text", "serviceCode")),
]


@pytest.mark.parametrize(
    ("provider", "path", "field"),
    [(provider, path, field) for provider, path, fields in READ_FIELDS for field in fields],
)
def test_a_repeated_field_is_refused(
    make_settings: Callable[..., Settings], db_url: str, provider: str, path: str, field: str
) -> None:
    settings = make_settings(twilio_auth_token=TWILIO_TOKEN)
    form = (TW_FORMS if provider == "twilio" else AT_FORMS)[path]()
    pairs = [*form.items(), (field, form[field] + "x" if form[field] else "other")]
    if provider == "twilio":  # signed as Twilio would sign it: the signature alone cannot tell
        url, headers = f"/webhooks/twilio/{path}", sign(pairs, path)
    else:
        url = f"/webhooks/africastalking/{AT_SECRET}/{path}"
        headers = {"content-type": "application/x-www-form-urlencoded"}
    with TestClient(create_app(settings)) as c:
        r = c.post(url, content=urlencode(pairs), headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == f"{field}: given 2 times; expected once"
    assert count(db_url) == 0


def test_swapped_values_of_a_signed_repeated_body_are_refused(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    """The attack: a signed `Body=HELLO&Body=A1 Djugu 99` replayed with its two values swapped."""
    form = twilio_form(body="HELLO")
    signed_pairs = [*form.items(), ("Body", "A1 Djugu 99")]
    headers = sign(signed_pairs, "sms")
    swapped = [("Body", "A1 Djugu 99") if k == "Body" else (k, v) for k, v in form.items()]
    swapped.append(("Body", "HELLO"))
    with TestClient(create_app(make_settings(twilio_auth_token=TWILIO_TOKEN))) as c:
        for pairs in (signed_pairs, swapped):
            r = c.post("/webhooks/twilio/sms", content=urlencode(pairs), headers=headers)
            assert (r.status_code, r.json()["detail"]) == (400, "Body: given 2 times; expected once")
    assert count(db_url) == 0


def test_a_repeated_field_nobody_reads_is_kept(make_settings: Callable[..., Settings], db_url: str) -> None:
    """Twilio repeats MediaUrl-like fields legitimately; only the fields we read must be single."""
    form = twilio_form()
    pairs = [*form.items(), ("MediaUrl", "https://x/2"), ("MediaUrl", "https://x/1")]
    with TestClient(create_app(make_settings(twilio_auth_token=TWILIO_TOKEN))) as c:
        r = c.post("/webhooks/twilio/sms", content=urlencode(pairs), headers=sign(pairs, "sms"))
    assert r.status_code == 200
    assert count(db_url, direction="inbound") == 1
