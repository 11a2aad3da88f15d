"""The dashboard without a browser: sign-in, lock-out, sessions, CSRF, the role matrix, the pages.

(tests/test_browser.py drives the same pages in Chromium.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.auth import SESSION_COOKIE
from app.config import Settings
from app.db import transaction, utcnow
from app.enums import AuditAction
from app.main import create_app
from app.models import AuditLog, Message, User
from app.services import accounts
from tests.dashboard import PASSWORD, add_user, sign_in, signed_in
from tests.helpers import AT_SECRET, at_form, count, wait_for
from tests.test_api import add_token
from tests.test_incidents_api import setup as with_incidents

NUMBER_RUN = re.compile(r"\+?\d[\d ]{7,}\d")


def incident_code(client: TestClient, auth: dict[str, str], place: str = "Djugu") -> str:
    items = client.get("/api/v1/incidents", headers=auth).json()["items"]
    return next(i["code"] for i in items if i["place_name"] == place)


# -- signing in ----------------------------------------------------------------------------------
def test_a_page_asks_for_sign_in_and_comes_back(client: TestClient) -> None:
    answer = client.get("/network?x=1", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/network%3Fx%3D1"
    add_user(client, "Amina", "officer")
    signed = sign_in(client, "Amina", next_url="/network?x=1")
    assert signed.status_code == 303 and signed.headers["location"] == "/network?x=1"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # served over http here; see the next test
    assert client.get("/network").status_code == 200


def test_cookies_are_secure_behind_https(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(public_url="https://alerts.example.org"))) as client:
        add_user(client, "Amina", "officer")
        assert "Secure" in sign_in(client, "Amina").headers["set-cookie"]


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_sign_in_goes_on_to_this_site_only(client: TestClient, target: str) -> None:
    add_user(client, "Amina", "officer")
    assert sign_in(client, "Amina", next_url=target).headers["location"] == "/"


def test_wrong_password_and_unknown_name_are_refused_alike(client: TestClient) -> None:
    add_user(client, "Amina", "officer")
    wrong = sign_in(client, "Amina", password="not the password at all")
    unknown = sign_in(client, "Nobody", password="not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong name or password." in wrong.text and "Wrong name or password." in unknown.text
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_form_without_its_csrf_cookie_signs_no_one_in(client: TestClient) -> None:
    add_user(client, "Amina", "officer")
    answer = client.post(
        "/login",
        data={"username": "Amina", "password": PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert answer.status_code == 403 and SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_five_failures_lock_the_account_for_a_while(client: TestClient) -> None:
    add_user(client, "Amina", "officer")
    for _ in range(accounts.LOCK_AFTER):
        assert sign_in(client, "Amina", password="wrong password 123").status_code in (401, 429)
    locked = sign_in(client, "Amina")  # the right password, too late
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with transaction(runtime.factory) as session:
        actions = session.scalars(select(AuditLog.action)).all()
        assert AuditAction.USER_LOCKED in actions
        session.execute(update(User).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert sign_in(client, "Amina").status_code == 303  # the lock is over


def test_many_failures_from_one_address_refuse_it_whatever_the_names(client: TestClient) -> None:
    add_user(client, "Amina", "officer")
    for i in range(accounts.ADDRESS_LIMIT):
        assert sign_in(client, f"guess{i}", password="wrong password 123").status_code == 401
    assert sign_in(client, "Amina").status_code == 429


def test_sign_out_ends_the_session_on_the_server(client: TestClient) -> None:
    csrf = signed_in(client, "Amina", "officer")
    token = client.cookies.get(SESSION_COOKIE)
    assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    client.cookies.set(SESSION_COOKIE, token or "")  # a copy of the cookie kept somewhere
    assert client.get("/", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/incidents").status_code == 401


def test_disabling_a_user_ends_their_sessions(client: TestClient) -> None:
    signed_in(client, "Amina", "officer")
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with transaction(runtime.factory) as session:
        assert accounts.disable_user(session=session, name="amina", actor="test")
    assert client.get("/", follow_redirects=False).status_code == 303
    assert sign_in(client, "Amina").status_code == 401


def test_passwords_are_argon2_and_weak_ones_refused(client: TestClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with transaction(runtime.factory) as session:
        for weak, why in (("short", "at least"), ("aaaaaaaaaaaa", "too simple")):
            with pytest.raises(accounts.AccountError, match=why):
                accounts.create_user(session=session, name="A", role="viewer", password=weak, actor="t")  # type: ignore[arg-type]
    add_user(client, "Amina", "officer")
    with transaction(runtime.factory) as session:
        stored = session.scalar(select(User.password_hash))
        with pytest.raises(accounts.AccountError, match="exists"):
            accounts.create_user(session=session, name="AMINA", role="viewer", password=PASSWORD, actor="t")  # type: ignore[arg-type]
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored


def test_names_match_in_any_case_of_any_letter(client: TestClient) -> None:
    add_user(client, "Élise Ngoy", "viewer")
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with transaction(runtime.factory) as session, pytest.raises(accounts.AccountError, match="exists"):
        accounts.create_user(session=session, name="élise ngoy", role="viewer", password=PASSWORD, actor="t")  # type: ignore[arg-type]
    assert sign_in(client, "ÉLISE NGOY").status_code == 303


# -- CSRF ----------------------------------------------------------------------------------------
def test_csrf_guards_every_cookie_write(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    with_incidents(client, db_url)
    code = incident_code(client, auth)
    csrf = signed_in(client, "Amina", "officer")
    # a form without the token, or with another: refused, nothing changed
    for data in ({}, {"csrf_token": "x" * 43}):
        assert client.post(f"/incidents/{code}/ack", data=data, follow_redirects=False).status_code == 403
    assert client.get(f"/api/v1/incidents/{code}", headers=auth).json()["status"] == "open"
    # the API with the cookie: the header is needed, and a foreign origin is refused
    assert client.post(f"/api/v1/incidents/{code}/ack").status_code == 403
    headers = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert client.post(f"/api/v1/incidents/{code}/ack", headers=headers).status_code == 403
    assert client.get(f"/api/v1/incidents/{code}", headers=auth).json()["status"] == "open"
    answer = client.post(
        f"/api/v1/incidents/{code}/ack", headers={"X-CSRF-Token": csrf, "Origin": "http://testserver"}
    )
    assert answer.status_code == 200 and answer.json()["acknowledged_by"] == "Amina"
    history = client.get(f"/api/v1/incidents/{code}", headers=auth).json()["history"]
    assert any(h["action"] == "ack" and h["actor"] == "web:Amina" for h in history)


# -- the role matrix -----------------------------------------------------------------------------
# Every route and the least role it admits (None: anyone). A route missing here fails the test.
MATRIX: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/docs"): None,
    ("GET", "/redoc"): None,
    ("GET", "/login"): None,
    ("POST", "/login"): None,
    ("GET", "/api/v1/incidents"): "viewer",
    ("GET", "/api/v1/incidents.geojson"): "viewer",
    ("GET", "/api/v1/incidents/{incident_id}"): "viewer",
    ("GET", "/api/v1/alerts"): "viewer",
    ("GET", "/api/v1/alerts/{alert_id}"): "viewer",
    ("GET", "/api/v1/network/health"): "viewer",
    ("GET", "/api/v1/incidents/{incident_id}/cap"): "viewer",
    ("GET", "/api/v1/incidents.cap"): "viewer",
    ("GET", "/api/v1/incidents.csv"): "viewer",
    ("GET", "/api/v1/alerts.csv"): "viewer",
    ("GET", "/api/v1/messages"): "officer",
    ("GET", "/api/v1/triage"): "officer",
    ("POST", "/api/v1/incidents/{incident_id}/ack"): "officer",
    ("POST", "/api/v1/incidents/{incident_id}/close"): "officer",
    ("POST", "/api/v1/incidents/{incident_id}/merge"): "officer",
    ("POST", "/api/v1/alerts/{alert_id}/move"): "officer",
    ("GET", "/api/v1/people"): "admin",
    ("POST", "/api/v1/people"): "admin",
    ("GET", "/api/v1/people/{person_id}"): "admin",
    ("PATCH", "/api/v1/people/{person_id}"): "admin",
    ("DELETE", "/api/v1/people/{person_id}"): "admin",
    ("POST", "/api/v1/people/{person_id}/approve"): "admin",
    ("POST", "/api/v1/people/{person_id}/reject"): "admin",
    ("POST", "/api/v1/people/import"): "admin",
    ("GET", "/api/v1/webhooks"): "admin",
    ("POST", "/api/v1/webhooks"): "admin",
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): "admin",
    ("POST", "/logout"): "viewer",
    ("POST", "/language"): "viewer",
    ("GET", "/"): "viewer",
    ("GET", "/incidents/{code}"): "viewer",
    ("GET", "/network"): "viewer",
    ("POST", "/incidents/{code}/ack"): "officer",
    ("POST", "/incidents/{code}/close"): "officer",
    ("POST", "/incidents/{code}/merge"): "officer",
    ("POST", "/incidents/{code}/reports/{alert_id}/move"): "officer",
    ("POST", "/incidents/{code}/notes"): "officer",
    ("POST", "/incidents/{code}/reports/{alert_id}/reveal"): "admin",
    ("GET", "/triage"): "officer",
    ("POST", "/triage/{message_id}/alert"): "officer",
    ("POST", "/triage/{message_id}/dismiss"): "officer",
    ("POST", "/triage/alerts/{alert_id}/reviewed"): "officer",
    ("GET", "/messages"): "officer",
    ("POST", "/messages"): "officer",
    ("GET", "/roster"): "admin",
    ("POST", "/roster"): "admin",
    ("GET", "/roster/export.csv"): "admin",
    ("GET", "/roster/import"): "admin",
    ("POST", "/roster/import"): "admin",
    ("GET", "/roster/{person_id}"): "admin",
    ("POST", "/roster/{person_id}"): "admin",
    ("POST", "/roster/{person_id}/deactivate"): "admin",
    ("POST", "/roster/{person_id}/approve"): "admin",
    ("POST", "/roster/{person_id}/reject"): "admin",
    ("GET", "/admin"): "admin",
    ("POST", "/admin/users"): "admin",
    ("POST", "/admin/users/{user_id}/disable"): "admin",
    ("POST", "/admin/users/{user_id}/enable"): "admin",
    ("POST", "/admin/users/{user_id}/password"): "admin",
    ("POST", "/admin/tokens"): "admin",
    ("POST", "/admin/tokens/{token_id}/revoke"): "admin",
    ("POST", "/admin/webhooks"): "admin",
    ("POST", "/admin/webhooks/{webhook_id}/disable"): "admin",
}
RANKS = {None: -1, "viewer": 0, "officer": 1, "admin": 2}
VALUES = {
    "webhook_id": "1",
    "user_id": "999999",  # none: an admin revoking or disabling its own would end the walk
    "token_id": "999999",
    "incident_id": "K1",
    "code": "K1",
    "alert_id": "1",
    "person_id": "1",
    "message_id": "1",
}


def routes(app: Any) -> Iterator[tuple[str, str]]:
    """Every (method, path) the app answers, through included routers."""

    def walk(items: Any) -> Iterator[tuple[str, str]]:
        for route in items:
            if hasattr(route, "original_router"):
                yield from walk(route.original_router.routes)
            elif isinstance(route, APIRoute):
                for method in sorted(route.methods - {"HEAD"}):
                    yield method, route.path

    yield from walk(app.routes)


def test_the_matrix_names_every_route(client: TestClient) -> None:
    found = set(routes(client.app))
    assert found - MATRIX.keys() == set(), "a route the role matrix does not name"
    assert MATRIX.keys() - found == set(), "the matrix names a route that does not exist"


@pytest.mark.parametrize("role", ["viewer", "officer", "admin"])
def test_every_route_admits_its_roles_and_refuses_the_others(
    client: TestClient, db_url: str, role: str
) -> None:
    with_incidents(client, db_url)
    add_token(db_url, role, f"token-of-a-{role}-0123456789")
    bearer = {"Authorization": f"Bearer token-of-a-{role}-0123456789"}
    csrf = signed_in(client, f"user {role}", role)
    cookie = client.cookies.get(SESSION_COOKIE) or ""
    for (method, template), least in sorted(MATRIX.items(), key=lambda kv: kv[0]):
        if template in ("/logout", "/login"):
            continue  # signing out would end the session the rest of the walk uses
        path = re.sub(r"\{(\w+)\}", lambda m: VALUES[m.group(1)], template)
        admitted = RANKS[role] >= RANKS[least]
        page = not template.startswith("/api/") and least is not None
        ways = [("cookie", {"X-CSRF-Token": csrf}, {"csrf_token": csrf})]
        if not page and least is not None:
            ways.append(("bearer", bearer, {}))
        for way, headers, form in ways:
            client.cookies.clear()
            if way == "cookie":
                client.cookies.set(SESSION_COOKIE, cookie)
            kwargs: dict[str, Any] = {"headers": headers, "follow_redirects": False}
            if method != "GET":
                kwargs["data" if page else "json"] = form if page else {}
            answer = client.request(method, path, **kwargs)
            where = f"{method} {path} as {role} by {way}: {answer.status_code} {answer.text[:200]}"
            if admitted:
                assert answer.status_code not in (401, 403), where
            else:
                assert answer.status_code == 403, where
    client.cookies.clear()
    for (method, template), least in MATRIX.items():  # and signed out: nothing but the public routes
        if least is None:
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: VALUES[m.group(1)], template)
        answer = client.request(method, path, follow_redirects=False)
        expected = {401} if template.startswith("/api/") else {303, 403}  # 403: a form with no CSRF
        assert answer.status_code in expected, f"{method} {path} signed out: {answer.status_code}"


# -- the pages -----------------------------------------------------------------------------------
def test_the_incidents_page_lists_refreshes_and_acknowledges(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    with_incidents(client, db_url)
    code = incident_code(client, auth)
    csrf = signed_in(client, "Amina", "officer")
    page = client.get("/")
    assert page.status_code == 200 and f'href="/incidents/{code}"' in page.text
    assert (
        "content-security-policy" in page.headers
        and "'unsafe-inline'" not in page.headers["content-security-policy"]
    )
    listed = client.get("/?partial=list")
    tag = listed.headers["etag"]
    assert client.get("/?partial=list", headers={"If-None-Match": tag}).status_code == 304  # nothing new
    client.post(
        f"/webhooks/africastalking/{AT_SECRET}/sms",
        data=at_form(sender="+243810000009", text="A7 Bunia", pid="AT9"),
    )
    wait_for(lambda: count(db_url, direction="outbound", purpose="reply") == 5)
    fresh = client.get("/?partial=list", headers={"If-None-Match": tag})
    assert fresh.status_code == 200 and "arson" in fresh.text
    done = client.post(
        f"/incidents/{code}/ack", data={"csrf_token": csrf, "back": "/?status=open"}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/?status=open"
    assert client.get(f"/api/v1/incidents/{code}", headers=auth).json()["acknowledged_by"] == "Amina"
    assert f'id="incident-{code}"' not in client.get("/?status=open").text
    assert f'id="incident-{code}"' in client.get("/?status=acknowledged").text
    assert client.get("/?category=looting").text.count('class="incident ') == 1


def test_the_incident_page_shows_what_was_written_and_what_it_was_read_as(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    with_incidents(client, db_url)
    code = incident_code(client, auth)
    csrf = signed_in(client, "Amina", "officer")
    page = client.get(f"/incidents/{code}")
    assert page.status_code == 200
    assert "A1 Djugu 20" in page.text and "attaque djugu" in page.text  # the words as written
    assert "attack" in page.text and "20 people" in page.text  # as read
    assert "+243810000001" in page.text  # an officer sees the senders
    assert (
        client.post(
            f"/incidents/{code}/notes", data={"csrf_token": csrf, "text": "Patrol sent <b>now</b>"}
        ).status_code
        == 200
    )
    page = client.get(f"/incidents/{code}").text
    assert "Patrol sent &lt;b&gt;now&lt;/b&gt;" in page and "<b>now</b>" not in page
    assert client.post(f"/incidents/{code}/notes", data={"csrf_token": csrf, "text": "  "}).status_code == 422
    missing = client.get("/incidents/K999999")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert client.get("/incidents/nonsense").status_code == 422


def test_a_viewer_sees_no_number_and_no_button(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    with_incidents(client, db_url)
    client.post(
        f"/webhooks/africastalking/{AT_SECRET}/sms",
        data=at_form(sender="+243810000005", text="A1 Djugu appelez +243 990 123 456", pid="AT5"),
    )
    wait_for(lambda: count(db_url, direction="outbound", purpose="reply") == 5)
    code = incident_code(client, auth)
    signed_in(client, "Vera", "viewer")
    for path in (
        "/",
        f"/incidents/{code}",
        "/network",
        f"/incidents/{code}?partial=reports",
        "/?partial=list",
    ):
        text = re.sub(r"\?v=[0-9a-f]+", "", client.get(path).text)  # asset versions are hex, not phones
        assert NUMBER_RUN.findall(text) == [], (path, NUMBER_RUN.findall(text))
        assert "/ack" not in text and "/close" not in text and "/reveal" not in text and "/notes" not in text
    assert client.get("/triage").status_code == 403 and client.get("/messages").status_code == 403


def test_an_admin_reveals_a_number_with_a_reason_and_it_is_logged(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    with_incidents(client, db_url)
    code = incident_code(client, auth)
    alert_id = client.get(f"/api/v1/incidents/{code}", headers=auth).json()["reports"][0]["id"]
    csrf = signed_in(client, "Ada", "admin")
    assert (
        client.post(f"/incidents/{code}/reports/{alert_id}/reveal", data={"csrf_token": csrf}).status_code
        == 422
    )
    shown = client.post(
        f"/incidents/{code}/reports/{alert_id}/reveal", data={"csrf_token": csrf, "reason": "call back"}
    )
    assert shown.status_code == 200 and "+243810000001" in shown.text
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with transaction(runtime.factory) as session:
        entry = session.scalar(select(AuditLog).where(AuditLog.action == AuditAction.REVEAL_PHONE))
        assert entry is not None and entry.actor == "web:Ada" and entry.details["reason"] == "call back"
        assert "+243810000001" not in str(entry.details)


def test_triage_makes_an_alert_through_the_pipeline_or_dismisses_with_a_reason(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    with_incidents(client, db_url)
    for pid, text in (("AT7", "quelque chose se passe ici"), ("AT8", "bonjour merci")):
        client.post(
            f"/webhooks/africastalking/{AT_SECRET}/sms",
            data=at_form(sender="+243810000007", text=text, pid=pid),
        )
    wait_for(lambda: count(db_url, direction="outbound", purpose="reply") == 6)
    csrf = signed_in(client, "Amina", "officer")
    page = client.get("/triage").text
    unread = client.get("/api/v1/triage", headers=auth).json()["items"]
    ids = {m["text"]: m["id"] for m in unread}
    assert "quelque chose se passe" in page and "bonjour merci" in page
    made = client.post(
        f"/triage/{ids['quelque chose se passe ici']}/alert",
        data={"csrf_token": csrf, "category": "displacement", "place": "Djugu", "count": "40"},
        follow_redirects=False,
    )
    assert made.status_code == 303
    incident = client.get(
        f"/api/v1/incidents/{made.headers['location'].rsplit('/', 1)[1]}", headers=auth
    ).json()
    assert (incident["category"], incident["place_name"], incident["status"]) == (
        "displacement",
        "Djugu",
        "open",
    )
    assert incident["reports"][0]["details"]["count"] == 40
    wait_for(
        lambda: count(db_url, direction="outbound", purpose="alert_forward") >= 4
    )  # forwarded as any alert
    again = client.post(
        f"/triage/{ids['quelque chose se passe ici']}/alert",
        data={"csrf_token": csrf, "category": "attack"},
    )
    assert again.status_code == 409
    assert (
        client.post(f"/triage/{ids['bonjour merci']}/dismiss", data={"csrf_token": csrf}).status_code == 422
    )
    bad = client.post(
        f"/triage/{ids['bonjour merci']}/alert", data={"csrf_token": csrf, "category": "picnic"}
    )
    assert bad.status_code == 422 and "category" in bad.text
    gone = client.post(
        f"/triage/{ids['bonjour merci']}/dismiss", data={"csrf_token": csrf, "reason": "a greeting"}
    )
    assert gone.status_code == 200  # back on the (now empty) triage page
    assert client.get("/api/v1/triage", headers=auth).json()["total"] == 0
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with transaction(runtime.factory) as session:
        assert (
            session.scalar(select(Message.outcome).where(Message.id == ids["bonjour merci"])) == "dismissed"
        )


def test_the_message_log_filters_by_phone(client: TestClient, db_url: str) -> None:
    with_incidents(client, db_url)
    csrf = signed_in(client, "Amina", "officer")
    asked = client.post("/messages", data={"phone": "0810000003", "csrf_token": csrf}, follow_redirects=False)
    # The number goes to the log's URL sealed, never as typed: URLs are kept in history and logs.
    assert asked.status_code == 303 and asked.headers["location"].startswith("/messages?who=")
    assert "0810000003" not in asked.headers["location"] and "243810000003" not in asked.headers["location"]
    page = client.get(asked.headers["location"])  # local notation
    assert page.status_code == 200 and "A1 Bunia" in page.text and "A6 Bunia" not in page.text
    assert 'value="+243810000003"' in page.text  # the field shows what is searched for
    bad = client.post("/messages", data={"phone": "not a phone", "csrf_token": csrf})
    assert bad.status_code == 422 and "phone: " in bad.text
    tampered = asked.headers["location"].replace("who=k1", "who=k2")
    assert client.get(tampered).status_code == 422
    assert client.get("/messages", params={"who": "k1:zz:Zm9v"}).status_code == 422
    assert client.post("/messages", data={"phone": "0810000003"}).status_code == 403  # no CSRF token
    assert client.get("/messages", params={"direction": "outbound"}).text.count('id="message-') >= 4
    assert client.get("/messages", params={"status": "received"}).text.count('id="message-') >= 4
    assert client.get("/messages", params={"status": "failed"}).text.count('id="message-') == 0


def test_a_french_user_reads_french(client: TestClient) -> None:
    signed_in(client, "Jean", "officer", language="fr")
    page = client.get("/").text
    assert '<html lang="fr">' in page and "Incidents" in page and "Se déconnecter" in page


def test_assets_are_cached_for_a_year_and_pages_never(client: TestClient) -> None:
    signed_in(client, "Amina", "officer")
    page = client.get("/")
    assert page.headers["cache-control"] == "no-store"
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        answer = client.get(asset)
        assert answer.status_code == 200 and "immutable" in answer.headers["cache-control"], asset


def test_the_cli_manages_users(db_url: str) -> None:
    from tests.test_cli import run

    made = run(
        "user", "create", "--role", "officer", "--name", "Amina K", db_url=db_url, input_text=PASSWORD + "\n"
    )
    assert made.returncode == 0, made.stderr
    weak = run("user", "create", "--role", "viewer", "--name", "Bo", db_url=db_url, input_text="short\n")
    assert weak.returncode == 2 and "password: at least" in weak.stderr and PASSWORD not in weak.stderr
    listed = run("user", "list", db_url=db_url)
    assert listed.returncode == 0 and "Amina K" in listed.stdout and "officer" in listed.stdout
    assert "Bo" not in listed.stdout and "argon2" not in listed.stdout
    off = run("user", "disable", "Amina K", db_url=db_url)
    assert off.returncode == 0 and "disabled" in off.stdout


def test_a_settings_typo_in_the_map_tiles_is_refused() -> None:
    with pytest.raises(ValueError, match="tile URL"):
        Settings(_env_file=None, map_tiles="tile.openstreetmap.org")  # type: ignore[call-arg]
