"""Settings, phone numbers and logs: nothing reads the environment at import, no number leaks."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.logs import JsonFormatter, TextFormatter
from app.phones import mask, normalize, scrub
from tests.server import TEST_SECRET_KEY


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith(("KENGELE_", "TWILIO_", "AT_")):
            monkeypatch.delenv(name)
    s = make()
    assert s.database_url == "sqlite:///./kengele.db"
    assert s.gateway == ["console"]
    assert s.public_url == "http://127.0.0.1:8000"
    assert (s.default_region, s.timezone) == ("CD", "Africa/Lubumbashi")
    assert (s.ack_timeout, s.dedup_window, s.dedup_radius_km) == (600, 21600, 10.0)
    assert s.admin_token is None and s.twilio_auth_token is None and s.at_webhook_secret is None


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENGELE_GATEWAY", "twilio, africastalking,console")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "s3cr3t-twilio")
    monkeypatch.setenv("AT_USERNAME", "kengele")
    monkeypatch.setenv("KENGELE_AT_WEBHOOK_SECRET", "p4th-s3cr3t")
    s = make()
    assert s.gateway == ["twilio", "africastalking", "console"]
    assert s.twilio_auth_token is not None and s.twilio_auth_token.get_secret_value() == "s3cr3t-twilio"
    assert s.at_username == "kengele" and s.at_webhook_secret is not None
    assert "s3cr3t" not in repr(s)


def test_dotenv_is_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("KENGELE_DEFAULT_REGION", raising=False)
    (tmp_path / ".env").write_text("KENGELE_DEFAULT_REGION=ml\nTWILIO_FROM=+15005550006\n")
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.default_region == "ML" and s.twilio_from == "+15005550006"


@pytest.mark.parametrize(
    "values",
    [
        {"gateway": "twilio,pigeon"},
        {"gateway": ""},
        {"default_region": "ZZ"},
        {"timezone": "Nowhere/Land"},
        {"public_url": "kengele.example.org"},
        {"at_webhook_secret": "a/b"},
        {"ack_timeout": 0},
        {"env": "production", "admin_token": "changeme", "secret_key": TEST_SECRET_KEY},
        {"env": "production", "gateway": "twilio", "secret_key": TEST_SECRET_KEY},
        {
            "env": "production",
            "gateway": "africastalking",
            "at_username": "u",
            "at_api_key": "k",
            "secret_key": TEST_SECRET_KEY,
        },
    ],
)
def test_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        make(**values)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"gateway": "twilio"}, "TWILIO_AUTH_TOKEN"),
        (
            {"gateway": "console,africastalking", "at_username": "u", "at_api_key": "k" * 32},
            "KENGELE_AT_WEBHOOK_SECRET",
        ),
        ({"twilio_auth_token": "t" * 32, "twilio_webhook_key": "secret"}, "KENGELE_TWILIO_WEBHOOK_KEY"),
    ],
)
def test_production_refusals_name_the_setting(values: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        make(env="production", admin_token="a" * 8 + "b" * 24, secret_key=TEST_SECRET_KEY, **values)


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENGELE_AT_WEBHOOK_SECRET", "")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", " ")
    s = make()
    assert s.at_webhook_secret is None and s.twilio_auth_token is None


def test_production_with_real_secrets() -> None:
    s = make(
        env="production",
        gateway="twilio",
        twilio_auth_token="0f9e8d7c6b5a",
        admin_token="k" * 32,
        secret_key=TEST_SECRET_KEY,
    )
    assert s.env == "production"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("0812345678", "CD", ("+243812345678", True)),
        ("+243 81 000 0003", "CD", ("+243810000003", True)),
        ("00243810000004", "CD", ("+243810000004", True)),
        ("243810000005", "CD", ("+243810000005", True)),  # country code without +
        ("+254700000001", "CD", ("+254700000001", True)),
        ("76123456", "ML", ("+22376123456", True)),
        ("12", "CD", ("12", False)),
        ("not a number", "CD", ("not a number", False)),
    ],
)
def test_normalize(raw: str, region: str, expected: tuple[str, bool]) -> None:
    phone = normalize(raw, region)
    assert (phone.value, phone.valid) == expected


def test_mask() -> None:
    assert mask("+243812344567") == "+243*****4567"
    assert mask("+254700000001") == "+254*****0001"
    assert mask("0812344567") == "******4567"
    assert mask(None) is None


def test_scrub_masks_numbers_not_addresses_or_dates() -> None:
    line = "from +243 81 234 4567 and 0812344567 at http://127.0.0.1:8000 on 2026-11-25 12:30:45 v1.2.3"
    out = scrub(line)
    assert "234 4567" not in out and "0812344567" not in out
    assert "+243*****4567" in out
    assert "127.0.0.1:8000" in out and "2026-11-25" in out and "12:30:45" in out


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_logs_never_hold_a_full_number(formatter: logging.Formatter) -> None:
    record = logging.LogRecord(
        "kengele.test", logging.INFO, __file__, 1, "sms from %s", ("+243812344567",), None
    )
    record.to = "+243810000001"
    out = formatter.format(record)
    assert "812344567" not in out and "810000001" not in out
    assert "+243*****4567" in out
    if isinstance(formatter, JsonFormatter):
        doc = json.loads(out)
        assert doc["to"] == "+243*****0001" and doc["level"] == "info"
