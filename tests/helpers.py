"""Small helpers the tests share: signed Twilio posts, waiting for background work, row counts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from twilio.request_validator import RequestValidator

from app.models import Message

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


def messages(db_url: str, **where: Any) -> list[Message]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(Message)
            for key, value in where.items():
                query = query.where(getattr(Message, key) == value)
            return list(conn.execute(query.order_by(Message.id)).all())  # type: ignore[arg-type]
    finally:
        engine.dispose()


def count(db_url: str, **where: Any) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).select_from(Message)
            for key, value in where.items():
                query = query.where(getattr(Message, key) == value)
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def api(client: TestClient, path: str, token: str, **params: Any) -> Any:
    r = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()
