"""Africa's Talking: inbound and delivery payloads as AT sends them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateways import africastalking
from gateways.base import Form, PayloadError

REAL_INBOUND = {
    "linkId": "SampleLinkId123",
    "text": "a3 fataki 2 enfants",
    "to": "12345",
    "id": "7f8e5b1c-bd16-4b2c-9a43-3b1b8f5c6f01",
    "date": "2026-11-20 07:30:00",
    "from": "+243810000002",
    "networkCode": "63902",
}

INBOUND_CASES = [
    (
        "real payload",
        {},
        ("7f8e5b1c-bd16-4b2c-9a43-3b1b8f5c6f01", "+243810000002", datetime(2026, 11, 20, 7, 30, tzinfo=UTC)),
    ),
    (
        "ISO date with offset",
        {"date": "2026-11-20T08:10:00+02:00"},
        ("7f8e5b1c-bd16-4b2c-9a43-3b1b8f5c6f01", "+243810000002", datetime(2026, 11, 20, 6, 10, tzinfo=UTC)),
    ),
    (
        "ISO date Z",
        {"date": "2026-11-20T08:10:00Z"},
        ("7f8e5b1c-bd16-4b2c-9a43-3b1b8f5c6f01", "+243810000002", datetime(2026, 11, 20, 8, 10, tzinfo=UTC)),
    ),
    ("no date", {"date": None}, ("7f8e5b1c-bd16-4b2c-9a43-3b1b8f5c6f01", "+243810000002", None)),
    (
        "local number kept as given",
        {"from": "0810000002"},
        ("7f8e5b1c-bd16-4b2c-9a43-3b1b8f5c6f01", "0810000002", datetime(2026, 11, 20, 7, 30, tzinfo=UTC)),
    ),
    ("bad date", {"date": "yesterday"}, "date"),
    ("no id", {"id": None}, "id"),
    ("no from", {"from": None}, "from"),
    ("no text", {"text": None}, "text"),
]


@pytest.mark.parametrize(("name", "changes", "expected"), INBOUND_CASES, ids=[c[0] for c in INBOUND_CASES])
def test_inbound_table(name: str, changes: dict[str, str | None], expected: object) -> None:
    payload = {k: v for k, v in {**REAL_INBOUND, **changes}.items() if v is not None}
    if isinstance(expected, str):
        with pytest.raises(PayloadError) as err:
            africastalking.parse_inbound(Form(payload.items()))
        assert err.value.field == expected
        return
    sms = africastalking.parse_inbound(Form(payload.items()))
    assert (sms.provider_message_id, sms.sender, sms.reported_at) == expected
    assert sms.raw["linkId"] == ["SampleLinkId123"]


DELIVERY_CASES = [
    ({"status": "Success"}, "delivered", None),
    ({"status": "Sent"}, "sent", None),
    ({"status": "Submitted"}, "sent", None),
    ({"status": "Buffered"}, "sent", None),
    (
        {"status": "Rejected", "failureReason": "UserInBlackList"},
        "failed",
        "africastalking Rejected: UserInBlackList",
    ),
    (
        {"status": "Failed", "failureReason": "InsufficientCredit"},
        "failed",
        "africastalking Failed: InsufficientCredit",
    ),
]


@pytest.mark.parametrize(("changes", "status", "error"), DELIVERY_CASES)
def test_delivery_table(changes: dict[str, str], status: str, error: str | None) -> None:
    payload = {
        "id": "ATXid_1",
        "phoneNumber": "+243810000001",
        "networkCode": "63902",
        "retryCount": "0",
        **changes,
    }
    report = africastalking.parse_delivery(Form(payload.items()))
    assert (report.provider_message_id, report.status, report.error) == ("ATXid_1", status, error)
