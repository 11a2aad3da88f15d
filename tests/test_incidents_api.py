"""Incidents and alerts through the API: lists, details, GeoJSON, masking, ack, close, merge, move."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import transaction
from app.models import AuditLog, Person
from app.services import gazetteer
from app.services.runtime import Runtime
from tests.helpers import AT_SECRET, at_form, count, wait_for
from tests.test_api import add_token

PLACES = [
    gazetteer.PlaceRow("ITU-002", "Djugu", (), 1.922, 30.501, "Ituri", "Djugu", "CD", None, None, "csv"),
    gazetteer.PlaceRow("ITU-001", "Bunia", (), 1.5594, 30.2522, "Ituri", "Irumu", "CD", None, None, "csv"),
]


def setup(client: TestClient, db_url: str) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    gazetteer.store(runtime.engine, PLACES)
    with transaction(runtime.factory) as session:
        session.add(
            Person(name="Capt. Dufour", phone="+243990000001", role="officer", language="fr", level=1)
        )
    texts = [
        ("AT1", "+243810000001", "A1 Djugu 20"),
        ("AT2", "+243810000002", "attaque djugu"),
        ("AT3", "+243810000003", "A1 Bunia"),
        ("AT4", "+243810000004", "A6 Bunia"),
    ]
    for pid, sender, text in texts:
        client.post(
            f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(sender=sender, text=text, pid=pid)
        )
    wait_for(lambda: count(db_url, direction="outbound", purpose="reply") == 4)
    return runtime


def test_incidents_alerts_and_geojson(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    setup(client, db_url)
    page = client.get("/api/v1/incidents", headers=auth).json()
    assert page["total"] == 3
    djugu = next(i for i in page["items"] if i["place_name"] == "Djugu")
    assert (djugu["report_count"], djugu["reporter_count"], djugu["precision"]) == (2, 2, "place")
    assert djugu["code"] == f"K{djugu['id']}" and djugu["severity"] == "critical"  # attack, 20 people
    assert client.get("/api/v1/incidents", params={"category": "looting"}, headers=auth).json()["total"] == 1
    assert client.get("/api/v1/incidents", params={"status": "closed"}, headers=auth).json()["total"] == 0
    detail = client.get(f"/api/v1/incidents/{djugu['id']}", headers=auth).json()
    assert [r["sender"] for r in detail["reports"]] == ["+243810000001", "+243810000002"]
    wait_for(lambda: client.get(f"/api/v1/incidents/{djugu['id']}", headers=auth).json()["notifications"])
    (told,) = client.get(f"/api/v1/incidents/{djugu['id']}", headers=auth).json()["notifications"]
    assert told["recipient"] == "+243990000001" and told["purpose"] == "alert_forward"
    assert detail["reports"][0]["details"]["count"] == 20
    alerts = client.get("/api/v1/alerts", params={"incident_id": djugu["id"]}, headers=auth).json()
    assert alerts["total"] == 2
    geo = client.get("/api/v1/incidents.geojson", headers=auth).json()
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 3
    assert geo["features"][0]["geometry"]["type"] == "Point"
    assert client.get("/api/v1/incidents/999999", headers=auth).status_code == 404


def test_viewers_see_masked_numbers_and_cannot_act(client: TestClient, db_url: str) -> None:
    setup(client, db_url)
    add_token(db_url, "viewer", "viewer-token")
    viewer = {"Authorization": "Bearer viewer-token"}
    alerts = client.get("/api/v1/alerts", headers=viewer).json()["items"]
    assert alerts and all(a["sender"].startswith("+243*****") for a in alerts)
    incident = client.get("/api/v1/incidents", headers=viewer).json()["items"][0]
    assert client.post(f"/api/v1/incidents/{incident['id']}/ack", headers=viewer).status_code == 403
    djugu = next(
        i
        for i in client.get("/api/v1/incidents", headers=viewer).json()["items"]
        if i["place_name"] == "Djugu"
    )
    wait_for(lambda: client.get(f"/api/v1/incidents/{djugu['id']}", headers=viewer).json()["notifications"])
    notes = client.get(f"/api/v1/incidents/{djugu['id']}", headers=viewer).json()["notifications"]
    assert all(n["recipient"].startswith("+243*****") for n in notes)


def test_ack_close_merge_and_move(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    runtime = setup(client, db_url)
    items = client.get("/api/v1/incidents", headers=auth).json()["items"]
    djugu = next(i for i in items if i["place_name"] == "Djugu")
    bunia_attack = next(i for i in items if i["place_name"] == "Bunia" and i["category"] == "attack")
    looting = next(i for i in items if i["category"] == "looting")
    acked = client.post(f"/api/v1/incidents/{djugu['id']}/ack", headers=auth).json()
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "bootstrap-admin"
    again = client.post(f"/api/v1/incidents/{djugu['id']}/ack", headers=auth).json()
    assert again["acknowledged_at"] == acked["acknowledged_at"]  # the first one wins
    bad = client.post(f"/api/v1/incidents/{djugu['id']}/merge", json={"into": looting["id"]}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("into")
    merged = client.post(
        f"/api/v1/incidents/{bunia_attack['id']}/merge", json={"into": djugu["id"]}, headers=auth
    )
    assert merged.status_code == 200 and merged.json()["report_count"] == 3
    source = client.get(f"/api/v1/incidents/{bunia_attack['id']}", headers=auth).json()
    assert source["status"] == "closed" and source["reports"] == []
    report = merged.json()["reports"][-1]
    moved = client.post(
        f"/api/v1/alerts/{report['id']}/move", json={"incident_id": None}, headers=auth
    ).json()
    assert moved["report_count"] == 1 and moved["id"] not in (djugu["id"], bunia_attack["id"])
    assert client.get(f"/api/v1/incidents/{djugu['id']}", headers=auth).json()["report_count"] == 2
    closed = client.post(f"/api/v1/incidents/{djugu['id']}/close", headers=auth).json()
    assert closed["status"] == "closed"
    assert client.post("/api/v1/alerts/999999/move", json={}, headers=auth).status_code == 404
    with runtime.factory() as session:
        actions = session.scalars(
            select(AuditLog.action).where(AuditLog.actor != "escalation").order_by(AuditLog.id)
        ).all()
    assert actions == ["ack", "merge", "move_report", "close"]


def test_bad_ids_and_times_are_422_not_500(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    setup(client, db_url)
    huge = "99999999999999999999"
    assert client.get(f"/api/v1/incidents/{huge}", headers=auth).status_code == 422
    assert client.get("/api/v1/alerts", params={"incident_id": huge}, headers=auth).status_code == 422
    assert client.post(f"/api/v1/alerts/{huge}/move", json={}, headers=auth).status_code == 422
    item = client.get("/api/v1/incidents", headers=auth).json()["items"][0]
    r = client.post(f"/api/v1/incidents/{item['id']}/merge", json={"into": int(huge)}, headers=auth)
    assert r.status_code == 422 and "into" in r.json()["detail"]
    for since in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59"):
        for path in ("/api/v1/incidents", "/api/v1/alerts"):
            r = client.get(path, params={"since": since}, headers=auth)
            assert r.status_code == 422 and r.json()["detail"].startswith("since"), (path, since, r.text)


def test_merge_into_a_closed_incident_is_refused(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    setup(client, db_url)
    items = client.get("/api/v1/incidents", params={"category": "attack"}, headers=auth).json()["items"]
    a, b = items[0], items[1]
    client.post(f"/api/v1/incidents/{b['id']}/close", headers=auth)
    r = client.post(f"/api/v1/incidents/{a['id']}/merge", json={"into": b["id"]}, headers=auth)
    assert r.status_code == 422 and "closed" in r.json()["detail"]


def test_moving_the_only_report_closes_the_emptied_incident(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    setup(client, db_url)
    looting = client.get("/api/v1/incidents", params={"category": "looting"}, headers=auth).json()["items"][0]
    report = client.get(f"/api/v1/incidents/{looting['id']}", headers=auth).json()["reports"][0]
    client.post(f"/api/v1/alerts/{report['id']}/move", json={}, headers=auth)
    emptied = client.get(f"/api/v1/incidents/{looting['id']}", headers=auth).json()
    assert emptied["status"] == "closed" and emptied["report_count"] == 0


# -- incidents named by code (issue 13): every /incidents/{incident_id}/... takes K42 as well as 42 --
def _keys(incident: dict[str, Any]) -> list[str]:
    """Every way to name one incident: its id, its code, the code in lower case, padded with zeros."""
    return [str(incident["id"]), incident["code"], incident["code"].lower(), f"k0{incident['id']}"]


def _seen(answer: dict[str, Any]) -> dict[str, Any]:
    """An incident's detail but its notifications, which the dispatcher updates meanwhile."""
    return {k: v for k, v in answer.items() if k != "notifications"}


DECISIONS = [("get", ""), ("post", "/ack"), ("post", "/close")]


def test_an_incident_by_code_is_the_incident_by_id(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    setup(client, db_url)
    items = client.get("/api/v1/incidents", headers=auth).json()["items"]
    djugu = next(i for i in items if i["place_name"] == "Djugu")
    assert djugu["code"] == f"K{djugu['id']}"
    for method, action in DECISIONS:
        by_id = client.request(method, f"/api/v1/incidents/{djugu['id']}{action}", headers=auth)
        assert by_id.status_code == 200, (action, by_id.text)
        for key in _keys(djugu):
            by_key = client.request(method, f"/api/v1/incidents/{key}{action}", headers=auth)
            assert by_key.status_code == 200, (action, key, by_key.text)
            assert _seen(by_key.json()) == _seen(by_id.json()), (action, key)
    # The other way round: a decision taken by code is the one the id then shows.
    looting = next(i for i in items if i["category"] == "looting")
    acked = client.post(f"/api/v1/incidents/{looting['code'].lower()}/ack", headers=auth).json()
    assert acked["status"] == "acknowledged" and acked["id"] == looting["id"]
    shown = client.get(f"/api/v1/incidents/{looting['id']}", headers=auth).json()
    assert shown["acknowledged_at"] == acked["acknowledged_at"]
    closed = client.post(f"/api/v1/incidents/{looting['code']}/close", headers=auth).json()
    assert closed["status"] == client.get(f"/api/v1/incidents/{looting['id']}", headers=auth).json()["status"]
    assert closed["status"] == "closed"


def test_merge_and_move_name_incidents_by_code(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    setup(client, db_url)
    items = client.get("/api/v1/incidents", params={"category": "attack"}, headers=auth).json()["items"]
    djugu = next(i for i in items if i["place_name"] == "Djugu")
    bunia = next(i for i in items if i["place_name"] == "Bunia")
    merged = client.post(
        f"/api/v1/incidents/{bunia['code'].lower()}/merge", json={"into": djugu["code"]}, headers=auth
    )
    assert merged.status_code == 200, merged.text
    assert (merged.json()["id"], merged.json()["report_count"]) == (djugu["id"], 3)
    report = merged.json()["reports"][-1]
    moved = client.post(f"/api/v1/alerts/{report['id']}/move", json={"incident_id": None}, headers=auth)
    back = client.post(
        f"/api/v1/alerts/{report['id']}/move", json={"incident_id": djugu["code"].lower()}, headers=auth
    )
    assert moved.status_code == back.status_code == 200
    assert back.json()["id"] == djugu["id"] and back.json()["report_count"] == 3


UNKNOWN = ["K999999", "k999999", "999999", "K0999999"]


def test_an_unknown_incident_is_404_naming_it(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    setup(client, db_url)
    item = client.get("/api/v1/incidents", headers=auth).json()["items"][0]
    for method, action in [*DECISIONS, ("post", "/merge")]:
        for key in UNKNOWN:
            body = {"into": item["id"]} if action == "/merge" else None
            r = client.request(method, f"/api/v1/incidents/{key}{action}", json=body, headers=auth)
            named = "K999999" if key.lower().startswith("k") else "999999"
            assert (r.status_code, r.json()) == (404, {"detail": f"no incident {named}"}), (action, key)
    for field, path in [("into", f"/api/v1/incidents/{item['id']}/merge"), ("incident_id", None)]:
        if path is None:
            report = client.get(f"/api/v1/incidents/{item['id']}", headers=auth).json()["reports"][0]
            path = f"/api/v1/alerts/{report['id']}/move"
        r = client.post(path, json={field: "k999999"}, headers=auth)
        assert (r.status_code, r.json()) == (404, {"detail": f"{field}: no incident K999999"}), field


MALFORMED = [
    "K",
    "k",
    "42x",
    "x42",
    "-1",
    "0",
    "K0",
    "K-1",
    "KK42",
    "K42.0",
    "1e3",
    "4 2",
    "\u0664\u0662",  # Arabic-Indic 42: a digit to Unicode, not an incident number
    "\u212a42",  # a Kelvin sign, which a case-blind Unicode match takes for K
    "99999999999999999999",
    "K99999999999999999999",
    "9" * 5000,  # longer than Python's int() reads
]


def test_a_malformed_incident_is_422_naming_the_parameter(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    setup(client, db_url)
    for method, action in [*DECISIONS, ("post", "/merge")]:
        for key in MALFORMED:
            body = {"into": 1} if action == "/merge" else None
            r = client.request(method, f"/api/v1/incidents/{key}{action}", json=body, headers=auth)
            assert r.status_code == 422, (action, key, r.status_code)
            assert r.json()["detail"].startswith("incident_id: "), (action, key, r.text)
    item = client.get("/api/v1/incidents", headers=auth).json()["items"][0]
    report = client.get(f"/api/v1/incidents/{item['id']}", headers=auth).json()["reports"][0]
    bodies: list[Any] = ["K", "42x", "-1", 0, -1, 1.5, True, [], {"id": 1}, "", "K99999999999999999999"]
    for field, path in [
        ("into", f"/api/v1/incidents/{item['code']}/merge"),
        ("incident_id", f"/api/v1/alerts/{report['id']}/move"),
    ]:
        for value in bodies:
            r = client.post(path, json={field: value}, headers=auth)
            assert r.status_code == 422, (field, value, r.status_code)
            assert r.json()["detail"].startswith(f"{field}: "), (field, value, r.text)


def test_roles_are_the_same_by_code(client: TestClient, db_url: str) -> None:
    setup(client, db_url)
    add_token(db_url, "viewer", "viewer-token")
    add_token(db_url, "officer", "officer-token")
    viewer = {"Authorization": "Bearer viewer-token"}
    officer = {"Authorization": "Bearer officer-token"}
    item = client.get("/api/v1/incidents", headers=viewer).json()["items"][0]
    code = item["code"].lower()
    table: list[tuple[str, str, dict[str, str], int]] = [
        ("get", f"/api/v1/incidents/{code}", {}, 401),
        ("get", "/api/v1/incidents/K", {}, 401),  # a malformed key tells nothing before the token
        ("get", f"/api/v1/incidents/{code}", viewer, 200),
        ("post", f"/api/v1/incidents/{code}/ack", viewer, 403),
        ("post", f"/api/v1/incidents/{code}/close", viewer, 403),
        ("post", "/api/v1/incidents/K/ack", viewer, 403),
        ("post", f"/api/v1/incidents/{code}/ack", officer, 200),
        ("post", f"/api/v1/incidents/{code}/close", officer, 200),
    ]
    for method, path, headers, status in table:
        assert client.request(method, path, headers=headers).status_code == status, (method, path, headers)
    shown = client.get(f"/api/v1/incidents/{item['id']}", headers=viewer).json()
    assert (shown["status"], shown["acknowledged_by"]) == ("closed", "officer test")
    assert all(r["sender"].startswith("+243*****") for r in shown["reports"])  # masked by code as by id


def test_the_openapi_document_says_id_or_code(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    incident_paths = [p for p in paths if p.startswith("/api/v1/incidents/{")]
    assert {"/api/v1/incidents/{incident_id}", "/api/v1/incidents/{incident_id}/ack"} <= set(incident_paths)
    for path in incident_paths:
        for operation in paths[path].values():
            (param,) = [p for p in operation["parameters"] if p["in"] == "path"]
            assert param["name"] == "incident_id" and "id or code" in param["description"], path
            assert param["schema"]["type"] == "string", path
