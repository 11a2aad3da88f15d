"""Exports: CAP 1.2 alerts (validated against the OASIS schema), the Atom feed, the CSV files."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import select, update

from app.config import Settings
from app.db import transaction
from app.main import create_app
from app.models import Alert, Incident
from app.schemas import AlertPublic, IncidentPublic
from app.services.runtime import Runtime
from tests.helpers import AT_SECRET, at_form, count, wait_for
from tests.test_api import add_token
from tests.test_incidents_api import setup

CAP = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM = "http://www.w3.org/2005/Atom"
NS = {"cap": CAP, "atom": ATOM}
SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "schemas" / "CAP-v1.2.xsd")))
SENDER = "alerts.example.org"
VIEWER = {"Authorization": "Bearer viewer-token"}
OFFICER = {"Authorization": "Bearer officer-token"}


@pytest.fixture
def app_client(make_settings: Callable[..., Settings], db_url: str) -> Iterator[TestClient]:
    """The app with a configured CAP sender, the incidents of test_incidents_api's setup, two tokens."""
    with TestClient(create_app(make_settings(cap_sender=SENDER))) as client:
        setup(client, db_url)
        add_token(db_url, "viewer", "viewer-token")
        add_token(db_url, "officer", "officer-token")
        yield client


def runtime_of(client: TestClient) -> Runtime:
    return client.app.state.runtime  # type: ignore[attr-defined,no-any-return]


def incidents(client: TestClient, auth: dict[str, str], **params: str) -> list[dict[str, object]]:
    r = client.get("/api/v1/incidents", params={"limit": "500", **params}, headers=auth)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def by_place(client: TestClient, auth: dict[str, str], place: str, category: str) -> dict[str, object]:
    return next(i for i in incidents(client, auth) if i["place_name"] == place and i["category"] == category)


def valid_cap(body: bytes) -> etree._Element:
    """The alert of a CAP document, after checking it against the OASIS CAP 1.2 schema."""
    root = etree.fromstring(body)
    SCHEMA.assertValid(root)
    return root


def text(root: etree._Element, path: str) -> str | None:
    return root.findtext(path, namespaces=NS)


def cap(client: TestClient, key: object, auth: dict[str, str]) -> etree._Element:
    r = client.get(f"/api/v1/incidents/{key}/cap", headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/cap+xml"
    return valid_cap(r.content)


def read_csv(body: bytes) -> list[dict[str, str]]:
    assert body.startswith("\ufeff".encode()), "a byte order mark, so Excel reads UTF-8"
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))


# -- CAP ---------------------------------------------------------------------------------------
def test_cap_goes_alert_update_cancel_each_valid_and_referencing_the_one_before(
    app_client: TestClient, auth: dict[str, str]
) -> None:
    looting = by_place(app_client, auth, "Bunia", "looting")  # one report: a new incident
    code = looting["code"]
    first = cap(app_client, code, VIEWER)
    assert text(first, "cap:msgType") == "Alert" and text(first, "cap:references") is None
    assert text(first, "cap:identifier") == f"kengele:{SENDER}:{code}:1"
    assert text(first, "cap:sender") == SENDER
    assert (text(first, "cap:status"), text(first, "cap:scope")) == ("Actual", "Restricted")
    assert "do not publish" in (text(first, "cap:restriction") or "")
    assert text(first, "cap:incidents") == code
    sent = text(first, "cap:sent") or ""
    assert sent.endswith("-00:00") and "." not in sent  # CAP's UTC, whole seconds
    info = first.find("cap:info", NS)
    assert info is not None
    assert (text(info, "cap:category"), text(info, "cap:event")) == ("Security", "Looting")
    # looting is medium; one reporter is a possibility, not an observation
    assert (text(info, "cap:urgency"), text(info, "cap:severity"), text(info, "cap:certainty")) == (
        "Expected",
        "Moderate",
        "Possible",
    )
    assert text(info, "cap:headline") == "Looting at Bunia, Irumu"
    assert "1 report from 1 reporter" in (text(info, "cap:description") or "")
    assert text(info, "cap:area/cap:areaDesc") == "Bunia, Irumu"
    assert text(info, "cap:area/cap:circle") == "1.55940,30.25220 5"
    assert etree.tostring(cap(app_client, looting["id"], VIEWER)) == etree.tostring(first)  # id or code
    assert etree.tostring(cap(app_client, code, auth)) == etree.tostring(first)  # the same for everyone

    assert app_client.post(f"/api/v1/incidents/{code}/ack", headers=auth).status_code == 200
    second = cap(app_client, code, VIEWER)
    assert text(second, "cap:msgType") == "Update"
    assert text(second, "cap:identifier") == f"kengele:{SENDER}:{code}:2"
    assert text(second, "cap:references") == f"{SENDER},kengele:{SENDER}:{code}:1,{sent}"
    assert "acknowledged" in (text(second, "cap:info/cap:description") or "")
    assert etree.tostring(cap(app_client, code, VIEWER)) == etree.tostring(second)  # stable when unchanged

    assert app_client.post(f"/api/v1/incidents/{code}/close", headers=auth).status_code == 200
    third = cap(app_client, code, VIEWER)
    assert text(third, "cap:msgType") == "Cancel"
    assert text(third, "cap:identifier") == f"kengele:{SENDER}:{code}:3"
    assert text(third, "cap:references") == (f"{SENDER},kengele:{SENDER}:{code}:2,{text(second, 'cap:sent')}")
    assert text(third, "cap:info/cap:urgency") == "Past"


def test_merges_and_moves_are_versions_and_keep_the_earlier_ones_as_they_were(
    app_client: TestClient, auth: dict[str, str]
) -> None:
    djugu = by_place(app_client, auth, "Djugu", "attack")  # two reports: version 2
    bunia = by_place(app_client, auth, "Bunia", "attack")  # one report: version 1
    before = {i["code"]: cap(app_client, i["code"], VIEWER) for i in (djugu, bunia)}
    r = app_client.post(
        f"/api/v1/incidents/{bunia['code']}/merge", json={"into": djugu["code"]}, headers=auth
    )
    assert r.status_code == 200, r.text

    def follows(alert: etree._Element, code: object, version: int) -> None:
        """`alert` is version `version` of `code`, referencing the version before as it was served."""
        earlier = before[str(code)]
        assert text(alert, "cap:identifier") == f"kengele:{SENDER}:{code}:{version}"
        assert text(earlier, "cap:identifier") == f"kengele:{SENDER}:{code}:{version - 1}"
        assert (
            text(alert, "cap:references")
            == f"{SENDER},{text(earlier, 'cap:identifier')},{text(earlier, 'cap:sent')}"
        )

    merged = cap(app_client, djugu["code"], VIEWER)
    follows(merged, djugu["code"], 3)
    assert text(merged, "cap:msgType") == "Update"
    assert "3 reports from 3 reporters" in (text(merged, "cap:info/cap:description") or "")
    gone = cap(app_client, bunia["code"], VIEWER)
    follows(gone, bunia["code"], 2)  # closed by the merge: one change, not two
    assert text(gone, "cap:msgType") == "Cancel"

    before = {str(djugu["code"]): merged, str(bunia["code"]): gone}
    detail = app_client.get(f"/api/v1/incidents/{djugu['code']}", headers=auth).json()
    first = detail["reports"][0]["id"]  # recorded into Djugu: its change stays Djugu's
    r = app_client.post(f"/api/v1/alerts/{first}/move", json={"incident_id": None}, headers=auth)
    assert r.status_code == 200, r.text
    own = r.json()
    follows(cap(app_client, djugu["code"], VIEWER), djugu["code"], 4)
    assert text(cap(app_client, bunia["code"], VIEWER), "cap:identifier") == text(gone, "cap:identifier")
    alone = cap(app_client, own["code"], VIEWER)  # opened by the move: new
    assert text(alone, "cap:msgType") == "Alert"
    assert text(alone, "cap:identifier") == f"kengele:{SENDER}:{own['code']}:1"


def test_each_escalation_is_a_version(
    make_settings: Callable[..., Settings], db_url: str, auth: dict[str, str]
) -> None:
    settings = make_settings(cap_sender=SENDER, ack_timeout=1, escalation_poll=0.1)
    with TestClient(create_app(settings)) as client:
        setup(client, db_url)
        code = by_place(client, auth, "Bunia", "looting")["code"]

        def history() -> list[str]:
            detail = client.get(f"/api/v1/incidents/{code}", headers=auth).json()
            return [step["action"] for step in detail["history"]]

        wait_for(lambda: "escalate" in history())
        assert client.post(f"/api/v1/incidents/{code}/ack", headers=auth).status_code == 200  # no more

        def settled() -> tuple[int, etree._Element] | None:
            """The escalations and the alert, read while no pass begun before the ack still commits."""
            escalations, alert = history().count("escalate"), cap(client, code, auth)
            return (escalations, alert) if history().count("escalate") == escalations else None

        escalations, alert = wait_for(settled)
        # opened, each escalation, the acknowledgement
        assert text(alert, "cap:identifier") == f"kengele:{SENDER}:{code}:{1 + escalations + 1}"
        assert text(alert, "cap:msgType") == "Update"


def test_an_incident_with_two_reports_is_an_update_and_the_sender_defaults_to_the_public_host(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    setup(client, db_url)
    djugu = by_place(client, auth, "Djugu", "attack")  # two reports, two reporters, 20 people
    alert = cap(client, djugu["code"], auth)
    assert text(alert, "cap:sender") == "testserver"  # KENGELE_PUBLIC_URL http://testserver
    assert text(alert, "cap:msgType") == "Update"
    assert text(alert, "cap:identifier") == f"kengele:testserver:{djugu['code']}:2"
    assert (text(alert, "cap:references") or "").startswith(
        f"testserver,kengele:testserver:{djugu['code']}:1,"
    )
    info = alert.find("cap:info", NS)
    assert info is not None
    assert (text(info, "cap:urgency"), text(info, "cap:severity"), text(info, "cap:certainty")) == (
        "Immediate",
        "Extreme",
        "Likely",
    )


def test_an_unlocated_incident_has_no_circle_and_is_still_valid(
    app_client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    form = at_form(sender="+243810000077", text="A9", pid="AT-NOWHERE")
    app_client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form)
    wait_for(lambda: count(db_url, direction="outbound", purpose="reply") == 5)
    threat = next(i for i in incidents(app_client, auth) if i["category"] == "threat")
    assert threat["precision"] in ("unknown", "country")
    alert = cap(app_client, threat["code"], VIEWER)
    area = alert.find("cap:info/cap:area", NS)
    assert area is not None and area.find("cap:circle", NS) is None
    assert text(area, "cap:areaDesc")
    assert text(alert, "cap:info/cap:headline") == "Threat (place unknown)"


def test_what_a_reporter_typed_is_escaped_and_no_number_is_in_a_cap_alert(
    app_client: TestClient, auth: dict[str, str]
) -> None:
    looting = by_place(app_client, auth, "Bunia", "looting")
    typed = 'Kitchanga <script>alert(1)</script> & "Mama" 0810000009\x01'
    with transaction(runtime_of(app_client).factory) as session:
        session.execute(update(Incident).where(Incident.id == looting["id"]).values(place_name=typed))
    for auth_ in (auth, VIEWER):  # an officer's copy may be passed on: masked as a viewer's
        r = app_client.get(f"/api/v1/incidents/{looting['code']}/cap", headers=auth_)
        assert b"<script>" not in r.content and b"0810000009" not in r.content
        alert = valid_cap(r.content)
        area_desc = text(alert, "cap:info/cap:area/cap:areaDesc")
        assert area_desc == 'Kitchanga <script>alert(1)</script> & "Mama" ********09\ufffd, Irumu'
        assert "<script>" in (text(alert, "cap:info/cap:headline") or "")
    feed = app_client.get("/api/v1/incidents.cap", headers=auth)
    assert b"<script>" not in feed.content and b"0810000009" not in feed.content
    etree.fromstring(feed.content)


def test_unknown_and_malformed_incidents_and_missing_tokens(
    app_client: TestClient, auth: dict[str, str]
) -> None:
    r = app_client.get("/api/v1/incidents/K999999/cap", headers=auth)
    assert r.status_code == 404 and r.json()["detail"] == "no incident K999999"
    for bad in ("K", "42x", "-1"):
        r = app_client.get(f"/api/v1/incidents/{bad}/cap", headers=auth)
        assert r.status_code == 422 and r.json()["detail"].startswith("incident_id: "), bad
    for path in (
        "/api/v1/incidents/K1/cap",
        "/api/v1/incidents.cap",
        "/api/v1/incidents.csv",
        "/api/v1/alerts.csv",
    ):
        assert app_client.get(path).status_code == 401, path
        assert app_client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401, path
    # the token is checked before the filters
    assert app_client.get("/api/v1/incidents.csv", params={"since": "soon"}).status_code == 401
    for path, param, value in (
        ("/api/v1/incidents.csv", "since", "soon"),
        ("/api/v1/incidents.csv", "status", "burning"),
        ("/api/v1/incidents.cap", "limit", "0"),
        ("/api/v1/alerts.csv", "incident_id", "K1"),
    ):
        r = app_client.get(path, params={param: value}, headers=auth)
        assert r.status_code == 422 and r.json()["detail"].startswith(f"{param}: "), (path, r.text)


def test_a_cap_sender_cap_refuses_what_cap_forbids(make_settings: Callable[..., Settings]) -> None:
    for bad in ("alerts example.org", "a,b", "a<b", "a&b"):
        with pytest.raises(ValueError, match="cap_sender"):
            make_settings(cap_sender=bad)
    assert make_settings(cap_sender=" ").cap_origin == "testserver"


# -- Atom --------------------------------------------------------------------------------------
def test_the_atom_feed_lists_the_incidents_each_with_a_valid_cap_alert(
    app_client: TestClient, auth: dict[str, str]
) -> None:
    r = app_client.get("/api/v1/incidents.cap", headers=VIEWER)
    assert r.status_code == 200 and r.headers["content-type"] == "application/atom+xml"
    feed = etree.fromstring(r.content)
    assert feed.tag == f"{{{ATOM}}}feed"
    for required in ("atom:id", "atom:title", "atom:updated", "atom:author/atom:name"):
        assert text(feed, required), required
    listed = incidents(app_client, auth)
    entries = feed.findall("atom:entry", NS)
    assert len(entries) == len(listed) == 3
    for entry, incident in zip(entries, listed, strict=True):  # newest first, as the JSON list
        for required in ("atom:id", "atom:title", "atom:updated"):
            assert text(entry, required), required
        link = entry.find("atom:link[@rel='alternate']", NS)
        assert link is not None and link.get("type") == "application/cap+xml"
        assert link.get("href") == f"http://testserver/api/v1/incidents/{incident['code']}/cap"
        content = entry.find("atom:content", NS)
        assert content is not None and content.get("type") == "application/cap+xml"
        (alert,) = content
        SCHEMA.assertValid(etree.ElementTree(alert))
        served = cap(app_client, incident["code"], VIEWER)
        assert text(alert, "cap:identifier") == text(served, "cap:identifier")
        assert text(entry, "atom:title") == text(served, "cap:info/cap:headline")
    looting = app_client.get("/api/v1/incidents.cap", params={"category": "looting"}, headers=VIEWER)
    assert len(etree.fromstring(looting.content).findall("atom:entry", NS)) == 1
    one = app_client.get("/api/v1/incidents.cap", params={"limit": "1"}, headers=VIEWER)
    (entry,) = etree.fromstring(one.content).findall("atom:entry", NS)
    assert text(entry, "atom:id") == f"http://testserver/api/v1/incidents/{listed[0]['code']}/cap"
    none = app_client.get("/api/v1/incidents.cap", params={"status": "closed"}, headers=VIEWER)
    empty = etree.fromstring(none.content)
    assert empty.findall("atom:entry", NS) == [] and text(empty, "atom:updated")


# -- CSV ---------------------------------------------------------------------------------------
def test_incidents_csv_has_every_row_of_the_filter(app_client: TestClient, auth: dict[str, str]) -> None:
    r = app_client.get("/api/v1/incidents.csv", headers=auth)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="kengele-incidents-')
    rows = read_csv(r.content)
    assert list(rows[0]) == list(IncidentPublic.model_fields)
    listed = {str(i["id"]): i for i in incidents(app_client, auth)}
    assert {row["id"] for row in rows} == set(listed)
    djugu = next(row for row in rows if row["place_name"] == "Djugu")
    assert (djugu["report_count"], djugu["reporter_count"], djugu["status"]) == ("2", "2", "open")
    assert djugu["first_reported_at"] == listed[djugu["id"]]["first_reported_at"].replace("Z", "+00:00")  # type: ignore[union-attr]
    looting = read_csv(
        app_client.get("/api/v1/incidents.csv", params={"category": "looting"}, headers=auth).content
    )
    assert [row["place_name"] for row in looting] == ["Bunia"]
    code = looting[0]["code"]
    assert app_client.post(f"/api/v1/incidents/{code}/close", headers=auth).status_code == 200
    closed = read_csv(
        app_client.get("/api/v1/incidents.csv", params={"status": "closed"}, headers=auth).content
    )
    assert [row["code"] for row in closed] == [code]
    later = app_client.get("/api/v1/incidents.csv", params={"since": "2100-01-01T00:00:00Z"}, headers=auth)
    assert read_csv(later.content) == [] and later.content.decode("utf-8-sig").startswith("id,code,")


def test_alerts_csv_masks_numbers_for_a_viewer_and_shows_them_to_an_officer(
    app_client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    form = at_form(sender="+243810000005", text="A1 Djugu appelez 0810000009", pid="AT-CALL")
    app_client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form)
    wait_for(lambda: count(db_url, direction="outbound", purpose="reply") == 5)
    viewer = app_client.get("/api/v1/alerts.csv", headers=VIEWER)
    assert viewer.status_code == 200
    rows = read_csv(viewer.content)
    assert list(rows[0]) == list(AlertPublic.model_fields) and len(rows) == 5
    for number in (b"810000001", b"810000005", b"810000009"):
        assert number not in viewer.content
    called = next(row for row in rows if "appelez" in row["text"])
    # a phone starts with "+": a cell Excel would take for a formula, so it is kept as text
    assert called["sender"] == "'+243*****0005"
    assert called["text"] == "A1 Djugu appelez ********09"
    officer = read_csv(app_client.get("/api/v1/alerts.csv", headers=OFFICER).content)
    called = next(row for row in officer if "appelez" in row["text"])
    assert (called["sender"], called["text"]) == ("'+243810000005", "A1 Djugu appelez 0810000009")
    mine = app_client.get("/api/v1/alerts.csv", params={"incident_id": called["incident_id"]}, headers=auth)
    assert {row["incident_id"] for row in read_csv(mine.content)} == {called["incident_id"]}
    assert len(read_csv(mine.content)) == 3  # Djugu's two and this one
    later = app_client.get("/api/v1/alerts.csv", params={"since": "2100-01-01T00:00:00+02:00"}, headers=auth)
    assert read_csv(later.content) == []


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_neutralised(
    app_client: TestClient, auth: dict[str, str]
) -> None:
    runtime = runtime_of(app_client)
    with transaction(runtime.factory) as session:
        alert = session.scalars(select(Alert).order_by(Alert.id)).first()
        assert alert is not None
        alert.text = "=cmd|' /C calc'!A0"
        alert.place_query = "@SUM(1+1)"
        incident = session.get(Incident, alert.incident_id)
        assert incident is not None
        incident.place_name = "-2+3"
        incident.area = ' =HYPERLINK("http://evil")'
    (row,) = [
        r
        for r in read_csv(app_client.get("/api/v1/alerts.csv", headers=auth).content)
        if r["text"].endswith("A0")
    ]
    assert (row["text"], row["place_query"]) == ("'=cmd|' /C calc'!A0", "'@SUM(1+1)")
    (inc,) = [
        r
        for r in read_csv(app_client.get("/api/v1/incidents.csv", headers=auth).content)
        if r["id"] == row["incident_id"]
    ]
    assert (inc["place_name"], inc["area"]) == ("'-2+3", '\' =HYPERLINK("http://evil")')
    assert not inc["lat"].startswith("'")  # our own numbers stay numbers


def test_a_csv_larger_than_a_batch_has_every_row(
    app_client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.routes import exports as routes

    monkeypatch.setattr(routes, "CSV_BATCH", 2)  # 4 alerts: batches of 2, 2, then an empty one
    rows = read_csv(app_client.get("/api/v1/alerts.csv", headers=auth).content)
    ids = [int(row["id"]) for row in rows]
    assert len(ids) == 4 and ids == sorted(ids, reverse=True)
    monkeypatch.setattr(routes, "CSV_BATCH", 3)  # 3 incidents: one full batch, then an empty one
    assert len(read_csv(app_client.get("/api/v1/incidents.csv", headers=auth).content)) == 3
