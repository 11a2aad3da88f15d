"""At rest: after a run of real traffic, whoever takes the database finds no phone number in it.

The traffic goes in as providers and operators send it (webhooks of both providers, USSD, a
roster file, a check-in round, delivery receipts of what the gateways sent), and then the stored
bytes are read as a thief reads them: the SQLite file with its WAL, or a `pg_dump`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Text, func, select, type_coerce

from app.config import Settings
from app.crypto import blind_indexes, encrypted_columns
from app.db import utcnow
from app.main import create_app
from app.models import Base, Message
from app.phones import normalize
from app.services.runtime import Runtime
from tests.conftest import ADMIN_TOKEN
from tests.fakes import FakeProvider
from tests.helpers import AT_SECRET, TEST_KEYRING, leaks, signed_headers, stored_bytes, twilio_form, wait_for
from tests.helpers import engine as keyed_engine
from tests.test_corpus import CORPUS, load_corpus_places, load_roster
from tests.test_ussd import dial

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STRANGER_TW, STRANGER_AT, JOINER, CALLER = "+243820000091", "0820000092", "+243820000093", "+243820000094"
SERVICE_NUMBER = "+243990001000"  # the `To` of Twilio's forms
IMPORTED = "081.000.0040"  # a roster number written with dots


def corpus_numbers() -> set[str]:
    numbers = {
        normalize(line.split(",")[1], "CD").value for line in (CORPUS / "roster.csv").open().readlines()[1:]
    }
    for line in (CORPUS / "messages.jsonl").read_text().splitlines():
        if line.strip():
            numbers.add(normalize(json.loads(line)["sender"], "CD").value)
    return numbers


def run_traffic(client: TestClient, runtime: Runtime) -> set[str]:
    """Every kind of traffic the service stores; the numbers it involved."""
    load_corpus_places(runtime)
    load_roster(runtime)
    csv = f"name,phone,role,place\nNew Point,{IMPORTED},focal_point,Djugu\n"
    r = client.post("/api/v1/people/import", headers=ADMIN, files={"file": ("r.csv", csv, "text/csv")})
    assert r.status_code == 200, r.text
    for n, line in enumerate((CORPUS / "messages.jsonl").read_text().splitlines()):
        m = json.loads(line)
        text = m["text"].replace("{", "").replace("}", "")
        form = {
            "from": m["sender"],
            "to": "12345",
            "text": text,
            "date": m["at"],
            "id": f"AT-{n}",
            "linkId": "l",
        }
        assert client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form).status_code == 200
    form = twilio_form(sender=STRANGER_TW, body="A1 Djugu")
    url = "http://testserver/webhooks/twilio/sms"
    assert (
        client.post("/webhooks/twilio/sms", data=form, headers=signed_headers(form, url)).status_code == 200
    )
    at = {"from": STRANGER_AT, "to": "12345", "text": "attaque Fataki", "id": "AT-x", "linkId": "l"}
    assert client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=at).status_code == 200
    # a number typed in a text (someone to call back) is at rest as sealed as the sender's own
    typed = {
        "from": STRANGER_AT,
        "to": "12345",
        "text": f"A3 Oicha appelez {JOINER[4:]}",
        "id": "AT-t",
        "linkId": "l",
    }
    assert client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=typed).status_code == 200
    join = {"from": JOINER, "to": "12345", "text": "JOIN Djugu", "id": "AT-join", "linkId": "l"}
    assert client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=join).status_code == 200
    for step in ("", "1", "1*1", "1*1*1", "1*1*1*5", "1*1*1*5*1"):
        dial(client, "ATUid_rest", CALLER, step)
    runtime.checkins.fire(runtime.settings.checkin_schedule, utcnow() - timedelta(minutes=1))

    def quiet() -> bool:
        with runtime.factory() as session:
            unprocessed = session.scalar(
                select(func.count()).where(Message.direction == "inbound", Message.processed_at.is_(None))
            )
            unsent = session.scalar(
                select(func.count()).where(
                    Message.direction == "outbound", Message.status.in_(("queued", "sending"))
                )
            )
        return unprocessed == 0 and unsent == 0

    wait_for(quiet, timeout=60)
    with runtime.factory() as session:
        sent = session.execute(
            select(Message.provider, Message.provider_message_id).where(Message.status == "sent")
        ).all()
    assert sent
    status_url = "http://testserver/webhooks/twilio/status"
    for provider, sid in sent:
        if provider == "twilio":
            receipt = {"MessageSid": sid or "", "MessageStatus": "delivered", "To": "+243990000001"}
            r = client.post(
                "/webhooks/twilio/status", data=receipt, headers=signed_headers(receipt, status_url)
            )
            assert r.status_code == 204
    people = client.get("/api/v1/people", headers=ADMIN, params={"limit": 200}).json()["items"]
    assert normalize(IMPORTED, "CD").value in {p["phone"] for p in people}  # read back in clear
    return corpus_numbers() | {
        STRANGER_TW,
        normalize(STRANGER_AT, "CD").value,
        JOINER,
        CALLER,
        SERVICE_NUMBER,
        normalize(IMPORTED, "CD").value,
        "+243990000001",
    }


def test_numbers_are_found_in_any_notation() -> None:
    for written in ("+243810000001", "0810000001", "00243 81 000 0001", "(081) 000-0001", "081.000.0001"):
        assert leaks(f'x"{written}"y'.encode(), ["+243810000001", "+243810000002"]) == ["+243810000001"]
    assert leaks(b"0810000002 ", ["+243810000001"]) == []


def test_no_number_of_a_run_is_stored_in_clear(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, db_url: str
) -> None:
    settings = providers("twilio,africastalking")
    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        numbers = run_traffic(client, runtime)
        assert len(numbers) > 20 and twilio_fake.requests
        assert leaks(stored_bytes(db_url), numbers) == []  # the file and the WAL of a running service
    assert leaks(stored_bytes(db_url), numbers) == []  # and once it has stopped

    db = keyed_engine(db_url)
    with db.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for column in encrypted_columns(table):
                stored = conn.execute(select(type_coerce(column, Text)).where(column.is_not(None))).scalars()
                assert all(v.startswith(f"k1:{TEST_KEYRING.newest.id}:") for v in stored), column
            # every row's blind index is the one of its number: none forgotten, none stale
            for source, index in blind_indexes(table):
                rows = conn.execute(select(table.c[source], table.c[index])).all()
                assert rows or table.name != "people"
                assert all(i == TEST_KEYRING.index(n) for n, i in rows), (table.name, index)
    db.dispose()
