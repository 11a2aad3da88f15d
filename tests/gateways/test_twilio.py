"""Twilio: inbound and status payloads as Twilio sends them; the signature check against the SDK's."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from twilio.request_validator import RequestValidator

from gateways import twilio
from gateways.base import Form, PayloadError

TOKEN = "12345"
REAL_INBOUND = {
    "ToCountry": "CD",
    "ToState": "",
    "SmsMessageSid": "SM5f6e0a7b8c9d0e1f2a3b4c5d6e7f8a9b",
    "NumMedia": "0",
    "ToCity": "",
    "FromZip": "",
    "SmsSid": "SM5f6e0a7b8c9d0e1f2a3b4c5d6e7f8a9b",
    "FromState": "",
    "SmsStatus": "received",
    "FromCity": "",
    "Body": "ALERTE ATTAQUE Djugu 20 hommes armés",
    "FromCountry": "CD",
    "To": "+243990001000",
    "ToZip": "",
    "NumSegments": "1",
    "MessageSid": "SM5f6e0a7b8c9d0e1f2a3b4c5d6e7f8a9b",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "+243810000001",
    "ApiVersion": "2010-04-01",
}


def form(d: dict[str, str]) -> Form:
    return Form(d.items())


INBOUND_CASES = [
    # (name, payload changes, expected (sid, sender, text) or the field named by the error)
    (
        "real payload",
        {},
        ("SM5f6e0a7b8c9d0e1f2a3b4c5d6e7f8a9b", "+243810000001", "ALERTE ATTAQUE Djugu 20 hommes armés"),
    ),
    ("empty body is a message", {"Body": ""}, ("SM5f6e0a7b8c9d0e1f2a3b4c5d6e7f8a9b", "+243810000001", "")),
    (
        "emoji kept",
        {"Body": "🔥 attaque"},
        ("SM5f6e0a7b8c9d0e1f2a3b4c5d6e7f8a9b", "+243810000001", "🔥 attaque"),
    ),
    (
        "SmsSid when MessageSid missing",
        {"MessageSid": None, "SmsMessageSid": None},
        ("SM5f6e0a7b8c9d0e1f2a3b4c5d6e7f8a9b", "+243810000001", "ALERTE ATTAQUE Djugu 20 hommes armés"),
    ),
    ("no sid at all", {"MessageSid": None, "SmsMessageSid": None, "SmsSid": None}, "MessageSid"),
    ("no From", {"From": None}, "From"),
    ("blank From", {"From": "  "}, "From"),
    ("no Body", {"Body": None}, "Body"),
    ("absurd From", {"From": "+" + "1" * 60}, "From"),
]


@pytest.mark.parametrize(("name", "changes", "expected"), INBOUND_CASES, ids=[c[0] for c in INBOUND_CASES])
def test_inbound_table(name: str, changes: dict[str, str | None], expected: object) -> None:
    payload = {k: v for k, v in {**REAL_INBOUND, **changes}.items() if v is not None}
    if isinstance(expected, str):
        with pytest.raises(PayloadError) as err:
            twilio.parse_inbound(form(payload))
        assert err.value.field == expected
        return
    sms = twilio.parse_inbound(form(payload))
    assert (sms.provider_message_id, sms.sender, sms.text) == expected
    assert sms.reported_at is None
    assert sms.raw["AccountSid"] == [REAL_INBOUND["AccountSid"]]


STATUS_CASES = [
    ({"MessageStatus": "sent"}, "sent", None),
    ({"MessageStatus": "delivered"}, "delivered", None),
    ({"MessageStatus": "read"}, "delivered", None),
    ({"MessageStatus": "undelivered", "ErrorCode": "30003"}, "failed", "twilio error 30003"),
    ({"MessageStatus": "failed", "ErrorCode": "30008"}, "failed", "twilio error 30008"),
    ({"MessageStatus": "failed"}, "failed", "twilio status failed"),
    ({"MessageStatus": "queued"}, "queued", None),
    ({"MessageStatus": "something_new"}, "unknown", None),
]


@pytest.mark.parametrize(("changes", "status", "error"), STATUS_CASES)
def test_status_table(changes: dict[str, str], status: str, error: str | None) -> None:
    payload = {
        "MessageSid": "SMabc",
        "AccountSid": "AC1",
        "To": "+243810000001",
        "From": "+15005550006",
        **changes,
    }
    report = twilio.parse_status(form(payload))
    assert (report.provider_message_id, report.status, report.error) == ("SMabc", status, error)


def test_status_requires_fields() -> None:
    with pytest.raises(PayloadError) as err:
        twilio.parse_status(form({"MessageSid": "SMabc"}))
    assert err.value.field == "MessageStatus"


# -- signatures ---------------------------------------------------------------------------------
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": ["CA1234567890ABCDE"],
    "Caller": ["+14158675309"],
    "Digits": ["1234"],
    "From": ["+14158675309"],
    "To": ["+18005551212"],
}


def test_published_vectors() -> None:
    assert twilio.compute_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert twilio.compute_signature(TOKEN, with_port, VECTOR_PARAMS) == "kvajT1Ptam85bY51eRf/AJRuM3w="
    for sig in ("RSOYDt4T1cUTdK1PDd93/VVr8B8=", "kvajT1Ptam85bY51eRf/AJRuM3w="):
        assert twilio.signature_valid(token=TOKEN, url=VECTOR_URL, params=VECTOR_PARAMS, signature=sig)


def _sdk_params(params: dict[str, list[str]]) -> dict[str, str]:
    return {k: v[0] for k, v in params.items()}


URLS = [
    "https://kengele.example.org/webhooks/twilio/sms",
    "https://Alerts.Example.ORG/webhooks/twilio/sms",
    "https://kengele.example.org:443/webhooks/twilio/sms",
    "http://127.0.0.1:8000/webhooks/twilio/sms",
    "http://kengele.example.org/webhooks/twilio/sms?x=1",
]
TAMPERS = {
    "untouched": lambda p, s, u: (p, s, u),
    "body changed": lambda p, s, u: ({**p, "Body": ["ALERTE (changed)"]}, s, u),
    "field added": lambda p, s, u: ({**p, "Extra": ["1"]}, s, u),
    "field removed": lambda p, s, u: ({k: v for k, v in p.items() if k != "To"}, s, u),
    "other url": lambda p, s, u: (p, s, u.replace("/sms", "/status")),
    "other host": lambda p, s, u: (p, s, u.replace(urlsplit(u).netloc, "evil.example.net")),
    "truncated": lambda p, s, u: (p, s[:-4], u),
    "flipped": lambda p, s, u: (p, ("B" if s[0] != "B" else "C") + s[1:], u),
    "empty": lambda p, s, u: (p, "", u),
    "wrong token": lambda p, s, u: (p, RequestValidator("0" * 32).compute_signature(u, _sdk_params(p)), u),
}


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_signature_agrees_with_sdk(url: str, tamper: str) -> None:
    params = {k: [v] for k, v in REAL_INBOUND.items()}
    signature = RequestValidator(TOKEN).compute_signature(url, _sdk_params(params))
    params2, signature2, url2 = TAMPERS[tamper](params, signature, url)
    ours = twilio.signature_valid(token=TOKEN, url=url2, params=params2, signature=signature2)
    sdk = RequestValidator(TOKEN).validate(url2, _sdk_params(params2), signature2)
    assert ours == sdk
    assert ours == (tamper == "untouched")


class MultiDict(dict):  # type: ignore[type-arg]
    """What a web framework hands the SDK for a form with repeated fields."""

    def getall(self, name: str) -> list[str]:
        return list(self[name])


def test_repeated_fields_agree_with_sdk() -> None:
    url = URLS[0]
    params = {k: [v] for k, v in REAL_INBOUND.items()} | {"MediaUrl0": ["b", "a", "b"]}
    sig = RequestValidator(TOKEN).compute_signature(url, MultiDict(params))
    assert twilio.compute_signature(TOKEN, url, params) == sig
    assert twilio.signature_valid(token=TOKEN, url=url, params=params, signature=sig)
    changed = params | {"MediaUrl0": ["b", "c"]}
    assert not twilio.signature_valid(token=TOKEN, url=url, params=changed, signature=sig)
    assert not RequestValidator(TOKEN).validate(url, MultiDict(changed), sig)


def test_sha256_signature_settings() -> None:
    url = "https://kengele.example.org/webhooks/twilio/sms"
    params = {k: [v] for k, v in REAL_INBOUND.items()}
    sig = RequestValidator(TOKEN).compute_signature(url, _sdk_params(params), "HMAC_SHA256")
    header = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert twilio.signature_valid(token=TOKEN, url=url, params=params, signature=sig, settings_header=header)
    assert not twilio.signature_valid(token=TOKEN, url=url, params=params, signature=sig)
    assert not twilio.signature_valid(
        token=TOKEN, url=url, params=params, signature=sig, settings_header="algorithm=HMAC_MD5"
    )


def test_non_ascii_signature_header_is_just_invalid() -> None:
    params = {"Body": ["x"]}
    assert not twilio.signature_valid(token=TOKEN, url=URLS[0], params=params, signature="é\udcff")
