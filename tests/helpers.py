"""Small helpers the tests share: signed Twilio posts, waiting for background work, row counts."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
from fastapi.testclient import TestClient
from sqlalchemy import ColumnElement, Engine, create_engine, func, select
from twilio.request_validator import RequestValidator

from app.crypto import Keyring, attach
from app.models import Message, Person
from tests.server import TEST_SECRET_KEY

TWILIO_TOKEN = "twilio-test-token-abcdef0123456789"
# The Africa's Talking webhook path secret of the test settings (long enough for production too).
AT_SECRET = "s3cr3t-path-6f1d0c9b8a7e5d4c3b2a1f0e"
WEEK = timedelta(weeks=1)


def weeks_to_now(latest: datetime, now: datetime | None = None) -> timedelta:
    """The whole weeks that move `latest` into the week before now: weekday and hour are kept.

    Fixed test dates stay inside the 30 days in which Africa's Talking's `date` is believed.
    """
    now = now or datetime.now(UTC)
    return WEEK * ((now - latest) // WEEK)


def moved(value: str, shift: timedelta) -> str:
    """An ISO 8601 (or `YYYY-MM-DD HH:MM:SS`) date moved by `shift`, written the same way."""
    when = datetime.fromisoformat(value) + shift
    return when.isoformat() if "T" in value else when.strftime("%Y-%m-%d %H:%M:%S")


def recent(value: str) -> str:
    """A fixed test date moved into the last week (a date without offset is UTC), written the same way."""
    when = datetime.fromisoformat(value)
    return moved(value, weeks_to_now(when if when.tzinfo else when.replace(tzinfo=UTC)))


# Africa's Talking's `date` in the tests: a Friday morning of the last week.
AT_DATE = recent("2026-11-20 07:30:00")
TEST_KEYRING = Keyring([TEST_SECRET_KEY])


def engine(db_url: str, keyring: Keyring = TEST_KEYRING) -> Engine:
    """A plain engine on a test database that reads the encrypted columns (close it with dispose())."""
    return attach(create_engine(db_url), keyring)


def twilio_form(
    sender: str = "+243810000001", body: str = "ALERTE ATTAQUE Djugu", sid: str | None = None
) -> dict[str, str]:
    sid = sid or "SM" + uuid.uuid4().hex
    return {
        "ToCountry": "CD",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "FromCountry": "CD",
        "To": "+243990001000",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }


def signed_headers(form: dict[str, str], url: str, token: str = TWILIO_TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, form)}


def at_form(
    sender: str = "+243810000002",
    text: str = "a3 fataki",
    pid: str | None = None,
    date: str | None = AT_DATE,
) -> dict[str, str]:
    form = {
        "from": sender,
        "to": "12345",
        "text": text,
        "id": pid or "ATPid_" + uuid.uuid4().hex,
        "linkId": "lnk",
        "networkCode": "63902",
    }
    if date is not None:
        form["date"] = date
    return form


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def phone_is(phone: str) -> ColumnElement[bool]:
    """The roster entry of this number (found by its blind index, as the service finds it)."""
    return Person.phone_index == TEST_KEYRING.index(phone)


def messages(db_url: str, **where: Any) -> list[Message]:
    db = engine(db_url)
    try:
        with db.connect() as conn:
            query = select(Message)
            for key, value in where.items():
                query = query.where(getattr(Message, key) == value)
            return list(conn.execute(query.order_by(Message.id)).all())  # type: ignore[arg-type]
    finally:
        db.dispose()


def count(db_url: str, **where: Any) -> int:
    db = engine(db_url)
    try:
        with db.connect() as conn:
            query = select(func.count()).select_from(Message)
            for key, value in where.items():
                query = query.where(getattr(Message, key) == value)
            return int(conn.execute(query).scalar_one())
    finally:
        db.dispose()


def api(client: TestClient, path: str, token: str, **params: Any) -> Any:
    r = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


def stored_bytes(db_url: str) -> bytes:
    """Everything someone who takes the database gets: the SQLite file and its WAL, or a `pg_dump`."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        parts = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return b"".join(p.read_bytes() for p in parts if p.exists())
    url = db_url.replace("postgresql+psycopg://", "postgresql://")
    return subprocess.run(["/usr/bin/pg_dump", "--dbname", url], capture_output=True, check=True).stdout


def number_pattern(e164: str) -> re.Pattern[bytes]:
    """The national digits of a number in any notation: spaced, dotted, dashed, bracketed, any prefix."""
    digits = phonenumbers.national_significant_number(phonenumbers.parse(e164))
    return re.compile(rb"[\s.\-/()]{0,3}".join(d.encode() for d in digits))


def leaks(data: bytes, numbers: Iterable[str]) -> list[str]:
    """The numbers found in `data`."""
    return sorted(n for n in set(numbers) if number_pattern(n).search(data))
