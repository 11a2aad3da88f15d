"""The read-only API of the foundation: messages, triage, health, readiness, metrics, auth."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from app.auth import hash_token
from app.config import Settings
from app.db import make_sessionmaker, transaction
from app.main import create_app
from app.models import ApiToken
from tests.helpers import AT_SECRET, at_form, count, wait_for


def add_token(db_url: str, role: str, token: str) -> None:
    engine = create_engine(db_url)
    with transaction(make_sessionmaker(engine)) as session:
        session.add(ApiToken(name=f"{role} test", role=role, token_hash=hash_token(token)))
    engine.dispose()


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_metrics_count_inbound(client: TestClient) -> None:
    def stored() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith('kengele_inbound_messages_total{provider="africastalking",result="stored"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = stored()
    assert client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form()).status_code == 200
    assert stored() == before + 1


def test_messages_need_a_token(client: TestClient, db_url: str) -> None:
    assert client.get("/api/v1/messages").status_code == 401
    assert client.get("/api/v1/messages", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/messages", headers={"Authorization": "Basic x"}).status_code == 401
    add_token(db_url, "viewer", "viewer-token")
    add_token(db_url, "officer", "officer-token")
    r = client.get("/api/v1/messages", headers={"Authorization": "Bearer viewer-token"})
    assert r.status_code == 403 and "officer" in r.json()["detail"]
    r = client.get("/api/v1/messages", headers={"Authorization": "Bearer officer-token"})
    assert r.status_code == 200 and r.json() == {"items": [], "total": 0}


def test_messages_filters_and_paging(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    for i in range(5):
        client.post(
            f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(text=f"A1 Djugu {i}", pid=f"AT{i}")
        )
    wait_for(lambda: count(db_url, direction="outbound", status="sent") == 5)
    inbound = client.get("/api/v1/messages", params={"direction": "inbound", "limit": 2}, headers=auth).json()
    assert inbound["total"] == 5 and len(inbound["items"]) == 2
    assert [m["provider_message_id"] for m in inbound["items"]] == ["AT4", "AT3"]  # newest first
    page2 = client.get(
        "/api/v1/messages", params={"direction": "inbound", "limit": 2, "offset": 2}, headers=auth
    )
    assert [m["provider_message_id"] for m in page2.json()["items"]] == ["AT2", "AT1"]
    replies = client.get("/api/v1/messages", params={"purpose": "reply"}, headers=auth).json()
    assert replies["total"] == 5
    assert all(m["direction"] == "outbound" and m["status"] == "sent" for m in replies["items"])
    assert all(m["recipient"] == "+243810000002" for m in replies["items"])
    by_status = {
        status: client.get("/api/v1/messages", params={"status": status}, headers=auth).json()["total"]
        for status in ("sent", "received", "queued")
    }
    assert by_status == {"sent": 5, "received": 5, "queued": 0}


def test_bad_query_names_the_field(client: TestClient, auth: dict[str, str]) -> None:
    r = client.get("/api/v1/messages", params={"direction": "sideways"}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"].startswith("direction")
    r = client.get("/api/v1/messages", params={"limit": 0}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"].startswith("limit")
    r = client.get("/api/v1/messages", params={"since": "yesterday"}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"].startswith("since")
    r = client.get("/api/v1/messages", params={"offset": 10**12}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"].startswith("offset")
    for since in ("2024-01-01T00:00:00", "2024-01-01", "2024-01-01T02:00:00+02:00"):
        assert client.get("/api/v1/messages", params={"since": since}, headers=auth).status_code == 200


def test_triage_lists_what_nobody_understood(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    client.post(
        f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(text="bonjour je veux savoir", pid="T1")
    )
    client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(text="A1 Djugu", pid="T2"))
    wait_for(lambda: count(db_url, direction="outbound") == 2)
    wait_for(lambda: client.get("/api/v1/triage", headers=auth).json()["total"] == 1)
    (item,) = client.get("/api/v1/triage", headers=auth).json()["items"]
    assert item["text"] == "bonjour je veux savoir" and item["provider_message_id"] == "T1"


def test_readyz_fails_without_database(make_settings: Callable[..., Settings], tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/missing/dir/x.db")
    with TestClient(create_app(settings, processor=False, dispatcher=False)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "database" in r.json()["detail"]
