"""The dashboard's roster and admin pages: search, edit, JOIN requests, CSV in and out, users, tokens."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy import text as sql

import app
from app.db import transaction
from app.enums import ApiRole
from app.i18n import catalog
from app.models import AuditLog, Person
from app.services import accounts
from app.services.runtime import Runtime
from tests.conftest import ADMIN_TOKEN
from tests.helpers import engine as keyed_engine
from tests.test_escalation import sms
from tests.test_roster import FIELDS, load_places

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def people(db_url: str) -> dict[str, dict[str, object]]:
    """Every person by name, with their id and stored values."""
    engine = keyed_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Person).order_by(Person.id)).all()
    engine.dispose()
    return {r.name: {f: getattr(r, f) for f in ("id", *FIELDS)} for r in rows}


def runtime_of(client: TestClient) -> Runtime:
    return client.app.state.runtime  # type: ignore[attr-defined]


def add_user(client: TestClient, name: str, role: ApiRole) -> None:
    with transaction(runtime_of(client).factory) as session:
        accounts.create_user(session=session, name=name, role=role, password=PASSWORD, actor="test")


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Sign `client` in as `name`; the session's CSRF token (read from a page's form)."""
    login = client.get("/login")
    token = CSRF.search(login.text)
    assert token, login.text
    r = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token.group(1), "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = client.get("/")
    found = CSRF.search(page.text)
    assert page.status_code == 200 and found, page.text
    return found.group(1)


def browser(client: TestClient) -> TestClient:
    """Another browser on the same app (its own cookies)."""
    return TestClient(client.app)


def admin(client: TestClient) -> str:
    add_user(client, "Amina Admin", ApiRole.ADMIN)
    return sign_in(client, "Amina Admin")


def add_people(client: TestClient, rows: str) -> None:
    runtime = runtime_of(client)
    load_places(runtime.engine)
    data = "name,phone,role,place,level,area,active\n" + rows
    from app.services import roster

    with runtime.factory() as session:
        rules = roster.rules_for(
            session=session,
            region="CD",
            languages=runtime.pipeline.lexicon.grammars,
            places=runtime.pipeline.places,
        )
    report = roster.import_csv(runtime.factory, data, rules=lambda _: rules, actor="test")
    assert report.applied and not report.errors, report.errors


ROSTER = (
    "Jeanne Mave,+243810000001,focal_point,Djugu,,,true\n"
    "Élodie Kasi,+243810000002,focal_point,Bunia,,,false\n"
    "Capt. Dufour,+243990000001,officer,,1,Ituri,true\n"
    "Jean-Paul Mave,+243810000003,focal_point,Fataki,,,true\n"
)


def search(client: TestClient, **fields: str) -> Any:
    """The roster's search form, as a browser posts it; the page its redirect leads to."""
    asked = client.post(
        "/roster", data={**fields, "csrf_token": csrf_of_roster(client)}, follow_redirects=False
    )
    assert asked.status_code == 303, asked.text
    location = unquote(asked.headers["location"])
    # What was typed goes to the roster's URL sealed, never as typed: URLs stay in history and logs.
    assert "q" not in fields or fields["q"] not in location
    return client.get(asked.headers["location"])


def csrf_of_roster(client: TestClient) -> str:
    found = CSRF.search(client.get("/roster").text)
    assert found
    return found.group(1)


def names(html: str) -> list[str]:
    """The names the roster table lists, in order."""
    return re.findall(r'<td><a href="/roster/\d+">([^<]+)</a></td>', html)


def test_roster_search_and_filters(client: TestClient) -> None:
    admin(client)
    add_people(client, ROSTER)
    everyone = client.get("/roster")
    assert everyone.status_code == 200
    assert names(everyone.text) == ["Jeanne Mave", "Élodie Kasi", "Capt. Dufour", "Jean-Paul Mave"]
    assert "+243810000002" in everyone.text  # admins manage the roster: they see the numbers

    assert names(search(client, q="MAVE").text) == ["Jeanne Mave", "Jean-Paul Mave"]
    assert names(search(client, q="100%").text) == []  # LIKE characters are text
    # Every letter is folded, not only ASCII ones (SQLite's own lower() leaves "É" as it is).
    assert names(search(client, q="élodie").text) == ["Élodie Kasi"]
    assert names(search(client, q="ÉLODIE KASI").text) == ["Élodie Kasi"]
    # A full number in any notation finds its person through the blind index; a part finds nobody.
    assert names(search(client, q="0810 000 003").text) == ["Jean-Paul Mave"]
    assert names(search(client, q="+243 99 000 0001").text) == ["Capt. Dufour"]
    assert names(search(client, q="000003").text) == []

    assert names(client.get("/roster", params={"role": "officer"}).text) == ["Capt. Dufour"]
    assert names(client.get("/roster", params={"active": "false"}).text) == ["Élodie Kasi"]
    assert names(client.get("/roster", params={"area": "ituri"}).text) == ["Capt. Dufour"]
    both = search(client, q="mave", active="true", role="focal_point")
    assert names(both.text) == ["Jeanne Mave", "Jean-Paul Mave"]
    assert names(client.get("/roster", params={"status": "pending"}).text) == []

    for field, value in [("role", "chief"), ("status", "maybe"), ("active", "yes")]:
        r = client.get("/roster", params={field: value})
        assert r.status_code == 422 and f"{field}: " in r.text


def test_roster_pages_of_fifty(client: TestClient) -> None:
    admin(client)
    add_people(client, "".join(f"Person {i:03},+2438100{i:05},officer,,1,,true\n" for i in range(1, 56)))
    first = client.get("/roster")
    assert len(names(first.text)) == 50 and names(first.text)[0] == "Person 001"
    assert "55 people" in first.text and 'page=2">Next' in first.text
    second = client.get("/roster", params={"page": 2})
    assert names(second.text) == [f"Person {i:03}" for i in range(51, 56)]
    assert client.get("/roster", params={"page": 0}).status_code == 422


def test_edit_shows_the_field_at_fault_and_changes_nothing(client: TestClient, db_url: str) -> None:
    csrf = admin(client)
    add_people(client, ROSTER)
    before = people(db_url)["Jeanne Mave"]
    pid = before["id"]
    form = client.get(f"/roster/{pid}")
    assert form.status_code == 200 and 'value="+243810000001"' in form.text

    fields = {
        "name": "Jeanne M. Mave",
        "phone": "12345",
        "role": "focal_point",
        "language": "",
        "place": "Djugu",
        "lat": "",
        "lon": "",
        "level": "",
        "area": "",
        "shifts": "",
        "active": "true",
    }
    r = client.post(f"/roster/{pid}", data={**fields, "csrf_token": csrf})
    assert r.status_code == 422
    assert 'id="error-phone"' in r.text and "phone: not a valid phone number" in r.text
    assert 'value="Jeanne M. Mave"' in r.text and 'value="12345"' in r.text  # the values are kept
    assert people(db_url)["Jeanne Mave"] == before

    r = client.post(f"/roster/{pid}", data={**fields, "phone": "+243810000003", "csrf_token": csrf})
    assert r.status_code == 409 and "phone: already on the roster" in r.text
    assert people(db_url)["Jeanne Mave"] == before

    r = client.post(
        f"/roster/{pid}",
        data={**fields, "phone": "0810 000 009", "level": "x", "csrf_token": csrf},
    )
    assert r.status_code == 422 and 'id="error-level"' in r.text and 'id="error-phone"' not in r.text

    r = client.post(
        f"/roster/{pid}", data={**fields, "phone": "0810 000 009", "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == f"/roster/{pid}?saved=1"
    after = people(db_url)["Jeanne M. Mave"]
    assert (after["phone"], after["place_id"], after["active"]) == ("+243810000009", before["place_id"], True)
    with runtime_of(client).factory() as session:
        log = session.scalars(select(AuditLog).where(AuditLog.entity_id == str(pid))).all()
    assert (log[-1].actor, log[-1].action, log[-1].details["fields"]) == (
        "web:Amina Admin",
        "person_update",
        ["name", "phone"],
    )


def test_deactivate(client: TestClient, db_url: str) -> None:
    csrf = admin(client)
    add_people(client, ROSTER)
    pid = people(db_url)["Capt. Dufour"]["id"]
    r = client.post(f"/roster/{pid}/deactivate", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/roster/{pid}"
    assert people(db_url)["Capt. Dufour"]["active"] is False
    assert names(client.get("/roster", params={"active": "false"}).text) == ["Élodie Kasi", "Capt. Dufour"]
    assert client.post("/roster/999/deactivate", data={"csrf_token": csrf}).status_code == 404


def test_join_requests_are_approved_or_rejected(client: TestClient, db_url: str) -> None:
    csrf = admin(client)
    runtime = runtime_of(client)
    load_places(runtime.engine)
    sms(runtime, "+243820000055", "JOIN Djugu", "j1")
    sms(runtime, "+243820000056", "JOIN", "j2")
    page = client.get("/roster")
    assert "2 JOIN requests waiting" in page.text
    pending = client.get("/roster", params={"status": "pending"})
    assert pending.text.count('action="/roster/') >= 4  # approve and reject for each
    first = people(db_url)
    one, two = (first[n]["id"] for n in sorted(first, key=lambda n: first[n]["id"]))

    back = "/roster?status=pending"
    r = client.post(f"/roster/{one}/approve", data={"csrf_token": csrf, "back": back}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == back
    r = client.post(f"/roster/{two}/reject", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    by_id = {p["id"]: p for p in people(db_url).values()}
    assert (by_id[one]["status"], by_id[one]["active"]) == ("approved", True)
    assert (by_id[two]["status"], by_id[two]["active"]) == ("rejected", False)
    again = client.post(f"/roster/{one}/approve", data={"csrf_token": csrf})
    assert again.status_code == 409 and "status: " in again.text and "not pending" in again.text
    assert "JOIN requests waiting" not in client.get("/roster").text


def upload(client: TestClient, csrf: str, text: str, *, skip: bool = False) -> object:
    data = {"csrf_token": csrf} | ({"skip_bad": "1"} if skip else {})
    return client.post("/roster/import", data=data, files={"file": ("people.csv", text.encode(), "text/csv")})


IMPORT = (
    "name,phone,role,place\n"
    "Mama Nizi,+243820000057,focal_point,Nizi\n"
    "Bad Phone,12345,focal_point,Djugu\n"
    "Lt. Bunia,+243990000077,officer,\n"
)


def test_csv_import_all_or_nothing_and_skip(client: TestClient, db_url: str) -> None:
    csrf = admin(client)
    load_places(runtime_of(client).engine)
    r = upload(client, csrf, IMPORT)
    assert r.status_code == 422  # type: ignore[attr-defined]
    text = r.text  # type: ignore[attr-defined]
    assert "Nothing was imported: 1 of 3 rows are bad" in text
    assert re.search(r"<tr><td>3</td><td>phone</td><td>not a valid phone number", text)
    assert people(db_url) == {}
    again = client.get("/roster/import", follow_redirects=False)  # a reload of the report's URL
    assert again.status_code == 303 and again.headers["location"] == "/roster#import"

    r = upload(client, csrf, IMPORT, skip=True)
    assert r.status_code == 200  # type: ignore[attr-defined]
    assert "2 created, 0 updated, 0 unchanged" in r.text  # type: ignore[attr-defined]
    assert re.search(r"<tr><td>3</td><td>phone</td>", r.text)  # type: ignore[attr-defined]
    assert sorted(people(db_url)) == ["Lt. Bunia", "Mama Nizi"]
    with runtime_of(client).factory() as session:
        actors = set(session.scalars(select(AuditLog.actor).where(AuditLog.action == "person_create")))
    assert actors == {"web:Amina Admin"}

    r = client.post("/roster/import", data={"csrf_token": csrf})
    assert r.status_code == 422 and "file: " in r.text
    bad_header = upload(client, csrf, "nom,phone,role\nX,+243820000058,officer\n", skip=True)
    assert bad_header.status_code == 422 and "cannot be read" in bad_header.text  # type: ignore[attr-defined]


def test_export_has_the_rows(client: TestClient) -> None:
    admin(client)
    add_people(client, ROSTER)
    r = client.get("/roster/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="roster.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["name"], row["phone"], row["active"]) for row in rows] == [
        ("Jeanne Mave", "+243810000001", "true"),
        ("Élodie Kasi", "+243810000002", "false"),
        ("Capt. Dufour", "+243990000001", "true"),
        ("Jean-Paul Mave", "+243810000003", "true"),
    ]
    assert rows[2]["area"] == "Ituri" and rows[2]["level"] == "1"


def test_users_create_disable_enable_and_not_oneself(client: TestClient) -> None:
    csrf = admin(client)
    form = {"name": "Omari Officer", "role": "officer", "language": "sw", "password": PASSWORD}
    r = client.post("/admin/users", data={**form, "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get("/admin")
    assert re.search(r"<td>Omari Officer</td>\s*<td>officer</td>\s*<td>sw</td>\s*<td>never</td>", page.text)

    again = client.post("/admin/users", data={**form, "csrf_token": csrf})
    assert again.status_code == 422 and "a user named &#39;Omari Officer&#39; exists" in again.text
    short = client.post(
        "/admin/users", data={**form, "name": "Other", "password": "short", "csrf_token": csrf}
    )
    assert short.status_code == 422 and "password: at least 10 characters" in short.text
    assert 'value="Other"' in short.text and "short" not in short.text.split('id="error-user"')[1][:400]

    officer = browser(client)
    sign_in(officer, "Omari Officer")
    assert officer.get("/").status_code == 200
    with runtime_of(client).factory() as session:
        omari = accounts.find_user(session=session, name="Omari Officer").id
        me = accounts.find_user(session=session, name="Amina Admin").id
    r = client.post(f"/admin/users/{omari}/disable", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    ended = officer.get("/", follow_redirects=False)  # their session ended at once
    assert ended.status_code == 303 and ended.headers["location"].startswith("/login")
    assert re.search(
        rf'<tr id="user-{omari}">.*?<td class="user-status">disabled</td>', client.get("/admin").text, re.S
    )

    mine = client.post(f"/admin/users/{me}/disable", data={"csrf_token": csrf})
    assert mine.status_code == 409 and "you cannot disable your own account" in mine.text
    assert client.get("/admin").status_code == 200  # still signed in

    r = client.post(f"/admin/users/{omari}/enable", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    bad = client.post(f"/admin/users/{omari}/password", data={"password": "aaaaaaaaaaaa", "csrf_token": csrf})
    assert bad.status_code == 422 and "password: too simple" in bad.text
    new = "another long passphrase"
    r = client.post(
        f"/admin/users/{omari}/password", data={"password": new, "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    sign_in(browser(client), "Omari Officer", new)
    assert client.post("/admin/users/999/enable", data={"csrf_token": csrf}).status_code == 404
    with runtime_of(client).factory() as session:
        done = session.scalars(
            select(AuditLog.action).where(AuditLog.actor == "web:Amina Admin").order_by(AuditLog.id)
        ).all()
    assert done == ["user_create", "user_disable", "user_enable", "user_password"]

    # An admin changing their own password stays signed in here, and is signed out everywhere else.
    elsewhere = browser(client)
    sign_in(elsewhere, "Amina Admin")
    assert elsewhere.get("/admin", follow_redirects=False).status_code == 200
    r = client.post(
        f"/admin/users/{me}/password", data={"password": new, "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    assert client.get("/admin", follow_redirects=False).status_code == 200
    assert elsewhere.get("/admin", follow_redirects=False).status_code == 303


def test_tokens_shown_once_work_and_revoke(client: TestClient) -> None:
    csrf = admin(client)
    r = client.post("/admin/tokens", data={"name": "bot", "role": "officer", "csrf_token": csrf})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    found = re.search(r'<code id="token-value">(kg_[^<]+)</code>', r.text)
    assert found and "shown this once" in r.text
    token = found.group(1)
    api = browser(client)
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/messages", headers=bearer).status_code == 200
    assert api.get("/api/v1/people", headers=bearer).status_code == 403  # an officer's token

    listed = client.get("/admin").text
    assert token not in listed and "<td>bot</td>" in listed
    assert re.search(r"<td>bot</td>\s*<td>officer</td>", listed)
    taken = client.post("/admin/tokens", data={"name": "bot", "role": "viewer", "csrf_token": csrf})
    assert taken.status_code == 409 and "name: a token named" in taken.text
    nameless = client.post("/admin/tokens", data={"name": " ", "role": "viewer", "csrf_token": csrf})
    assert nameless.status_code == 422 and "name: " in nameless.text
    wrong = client.post("/admin/tokens", data={"name": "x", "role": "root", "csrf_token": csrf})
    assert wrong.status_code == 422 and "role: one of viewer, officer, admin" in wrong.text

    token_id = re.search(r'<tr id="token-(\d+)">\s*<td>bot</td>', listed)
    assert token_id
    r = client.post(
        f"/admin/tokens/{token_id.group(1)}/revoke", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    assert api.get("/api/v1/messages", headers=bearer).status_code == 401
    assert "Revoke</button>" not in client.get("/admin").text


def test_webhooks_registered_with_a_secret_shown_once_and_disabled(client: TestClient, db_url: str) -> None:
    csrf = admin(client)
    url = "http://127.0.0.1:9/hook?token=abc"
    r = client.post("/admin/webhooks", data={"url": url, "description": "ops room", "csrf_token": csrf})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    found = re.search(r'<code id="secret-value">([^<]+)</code>', r.text)
    assert found and len(found.group(1)) >= 32
    secret = found.group(1)
    listed = client.get("/admin").text
    assert secret not in listed and "ops room" in listed and "hook?token=abc" in listed
    # The API sees the same subscription, never its secret.
    api = client.get("/api/v1/webhooks", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert [(w["url"], w["description"], w["active"]) for w in api["items"]] == [(url, "ops room", True)]
    assert secret not in str(api)
    engine = keyed_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(sql("SELECT secret FROM webhooks")).scalar_one()
        audit = conn.execute(
            sql("SELECT actor, details FROM audit_log WHERE action = 'webhook_create'")
        ).one()
    engine.dispose()
    assert secret not in str(stored)  # sealed at rest
    assert audit.actor == "web:Amina Admin" and "token=abc" not in str(audit.details)

    for bad, field in [("ftp://example.org/x", "url: "), ("", "url: "), ("http://", "url: ")]:
        r = client.post("/admin/webhooks", data={"url": bad, "description": "x", "csrf_token": csrf})
        assert r.status_code == 422 and field in r.text and 'id="error-webhook"' in r.text, bad

    hook_id = re.search(r'<tr id="webhook-(\d+)">', listed)
    assert hook_id
    r = client.post(
        f"/admin/webhooks/{hook_id.group(1)}/disable", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    after = client.get(r.headers["location"]).text
    assert f"/admin/webhooks/{hook_id.group(1)}/disable" not in after and "Webhook disabled" in after
    assert client.post("/admin/webhooks/999/disable", data={"csrf_token": csrf}).status_code == 404
    assert client.post("/admin/webhooks", data={"url": url}).status_code == 403  # no CSRF token


PAGES = [
    ("GET", "/roster"),
    ("POST", "/roster"),
    ("GET", "/roster/1"),
    ("GET", "/roster/export.csv"),
    ("GET", "/roster/import"),
    ("POST", "/roster/import"),
    ("POST", "/roster/1"),
    ("POST", "/roster/1/deactivate"),
    ("POST", "/roster/1/approve"),
    ("POST", "/roster/1/reject"),
    ("GET", "/admin"),
    ("POST", "/admin/users"),
    ("POST", "/admin/users/1/disable"),
    ("POST", "/admin/users/1/enable"),
    ("POST", "/admin/users/1/password"),
    ("POST", "/admin/tokens"),
    ("POST", "/admin/tokens/1/revoke"),
    ("POST", "/admin/webhooks"),
    ("POST", "/admin/webhooks/1/disable"),
]


def test_only_admins(client: TestClient, db_url: str) -> None:
    add_people(client, ROSTER)
    for role in (ApiRole.OFFICER, ApiRole.VIEWER):
        add_user(client, f"A {role}", role)
        other = browser(client)
        csrf = sign_in(other, f"A {role}")
        for method, path in PAGES:
            r = other.request(
                method,
                path,
                data={"csrf_token": csrf, "name": "x", "role": "admin"} if method == "POST" else None,
            )
            assert r.status_code == 403, (role, method, path, r.status_code)
    assert "Roster</a>" not in other.get("/").text
    signed_out = browser(client)
    for method, path in PAGES:
        r = signed_out.request(method, path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, path)
    assert people(db_url)["Capt. Dufour"]["active"] is True


def test_a_form_without_its_csrf_token_changes_nothing(client: TestClient, db_url: str) -> None:
    csrf = admin(client)
    add_people(client, ROSTER)
    pid = people(db_url)["Capt. Dufour"]["id"]
    with runtime_of(client).factory() as session:
        me = accounts.find_user(session=session, name="Amina Admin").id
    for path, data in [
        (f"/roster/{pid}/deactivate", {}),
        (f"/roster/{pid}", {"name": "Renamed", "phone": "+243990000001", "role": "officer"}),
        ("/admin/users", {"name": "Sneaky", "role": "admin", "password": PASSWORD}),
        (f"/admin/users/{me}/password", {"password": "taken over by another site"}),
        ("/admin/tokens", {"name": "sneaky", "role": "admin"}),
    ]:
        for token in ({}, {"csrf_token": "wrong" + csrf}):
            r = client.post(path, data=data | token)
            assert r.status_code == 403 and "csrf_token" in r.text, (path, r.status_code)
    r = upload(client, "", IMPORT)
    assert r.status_code == 403  # type: ignore[attr-defined]
    assert people(db_url)["Capt. Dufour"]["active"] is True and "Renamed" not in people(db_url)
    with runtime_of(client).factory() as session:
        assert [u.name for u in accounts.list_users(session=session)] == ["Amina Admin"]
        assert session.scalar(select(Person.id).where(Person.name == "Mama Nizi")) is None
    assert "sneaky" not in client.get("/admin").text
    sign_in(browser(client), "Amina Admin")  # the password is unchanged


WORD = re.compile(r"""\bt\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
# Words these pages show from values (roles, statuses, outcomes) rather than from the templates' text.
SHOWN_VALUES = ("focal_point", "approved", "pending", "rejected", "disabled", "locked", "Saved.")


def template_words(mine: bool) -> set[str]:
    """The words of these pages' templates (`mine`), or of every other template."""
    files = (Path(app.__file__).parent / "templates").glob("*.html")
    chosen = [f for f in files if f.name.startswith(("roster", "admin")) == mine]
    return {a or b for f in chosen for a, b in WORD.findall(f.read_text(encoding="utf-8"))}


def test_the_pages_words_are_translated(client: TestClient) -> None:
    # Every word of every template, in French and in Swahili, with the same placeholders.
    every = template_words(mine=True) | template_words(mine=False) | set(SHOWN_VALUES)
    for language in ("fr", "sw"):
        words = catalog(language)
        missing = sorted(w for w in every if w not in words)
        assert not missing, (language, missing)
        slots = re.compile(r"\{\w+\}")
        wrong = [k for k, v in words.items() if sorted(slots.findall(k)) != sorted(slots.findall(v))]
        assert not wrong, (language, wrong)

    csrf = admin(client)
    r = client.post("/language", data={"language": "fr", "csrf_token": csrf, "back": "/roster"})
    assert r.status_code == 200 and "Rechercher" in r.text and "Exporter le répertoire (CSV)" in r.text
    assert "Jetons d’API" in client.get("/admin").text
