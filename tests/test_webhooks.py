"""Webhooks as the providers meet them: stored before 2xx, retries change nothing, bad input refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from app.config import Settings
from app.main import create_app
from app.models import Alert, Person
from app.services.intake import report_time
from gateways.africastalking import parse_date
from tests.helpers import (
    AT_DATE,
    AT_SECRET,
    TWILIO_TOKEN,
    at_form,
    count,
    messages,
    signed_headers,
    twilio_form,
    wait_for,
)
from tests.helpers import engine as keyed_engine

TW_URL = "http://testserver/webhooks/twilio/sms"
OFFICER = "+243990000001"
NOW = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)


@pytest.fixture
def secured(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(
        twilio_auth_token=TWILIO_TOKEN, twilio_account_sid="AC1", at_webhook_secret=AT_SECRET
    )
    with TestClient(create_app(settings)) as c:
        yield c


def post_twilio(client: TestClient, form: dict[str, str], *, sign: bool = True, **headers: str):  # type: ignore[no-untyped-def]
    h = dict(headers)
    if sign:
        h.update(signed_headers(form, TW_URL))
    return client.post("/webhooks/twilio/sms", data=form, headers=h)


def test_twilio_message_is_stored_processed_and_answered(secured: TestClient, db_url: str) -> None:
    form = twilio_form(body="ALERTE ATTAQUE Djugu 20 hommes armés")
    r = post_twilio(secured, form)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/xml")
    assert r.text.endswith("<Response/>")
    (row,) = messages(db_url, direction="inbound")
    assert (row.provider, row.provider_message_id, row.sender, row.text) == (
        "twilio",
        form["MessageSid"],
        "+243810000001",
        "ALERTE ATTAQUE Djugu 20 hommes armés",
    )
    wait_for(lambda: count(db_url, direction="outbound", status="sent") == 1)
    (processed,) = messages(db_url, direction="inbound")
    assert processed.outcome == "alert" and processed.processed_at is not None
    (reply,) = messages(db_url, direction="outbound")
    assert reply.recipient == "+243810000001" and reply.purpose == "reply" and "K" in reply.text


def test_twilio_retry_changes_nothing(secured: TestClient, db_url: str) -> None:
    form = twilio_form()
    assert post_twilio(secured, form).status_code == 200
    wait_for(lambda: count(db_url, direction="outbound") == 1)
    for _ in range(3):
        assert post_twilio(secured, form).status_code == 200
    assert count(db_url, direction="inbound") == 1
    assert count(db_url, direction="outbound") == 1


def test_at_message_uses_date_as_report_time(secured: TestClient, db_url: str) -> None:
    form = at_form(date=AT_DATE)
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form)
    assert r.status_code == 200
    (row,) = messages(db_url, direction="inbound")
    assert row.reported_at.isoformat().startswith(AT_DATE.replace(" ", "T"))
    assert secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form).status_code == 200
    assert count(db_url, direction="inbound") == 1


def test_invalid_number_is_kept_and_flagged(secured: TestClient, db_url: str) -> None:
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(sender="12"))
    assert r.status_code == 200
    (row,) = messages(db_url, direction="inbound")
    assert (row.sender, row.phone_valid) == ("12", False)
    wait_for(lambda: messages(db_url, direction="inbound")[0].processed_at is not None)
    assert count(db_url, direction="outbound") == 0  # no reply to a number we cannot text


def test_local_notation_is_normalised(secured: TestClient, db_url: str) -> None:
    post_twilio(secured, twilio_form(sender="0810000002"))
    assert messages(db_url, direction="inbound")[0].sender == "+243810000002"


@pytest.mark.parametrize(
    ("kind", "status"),
    [("wrong token", 403), ("tampered body", 403), ("missing", 403), ("other url", 403), ("empty", 403)],
)
def test_bad_twilio_signature_is_403_and_nothing_stored(
    secured: TestClient, db_url: str, kind: str, status: int
) -> None:
    form = twilio_form()
    headers = {
        "wrong token": signed_headers(form, TW_URL, "0" * 32),
        "tampered body": signed_headers(form, TW_URL),
        "missing": {},
        "other url": signed_headers(form, "https://attacker.invalid/webhooks/twilio/sms"),
        "empty": {"X-Twilio-Signature": ""},
    }[kind]
    if kind == "tampered body":
        form = {**form, "Body": form["Body"] + "!"}
    r = secured.post("/webhooks/twilio/sms", data=form, headers=headers)
    assert r.status_code == status
    assert "detail" in r.json()
    assert count(db_url) == 0


@pytest.mark.parametrize("segment", ["wrong", "-", "s3cr3t-pat", "S3CR3T-PATH"])
def test_bad_at_secret_is_403_and_nothing_stored(secured: TestClient, db_url: str, segment: str) -> None:
    for kind in ("sms", "delivery"):
        r = secured.post(f"/webhooks/africastalking/{segment}/{kind}", data=at_form())
        assert r.status_code == 403
    assert count(db_url) == 0


@pytest.fixture
def development(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """`make run`: no provider verification configured, webhooks served unchecked."""
    with TestClient(create_app(make_settings(env="development", at_webhook_secret=None))) as c:
        yield c


def test_no_secret_configured_means_dash(development: TestClient, db_url: str) -> None:
    assert development.post("/webhooks/africastalking/-/sms", data=at_form()).status_code == 200
    assert development.post("/webhooks/africastalking/x/sms", data=at_form()).status_code == 403
    assert count(db_url, direction="inbound") == 1


@pytest.mark.parametrize(
    ("drop", "field"), [("MessageSid", "MessageSid"), ("From", "From"), ("Body", "Body")]
)
def test_twilio_missing_field_named(secured: TestClient, db_url: str, drop: str, field: str) -> None:
    form = twilio_form()
    for k in [drop] + (["SmsSid", "SmsMessageSid"] if drop == "MessageSid" else []):
        form.pop(k)
    r = post_twilio(secured, form)
    assert r.status_code == 422
    assert field in r.json()["detail"]
    assert count(db_url) == 0


@pytest.mark.parametrize(("drop", "field"), [("id", "id"), ("from", "from"), ("text", "text")])
def test_at_missing_field_named(secured: TestClient, db_url: str, drop: str, field: str) -> None:
    form = at_form()
    form.pop(drop)
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form)
    assert r.status_code == 422
    assert r.json()["detail"].startswith(field)
    assert count(db_url) == 0


def test_at_malformed_date_named(secured: TestClient, db_url: str) -> None:
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(date="20/11/2026"))
    assert r.status_code == 422 and r.json()["detail"].startswith("date")
    assert count(db_url) == 0


def test_body_over_64k_is_413(secured: TestClient, db_url: str) -> None:
    form = at_form(text="x" * (65 * 1024))
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form)
    assert r.status_code == 413
    # also when the client does not declare a length (chunked)
    body = urlencode(form).encode()
    r = secured.post(
        f"/webhooks/africastalking/{AT_SECRET}/sms",
        content=iter([body[i : i + 8192] for i in range(0, len(body), 8192)]),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413
    assert count(db_url) == 0


def test_invalid_utf8_is_400_naming_the_field(secured: TestClient, db_url: str) -> None:
    body = b"from=%2B243810000002&to=12345&id=AT1&text=caf%E9+attaque"
    r = secured.post(
        f"/webhooks/africastalking/{AT_SECRET}/sms",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("text")
    raw = b"from=%2B243810000002&to=12345&id=AT2&text=\xff\xfe"
    r = secured.post(
        f"/webhooks/africastalking/{AT_SECRET}/sms",
        content=raw,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert count(db_url) == 0


def test_not_a_form_is_415(secured: TestClient, db_url: str) -> None:
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", json={"from": "+243810000002"})
    assert r.status_code == 415
    assert count(db_url) == 0


@pytest.mark.parametrize(
    "text",
    [
        "attaque\x00djugu",
        "A" * 5000,
        "🔥🔥 ATTAQUE Djugu 🙏",
        "",
        "   ",
        "\u202e\u200b",
        "<script>alert(1)</script>",
        "'; DROP TABLE messages; --",
        "ᚠᛇᚻ᛫ᛒᛦᚦ",
        "\ud7ff\ue000\uffff",
    ],
)
def test_odd_texts_are_stored_safely(secured: TestClient, db_url: str, text: str) -> None:
    form = at_form(text=text)
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form)
    assert r.status_code == 200
    (row,) = messages(db_url, direction="inbound")
    assert row.text == text.replace("\x00", "\ufffd")
    wait_for(lambda: messages(db_url, direction="inbound")[0].processed_at is not None)


def test_twilio_emoji_signed_and_stored_verbatim(secured: TestClient, db_url: str) -> None:
    form = twilio_form(body="🔥 attaque à Djugu — 20 hommes")
    assert post_twilio(secured, form).status_code == 200
    assert messages(db_url, direction="inbound")[0].text == "🔥 attaque à Djugu — 20 hommes"


def test_twilio_unsigned_accepted_when_no_token(development: TestClient, db_url: str) -> None:
    assert post_twilio(development, twilio_form(), sign=False).status_code == 200
    assert count(db_url, direction="inbound") == 1


def test_signature_behind_proxy_uses_public_url(make_settings: Callable[..., Settings], db_url: str) -> None:
    settings = make_settings(twilio_auth_token=TWILIO_TOKEN, public_url="https://alerts.example.org")
    form = twilio_form()
    with TestClient(create_app(settings)) as c:
        good = signed_headers(form, "https://alerts.example.org/webhooks/twilio/sms")
        assert c.post("/webhooks/twilio/sms", data=form, headers=good).status_code == 200
        port = signed_headers(form, "https://alerts.example.org:443/webhooks/twilio/sms")
        assert c.post("/webhooks/twilio/sms", data=form, headers=port).status_code == 200
        other = twilio_form()
        local = signed_headers(other, TW_URL)
        assert c.post("/webhooks/twilio/sms", data=other, headers=local).status_code == 403
    assert count(db_url, direction="inbound") == 1


def test_mixed_case_public_url(make_settings: Callable[..., Settings], db_url: str) -> None:
    settings = make_settings(twilio_auth_token=TWILIO_TOKEN, public_url="https://Alerts.Example.org")
    form = twilio_form()
    with TestClient(create_app(settings)) as c:
        good = signed_headers(form, "https://Alerts.Example.org/webhooks/twilio/sms")
        assert c.post("/webhooks/twilio/sms", data=form, headers=good).status_code == 200


def test_shared_key_signatures(make_settings: Callable[..., Settings], db_url: str) -> None:
    from twilio.request_validator import RequestValidator

    settings = make_settings(twilio_auth_token=TWILIO_TOKEN, twilio_webhook_key="shared-key-secret")
    form = twilio_form()
    sig = RequestValidator("shared-key-secret").compute_signature(TW_URL, form, "HMAC_SHA256")
    headers = {
        "X-Twilio-Signature": sig,
        "X-Twilio-Webhooks-Signature-Settings": "key=k1,algorithm=HMAC_SHA256",
    }
    with TestClient(create_app(settings)) as c:
        assert c.post("/webhooks/twilio/sms", data=form, headers=headers).status_code == 200
        wrong = RequestValidator(TWILIO_TOKEN).compute_signature(TW_URL, form, "HMAC_SHA256")
        form2 = twilio_form()
        headers2 = {**headers, "X-Twilio-Signature": wrong}
        assert c.post("/webhooks/twilio/sms", data=form2, headers=headers2).status_code == 403
    assert count(db_url, direction="inbound") == 1


@pytest.mark.parametrize("field", ["from", "id", "to"])
def test_nul_outside_the_text_is_refused(secured: TestClient, db_url: str, field: str) -> None:
    form = at_form()
    form[field] = form[field] + "\x00"
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form)
    assert r.status_code == 400 and r.json()["detail"].startswith(field)
    assert count(db_url) == 0


@pytest.mark.parametrize(
    "date", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "2026-13-01 00:00:00"]
)
def test_at_dates_out_of_range_are_422(secured: TestClient, db_url: str, date: str) -> None:
    r = secured.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(date=date))
    assert r.status_code == 422 and r.json()["detail"].startswith("date")
    assert count(db_url) == 0


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%d %H:%M:%S")


# Africa's Talking dates accepted (they parse) but not all believed: where each report is placed.
GIVEN, ARRIVAL, NOT_BELIEVED = "given", "arrival", "not believed"  # the last keeps the date in details
DATES = [
    ("0001-01-01 00:00:00", NOT_BELIEVED),  # a phone's clock at zero: once three OverflowErrors, triage
    ("0001-01-01T00:00:00Z", NOT_BELIEVED),
    ("0001-01-01T00:00:00-00:00", NOT_BELIEVED),
    ("1970-01-01 00:00:00", NOT_BELIEVED),
    ("9999-12-31 23:59:59", NOT_BELIEVED),
    ("9999-12-31T23:59:59.999999+00:00", NOT_BELIEVED),
    (_ago(days=31), NOT_BELIEVED),
    (_ago(days=29), GIVEN),  # a backlog delivered late after an outage keeps its hour
    (_ago(hours=1), GIVEN),
    (_ago(hours=-2), ARRIVAL),  # ahead of our clock by less than a day: a clock running fast
    (_ago(days=-2), NOT_BELIEVED),
]
# Test ids that do not change with the clock (pytest-xdist's workers must collect the same tests).
DATE_IDS = [
    *(d for d, _ in DATES[:6]),
    "31 days ago",
    "29 days ago",
    "an hour ago",
    "in 2 hours",
    "in 2 days",
]


@pytest.mark.parametrize(("date", "placed"), DATES, ids=DATE_IDS)
def test_at_dates_far_off_are_not_the_report_time(
    secured: TestClient, db_url: str, date: str, placed: str
) -> None:
    engine = keyed_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(Person).values(name="Capt. Alain Dufour", phone=OFFICER, role="officer", level=1))
    try:
        r = secured.post(
            f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(text="A1 Djugu", date=date)
        )
        assert r.status_code == 200
        wait_for(lambda: messages(db_url, direction="inbound")[0].processed_at is not None)
        (message,) = messages(db_url, direction="inbound")
        assert (message.outcome, message.error, message.attempts) == ("alert", None, 0)
        with engine.connect() as conn:
            alert = conn.execute(select(Alert.reported_at, Alert.details)).one()
        given = parse_date(date)
        assert alert.reported_at == message.reported_at == (given if placed == GIVEN else message.created_at)
        kept = given.isoformat() if placed == NOT_BELIEVED else None
        assert message.given_date == alert.details.get("given_date") == kept
        forward = messages(db_url, direction="outbound", purpose="alert_forward")
        assert [m.recipient for m in forward] == [OFFICER]  # an officer is told
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("given", "now", "expected"),
    [
        (None, NOW, (NOW, None)),
        (NOW, NOW, (NOW, None)),
        (NOW - timedelta(days=30), NOW, (NOW - timedelta(days=30), None)),
        (NOW - timedelta(days=30, seconds=1), NOW, (NOW, NOW - timedelta(days=30, seconds=1))),
        (NOW + timedelta(seconds=1), NOW, (NOW, None)),
        (NOW + timedelta(days=1), NOW, (NOW, None)),
        (NOW + timedelta(days=1, seconds=1), NOW, (NOW, NOW + timedelta(days=1, seconds=1))),
        (datetime.min.replace(tzinfo=UTC), NOW, (NOW, datetime.min.replace(tzinfo=UTC))),
        (datetime.max.replace(tzinfo=UTC), NOW, (NOW, datetime.max.replace(tzinfo=UTC))),
    ],
)
def test_report_time(
    given: datetime | None, now: datetime, expected: tuple[datetime, datetime | None]
) -> None:
    assert report_time(given, now=now) == expected


def test_repeated_fields_are_signed_like_twilio_signs_them(secured: TestClient, db_url: str) -> None:
    form = twilio_form()
    pairs = [*form.items(), ("MediaUrl", "https://x/2"), ("MediaUrl", "https://x/1")]
    # Twilio: each name once, sorted; its values sorted
    base = TW_URL + "".join(k + v for k, v in sorted(form.items()) if k < "MediaUrl")
    import base64
    import hashlib
    import hmac

    signed = TW_URL
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        multi.setdefault(k, []).append(v)
    for k in sorted(multi):
        for v in sorted(set(multi[k])):
            signed += k + v
    assert base  # the expected string starts the same way
    sig = base64.b64encode(hmac.new(TWILIO_TOKEN.encode(), signed.encode(), hashlib.sha1).digest()).decode()
    r = secured.post(
        "/webhooks/twilio/sms",
        content=urlencode(pairs),
        headers={"X-Twilio-Signature": sig, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert count(db_url, direction="inbound") == 1
