"""Settings, phone numbers and logs: nothing reads the environment at import, no number leaks."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from app import logs
from app.config import Settings
from app.logs import JsonFormatter, TextFormatter
from app.phones import normalize
from tests.server import TEST_SECRET_KEY

TWILIO_AUTH = "0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"  # a Twilio auth token is 32 hex characters
AT_KEY = "9a8b7c6d5e4f3a2b1c0d" * 3 + "9a8b"  # an Africa's Talking API key, 64


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
    assert (s.db_pool_size, s.db_max_overflow) == (10, 10)


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
        {"db_pool_size": 0},
        {"db_pool_size": 101},
        {"db_max_overflow": -1},
        {"forwarded_allow_ips": "10.0.0.5,nginx"},
        {"forwarded_allow_ips": "10.0.0.0/33"},
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


def test_the_pool_of_a_process_is_the_configured_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """KENGELE_DB_POOL_SIZE and KENGELE_DB_MAX_OVERFLOW size the Runtime's engine (no connection yet)."""
    from app.services.runtime import Runtime

    monkeypatch.setenv("KENGELE_DB_POOL_SIZE", "3")
    monkeypatch.setenv("KENGELE_DB_MAX_OVERFLOW", "2")
    settings = make(
        env="test", secret_key=TEST_SECRET_KEY, database_url="postgresql+psycopg://k@127.0.0.1:1/k"
    )
    assert (settings.db_pool_size, settings.db_max_overflow) == (3, 2)
    engine = Runtime(settings).engine
    assert (engine.pool.size(), engine.pool._max_overflow) == (3, 2)  # type: ignore[attr-defined]


def test_forwarded_allow_ips_are_addresses_networks_or_any() -> None:
    assert make().forwarded_allow_ips == ""  # unset: X-Forwarded-* ignored, as before a proxy
    given = make(forwarded_allow_ips=" 10.0.0.5, 172.16.0.0/12 ,, fd00::/8").forwarded_allow_ips
    assert given == "10.0.0.5,172.16.0.0/12,fd00::/8"
    assert make(forwarded_allow_ips="*").forwarded_allow_ips == "*"
    with pytest.raises(ValidationError, match="'nginx' is not an IP address or network"):
        make(forwarded_allow_ips="nginx")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"gateway": "twilio"}, "TWILIO_AUTH_TOKEN"),
        (
            {"gateway": "console,africastalking", "at_username": "u", "at_api_key": AT_KEY},
            "KENGELE_AT_WEBHOOK_SECRET",
        ),
        ({"twilio_auth_token": TWILIO_AUTH, "twilio_webhook_key": "secret"}, "KENGELE_TWILIO_WEBHOOK_KEY"),
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
        gateway="twilio,africastalking",
        twilio_auth_token=TWILIO_AUTH,
        twilio_webhook_key="b" * 16 + "c" * 16,
        at_username="kengele",
        at_api_key=AT_KEY,
        at_webhook_secret="p4th-" + "0123456789abcdef" * 2,
        admin_token="kg_x3Jq9ZtR1vWm8Lp2Kd7Fh4Sa6Yb0Nc5Ge",
        secret_key=TEST_SECRET_KEY,
    )
    assert s.env == "production"


SECRETS = {
    "admin_token": "KENGELE_ADMIN_TOKEN",
    "twilio_auth_token": "TWILIO_AUTH_TOKEN",
    "twilio_webhook_key": "KENGELE_TWILIO_WEBHOOK_KEY",
    "at_api_key": "AT_API_KEY",
    "at_webhook_secret": "KENGELE_AT_WEBHOOK_SECRET",
    "secret_key": "KENGELE_SECRET_KEY",
}
WEAK = {
    "1": "too short",  # production accepted KENGELE_ADMIN_TOKEN=1
    "0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5": "too short",  # 31 characters
    "a" * 32: "one character repeated",
    "0" * 64: "one character repeated",
    "changeme": "placeholder",
}


@pytest.mark.parametrize("setting", SECRETS)
@pytest.mark.parametrize("value", WEAK)
def test_production_refuses_weak_secrets_naming_the_setting(setting: str, value: str) -> None:
    with pytest.raises(ValidationError, match=f"{SECRETS[setting]} .*{WEAK[value]}") as refused:
        make(env="production", **{"secret_key": TEST_SECRET_KEY, setting: value})
    message = refused.value.errors()[0]["msg"]  # what `kengele` prints: never the value
    assert len(value) < 8 or value not in message


@pytest.mark.parametrize("setting", SECRETS)
def test_weak_secrets_are_fine_outside_production(setting: str) -> None:
    assert make(env="test", **{"secret_key": TEST_SECRET_KEY, setting: "1"}).env == "test"


def test_retention_must_outlast_the_dedup_window() -> None:
    assert make().retention_days == 90
    with pytest.raises(ValidationError, match="KENGELE_RETENTION_DAYS"):
        make(retention_days=1, dedup_window=86400)
    with pytest.raises(ValidationError):
        make(retention_days=0)


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


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_logs_never_hold_a_full_number(formatter: logging.Formatter) -> None:
    record = logging.LogRecord(
        "kengele.test", logging.INFO, __file__, 1, "sms from %s", ("+243812344567",), None
    )
    record.to = "+243810000001"
    out = formatter.format(record)
    assert "812344567" not in out and "810000001" not in out
    assert "+243*******67" in out
    if isinstance(formatter, JsonFormatter):
        doc = json.loads(out)
        assert doc["to"] == "+243*******01" and doc["level"] == "info"


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("kengele.console", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_every_text_of_a_record_is_scrubbed_and_its_times_are_not(formatter: logging.Formatter) -> None:
    """Message, every extra (nested ones too), the traceback; times and counts stay as they are."""
    when = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
    record = _record(
        "console sms",
        to="+243990000001",
        text="K12 attaque chez0810000009 - 2 rapports",
        words=["tel:081.000.0003", {"place": "mama243810000001"}],
        at=when,
        message_id=12,
    )
    try:
        raise ValueError("bad row ('+243 81 000 0004',)")
    except ValueError:
        record.exc_info = sys.exc_info()
    out = formatter.format(record)
    for number in ("990000001", "810000009", "0810000003", "810000003", "243810000001", "810000004"):
        assert number not in out.replace(" ", "").replace(".", ""), number
    assert "chez*********9 - 2 rapports" in out and "tel:***.***.**03" in out and "mama**********01" in out
    assert "2026-11-20T07:30:00+00:00" in out and "message_id" in out
    if isinstance(formatter, JsonFormatter):
        doc = json.loads(out)
        assert doc["at"] == "2026-11-20T07:30:00+00:00" and doc["message_id"] == 12
        assert doc["ts"][:2] == "20" and "*" not in doc["ts"]  # the timestamp is not a number to hide
        assert doc["words"] == ["tel:***.***.**03", {"place": "mama**********01"}]
        assert "+243 ** *** **04" in doc["exc"]


def test_uvicorn_logs_go_through_the_masking_formatter() -> None:
    """Its access log lines carry query strings, so uvicorn keeps no handler of its own."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json")
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate
        (handler,) = root.handlers
        access = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:50000", "GET", "/api/v1/alerts?q=081-000-0003", "1.1", 200),
            None,
        )
        assert "/api/v1/alerts?q=***-***-**03" in handler.format(access)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_a_bad_grammars_dir_refuses_the_settings_naming_file_key_and_reason(tmp_path: Path) -> None:
    from keywords.grammar import GRAMMAR_DIR

    text = (GRAMMAR_DIR / "sw.toml").read_text(encoding="utf-8")
    (tmp_path / "sw.toml").write_text(
        text.replace("[categories]\n", '[categories]\nmvua = ["mvua"]\n'), "utf-8"
    )
    with pytest.raises(
        ValidationError, match=rf"KENGELE_GRAMMARS_DIR: {tmp_path}/sw.toml: categories.mvua: is not"
    ):
        Settings(env="test", secret_key=TEST_SECRET_KEY, grammars_dir=tmp_path)
    (tmp_path / "sw.toml").write_text(text, encoding="utf-8")
    assert Settings(env="test", secret_key=TEST_SECRET_KEY, grammars_dir=tmp_path).grammars_dir == tmp_path
