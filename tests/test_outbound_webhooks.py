"""Outbound webhooks: admins register URLs; every incident change reaches them signed, in order, once due.

The receiver is a real HTTP server on loopback that checks every signature with the secret it
was registered with, and answers from a rule of the test (fail for one incident, fail N times).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.db import transaction, utcnow
from app.main import create_app
from app.models import AuditLog, Incident, Person, WebhookDelivery
from app.services import gazetteer, webhooks
from app.services.runtime import Runtime
from tests import leaks
from tests.helpers import AT_SECRET, at_form, stored_bytes, wait_for
from tests.test_api import add_token

pytestmark = pytest.mark.slow  # timed: deliveries retried with back-off: run alone (make test)

SECRET = "receiver-secret-0123456789abcdef"
REPORTERS = ["+243810000001", "+243810000002", "+243810000003"]
OFFICERS = ["+243990000001", "+243990000002"]
PLACES = [
    gazetteer.PlaceRow("ITU-002", "Djugu", (), 1.922, 30.501, "Ituri", "Djugu", "CD", None, None, "csv"),
    gazetteer.PlaceRow("ITU-001", "Bunia", (), 1.5594, 30.2522, "Ituri", "Irumu", "CD", None, None, "csv"),
]
TIMEOUT_SLEEP = 2.0  # longer than the webhook timeout of these tests
TIMED_OUT = -1


# -- the receiver --------------------------------------------------------------------------------
@dataclass
class Got:
    body: bytes
    headers: dict[str, str]
    verified: bool  # the signature is the HMAC-SHA256 of the raw body under the secret
    answered: int = 0

    @property
    def doc(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class Receiver:
    """A webhook receiver on loopback; `rule(doc)` says how to answer: "ok", "500" or "timeout"."""

    secret: str = SECRET
    rule: Callable[[dict[str, Any]], str] = lambda doc: "ok"
    got: list[Got] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/kengele?src=test"

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies answered 2xx, in the order they arrived."""
        with self.lock:
            return [g.doc for g in self.got if 200 <= g.answered < 300]

    def events(self, code: str | None = None) -> list[str]:
        return [d["event"] for d in self.delivered() if code is None or d["incident"]["code"] == code]


def start_receiver(receiver: Receiver) -> Receiver:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
            signature = self.headers.get("X-Kengele-Signature", "")
            got = Got(body, dict(self.headers.items()), hmac.compare_digest(expected, signature))
            how = receiver.rule(got.doc) if got.verified else "401"
            # TIMED_OUT: answered 200, but only after the deliverer stopped waiting for it.
            got.answered = {"ok": 200, "timeout": TIMED_OUT}.get(how) or int(how)
            with receiver.lock:
                receiver.got.append(got)  # as it arrives, before any answer
            if how == "timeout":
                time.sleep(TIMEOUT_SLEEP)
            try:
                self.send_response(got.answered)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the deliverer gave up (timeout)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = start_receiver(Receiver())
    yield r
    assert r.server is not None
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def hooked(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(
        webhook_poll=0.05, webhook_backoff_base=0.02, webhook_backoff_max=0.1, webhook_timeout=1.0
    )
    with TestClient(create_app(settings)) as c:
        runtime: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
        gazetteer.store(runtime.engine, PLACES)
        with transaction(runtime.factory) as session:
            session.add(
                Person(name="Capt. Dufour", phone=OFFICERS[0], role="officer", language="fr", level=1)
            )
            session.add(Person(name="Maj. Kabila", phone=OFFICERS[1], role="officer", language="fr", level=2))
        yield c


def subscribe(client: TestClient, auth: dict[str, str], url: str, secret: str = SECRET) -> dict[str, Any]:
    r = client.post("/api/v1/webhooks", json={"url": url, "secret": secret}, headers=auth)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def report(client: TestClient, sender: str, text: str) -> None:
    r = client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=at_form(sender=sender, text=text))
    assert r.status_code == 200


def incident_code(client: TestClient, auth: dict[str, str], place: str) -> str:
    def found() -> str | None:
        items = client.get("/api/v1/incidents", headers=auth).json()["items"]
        return next((i["code"] for i in items if i["place_name"] == place), None)

    code: str = wait_for(found)
    return code


def deliveries(client: TestClient) -> list[WebhookDelivery]:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.factory() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


# -- registering ---------------------------------------------------------------------------------
def test_only_admins_register_and_secrets_are_shown_once(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    add_token(db_url, "viewer", "viewer-token")
    add_token(db_url, "officer", "officer-token")
    body = {"url": "https://hooks.example.org/kengele"}
    assert client.post("/api/v1/webhooks", json=body).status_code == 401
    for token in ("viewer-token", "officer-token"):
        who = {"Authorization": f"Bearer {token}"}
        assert client.post("/api/v1/webhooks", json=body, headers=who).status_code == 403
        assert client.get("/api/v1/webhooks", headers=who).status_code == 403
        assert client.delete("/api/v1/webhooks/1", headers=who).status_code == 403
    assert client.get("/api/v1/webhooks").status_code == 401

    made = client.post("/api/v1/webhooks", json=body | {"description": "situation room"}, headers=auth)
    assert made.status_code == 201
    created = made.json()
    assert created["url"] == body["url"] and created["active"] is True
    assert created["description"] == "situation room" and len(created["secret"]) >= 32
    own = client.post(
        "/api/v1/webhooks", json={"url": "https://b.example.org/", "secret": SECRET}, headers=auth
    )
    assert own.status_code == 201 and own.json()["secret"] is None  # the caller's own: not echoed

    listed = client.get("/api/v1/webhooks", headers=auth)
    assert listed.status_code == 200 and listed.json()["total"] == 2
    assert created["secret"] not in listed.text and SECRET not in listed.text
    assert all("secret" not in item for item in listed.json()["items"])
    # At rest the secrets are sealed, as the phone numbers are.
    stored = stored_bytes(db_url)
    assert created["secret"].encode() not in stored and SECRET.encode() not in stored

    gone = client.delete(f"/api/v1/webhooks/{created['id']}", headers=auth)
    assert gone.status_code == 200 and gone.json()["active"] is False and gone.json()["disabled_at"]
    assert client.delete("/api/v1/webhooks/999999", headers=auth).json()["detail"] == "no webhook 999999"
    assert [i["active"] for i in client.get("/api/v1/webhooks", headers=auth).json()["items"]] == [
        False,
        True,
    ]

    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.factory() as session:
        rows = session.scalars(
            select(AuditLog).where(AuditLog.entity == "webhook").order_by(AuditLog.id)
        ).all()
        audit = [(r.action, r.entity_id, r.actor, r.details["url"]) for r in rows]
    assert audit == [
        ("webhook_create", str(created["id"]), "api:bootstrap-admin", "https://hooks.example.org"),
        ("webhook_create", str(own.json()["id"]), "api:bootstrap-admin", "https://b.example.org"),
        ("webhook_disable", str(created["id"]), "api:bootstrap-admin", "https://hooks.example.org"),
    ]
    assert all(created["secret"] not in json.dumps(r.details) for r in rows)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://hooks.example.org/", "url: must start with http:// or https://"),
        ("hooks.example.org/kengele", "url: must start with http:// or https://"),
        ("https://", "url: has no host"),
        ("https://:443/x", "url: has no host"),
        ("https://hooks.example.org:99999/", "url: the port is not a number"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "url: 169.254.169.254 is a link-local or cloud metadata",
        ),
        ("http://[fe80::1]/", "url: fe80::1 is a link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://0.0.0.0:8000/", "url: 0.0.0.0 is an unspecified address"),
        ("http://224.0.0.1/", "url: 224.0.0.1 is a multicast address"),
        ("https://me:pw@hooks.example.org/", "url: must not carry a user name or password"),
        ("http://testserver/api/v1/incidents", "url: points at Kengele itself"),
        ("", "url: required"),
        ("https://hooks.example.org/" + "a" * 2000, "url: "),
    ],
)
def test_bad_urls_are_refused_naming_url(
    client: TestClient, auth: dict[str, str], url: str, says: str
) -> None:
    r = client.post("/api/v1/webhooks", json={"url": url}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"].startswith("url: ") and says in r.json()["detail"]
    assert client.get("/api/v1/webhooks", headers=auth).json()["total"] == 0


def test_missing_url_short_secret_and_unknown_fields_are_named(
    client: TestClient, auth: dict[str, str]
) -> None:
    missing = client.post("/api/v1/webhooks", json={"secret": SECRET}, headers=auth)
    assert missing.status_code == 422 and missing.json()["detail"].startswith("url: ")
    short = client.post(
        "/api/v1/webhooks", json={"url": "https://a.example.org/", "secret": "short"}, headers=auth
    )
    assert short.status_code == 422 and short.json()["detail"].startswith("secret: ")
    extra = client.post(
        "/api/v1/webhooks", json={"url": "https://a.example.org/", "events": []}, headers=auth
    )
    assert extra.status_code == 422 and extra.json()["detail"].startswith("events: ")
    assert client.get("/api/v1/webhooks", headers=auth).json()["total"] == 0


PRODUCTION_OWN = "https://kengele.example.org"


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://hooks.example.org/", "url: plain http is refused in production except to loopback"),
        ("http://10.0.0.7/hooks", "url: plain http is refused in production"),
        ("https://hooks.example.org/", None),
        ("https://10.0.0.7/hooks", None),  # a private network's receiver, over TLS
        ("http://127.0.0.1:9000/hooks", None),  # a receiver on this machine
        ("http://localhost:9000/hooks", None),
        ("http://[::1]:9000/hooks", None),
        ("https://kengele.example.org/api/v1/incidents", "url: points at Kengele itself"),
        ("https://169.254.169.254/", "link-local"),
    ],
)
def test_production_refuses_plain_http_except_to_loopback(url: str, refused: str | None) -> None:
    if refused is None:
        assert webhooks.check_url(url=url, production=True, own_url=PRODUCTION_OWN) == url
    else:
        with pytest.raises(webhooks.Invalid, match=refused.replace(".", r"\.")):
            webhooks.check_url(url=url, production=True, own_url=PRODUCTION_OWN)
    assert webhooks.check_url(url="http://hooks.example.org/", production=False, own_url=PRODUCTION_OWN)


def test_production_settings_refuse_http_through_the_api(
    make_settings: Callable[..., Settings], auth: dict[str, str]
) -> None:
    settings = make_settings(env="production", admin_token="test-admin-token-0123456789-abcdefghijkl")
    admin = {"Authorization": "Bearer test-admin-token-0123456789-abcdefghijkl"}
    with TestClient(create_app(settings, processor=False, dispatcher=False, scheduler=False)) as c:
        r = c.post("/api/v1/webhooks", json={"url": "http://hooks.example.org/"}, headers=admin)
        assert r.status_code == 422 and r.json()["detail"].startswith("url: plain http is refused")
        assert (
            c.post("/api/v1/webhooks", json={"url": "https://hooks.example.org/"}, headers=admin).status_code
            == 201
        )


# -- delivering ----------------------------------------------------------------------------------
def test_an_alert_its_ack_and_close_arrive_signed_in_order_without_numbers(
    hooked: TestClient, auth: dict[str, str], receiver: Receiver
) -> None:
    sub = subscribe(hooked, auth, receiver.url)
    report(hooked, REPORTERS[0], "A1 Djugu 20")
    code = incident_code(hooked, auth, "Djugu")
    wait_for(lambda: receiver.events(code) == ["incident.created"])
    report(hooked, REPORTERS[1], "attaque djugu")  # joins it
    wait_for(lambda: receiver.events(code) == ["incident.created", "incident.updated"])
    assert hooked.post(f"/api/v1/incidents/{code}/ack", headers=auth).status_code == 200
    assert hooked.post(f"/api/v1/incidents/{code}/close", headers=auth).status_code == 200
    wanted = ["incident.created", "incident.updated", "incident.acknowledged", "incident.closed"]
    wait_for(lambda: receiver.events(code) == wanted)

    assert all(g.verified for g in receiver.got) and len(receiver.got) == 4  # each once, first time
    docs = receiver.delivered()
    assert [d["incident"]["status"] for d in docs] == ["open", "open", "acknowledged", "closed"]
    assert [d["incident"]["report_count"] for d in docs] == [1, 2, 2, 2]
    assert docs[0]["incident"]["escalation_level"] == 1  # as the forward to the officers left it
    assert docs[2]["incident"]["acknowledged_by"] == "bootstrap-admin"
    for got in receiver.got:
        doc = got.doc
        assert set(doc) == {"event", "id", "occurred_at", "sent_at", "incident"}
        assert got.headers["X-Kengele-Event"] == doc["event"]
        assert got.headers["X-Kengele-Delivery"] == str(doc["id"])
        assert got.headers["Content-Type"] == "application/json"
        assert doc["incident"]["code"] == code and doc["incident"]["category"] == "attack"
        # No phone number of anyone, in any notation, anywhere in what left the service.
        assert leaks.found_in_json(doc, REPORTERS + OFFICERS) == []
        assert not any(p.removeprefix("+").encode() in got.body for p in REPORTERS + OFFICERS)
    assert len({d["id"] for d in docs}) == 4
    # The receiver has answered; the deliverer records that a moment later.
    wait_for(lambda: [r.state for r in deliveries(hooked)] == ["delivered"] * 4)
    rows = deliveries(hooked)
    assert [(r.state, r.attempts, r.response_status, r.subscription_id) for r in rows] == [
        ("delivered", 1, 200, sub["id"])
    ] * 4

    # A disabled subscription gets nothing more.
    hooked.delete(f"/api/v1/webhooks/{sub['id']}", headers=auth)
    report(hooked, REPORTERS[2], "A6 Bunia")
    bunia = incident_code(hooked, auth, "Bunia")
    time.sleep(0.3)  # several deliverer polls
    assert receiver.events(bunia) == [] and len(receiver.got) == 4


def test_a_failing_receiver_gets_every_change_in_order_once_it_recovers(
    hooked: TestClient, auth: dict[str, str], receiver: Receiver
) -> None:
    failures = iter(["500", "500", "timeout", "503", "500"])
    receiver.rule = lambda doc: next(failures, "ok")
    subscribe(hooked, auth, receiver.url)
    report(hooked, REPORTERS[0], "A1 Djugu 20")
    code = incident_code(hooked, auth, "Djugu")
    assert hooked.post(f"/api/v1/incidents/{code}/ack", headers=auth).status_code == 200
    assert hooked.post(f"/api/v1/incidents/{code}/close", headers=auth).status_code == 200
    wanted = ["incident.created", "incident.acknowledged", "incident.closed"]
    wait_for(lambda: receiver.events(code) == wanted, timeout=20)

    # Every attempt of a later change came after the earlier change was answered 2xx; none skipped.
    tried = [(g.doc["event"], g.answered) for g in receiver.got]
    created = [("incident.created", answer) for answer in (500, 500, TIMED_OUT, 503, 500, 200)]
    assert tried == [*created, ("incident.acknowledged", 200), ("incident.closed", 200)]
    wait_for(lambda: [r.state for r in deliveries(hooked)] == ["delivered"] * 3)
    rows = deliveries(hooked)
    assert [r.state for r in rows] == ["delivered"] * 3 and rows[0].attempts == 6
    assert rows[1].attempts == rows[2].attempts == 1
    # The timed-out POST reached the receiver, was answered late and retried: the receiver saw
    # that delivery id more than once, the id it deduplicates by.
    assert len({g.doc["id"] for g in receiver.got}) == 3

    def counted(outcome: str) -> float:
        for line in hooked.get("/metrics").text.splitlines():
            if line.startswith(f'kengele_webhook_deliveries_total{{outcome="{outcome}"}}'):
                return float(line.split()[-1])
        return 0.0

    assert counted("http_error") >= 4 and counted("timeout") >= 1 and counted("delivered") >= 3


def test_a_receiver_failing_for_one_incident_does_not_hold_back_another(
    hooked: TestClient, auth: dict[str, str], receiver: Receiver
) -> None:
    broken = {"Djugu"}
    receiver.rule = lambda doc: "500" if doc["incident"]["place_name"] in broken else "ok"
    subscribe(hooked, auth, receiver.url)
    report(hooked, REPORTERS[0], "A1 Djugu 20")
    djugu = incident_code(hooked, auth, "Djugu")
    hooked.post(f"/api/v1/incidents/{djugu}/ack", headers=auth)
    report(hooked, REPORTERS[1], "A6 Bunia")
    bunia = incident_code(hooked, auth, "Bunia")
    hooked.post(f"/api/v1/incidents/{bunia}/ack", headers=auth)
    hooked.post(f"/api/v1/incidents/{bunia}/close", headers=auth)
    wait_for(
        lambda: receiver.events(bunia) == ["incident.created", "incident.acknowledged", "incident.closed"]
    )
    # Djugu's first change is still being retried; its acknowledgement waits behind it, unsent.
    assert receiver.events(djugu) == []
    tried = [g.doc["event"] for g in receiver.got if g.doc["incident"]["code"] == djugu]
    assert len(tried) >= 2 and set(tried) == {"incident.created"}

    broken.clear()  # the receiver is mended
    wait_for(lambda: receiver.events(djugu) == ["incident.created", "incident.acknowledged"])
    assert all(r.state == "delivered" for r in deliveries(hooked))


def test_merge_move_and_escalation_are_told(
    hooked: TestClient, auth: dict[str, str], receiver: Receiver
) -> None:
    subscribe(hooked, auth, receiver.url)
    runtime: Runtime = hooked.app.state.runtime  # type: ignore[attr-defined]
    report(hooked, REPORTERS[0], "A1 Djugu 20")
    djugu = incident_code(hooked, auth, "Djugu")
    report(hooked, REPORTERS[1], "A1 Bunia")
    bunia = incident_code(hooked, auth, "Bunia")
    wait_for(lambda: len(receiver.delivered()) == 2)

    # Not acknowledged in time: the next level is told, and so is the receiver.
    with transaction(runtime.factory) as session:
        incident = session.scalars(select(Incident).where(Incident.code == djugu)).one()
        incident.next_escalation_at = utcnow() - timedelta(seconds=1)
    runtime.escalator.run_once()
    wait_for(lambda: receiver.events(djugu) == ["incident.created", "incident.escalated"])
    assert [d for d in receiver.delivered() if d["incident"]["code"] == djugu][-1]["incident"][
        "escalation_level"
    ] == 2

    merged = hooked.post(f"/api/v1/incidents/{bunia}/merge", json={"into": djugu}, headers=auth)
    assert merged.status_code == 200
    wait_for(lambda: receiver.events(bunia) == ["incident.created", "incident.merged"])
    wait_for(lambda: receiver.events(djugu)[-1:] == ["incident.updated"])
    assert [d for d in receiver.delivered() if d["incident"]["code"] == djugu][-1]["incident"][
        "report_count"
    ] == 2
    gone = next(d for d in receiver.delivered() if d["event"] == "incident.merged")["incident"]
    assert gone["status"] == "closed" and gone["closed_by"] == f"merged into {djugu}"

    djugu_id = hooked.get(f"/api/v1/incidents/{djugu}", headers=auth).json()["id"]
    alert = hooked.get("/api/v1/alerts", params={"incident_id": djugu_id}, headers=auth).json()["items"][0]
    moved = hooked.post(f"/api/v1/alerts/{alert['id']}/move", json={"incident_id": None}, headers=auth)
    assert moved.status_code == 200
    own = moved.json()["code"]
    wait_for(lambda: receiver.events(own) == ["incident.created"])
    wait_for(lambda: receiver.events(djugu)[-1:] == ["incident.updated"] and len(receiver.events(djugu)) == 4)
    assert all(g.verified for g in receiver.got)
    assert all(leaks.found_in_json(g.doc, REPORTERS + OFFICERS) == [] for g in receiver.got)


def test_a_name_resolving_to_a_forbidden_address_is_not_called(
    hooked: TestClient, auth: dict[str, str], receiver: Receiver
) -> None:
    """DNS rebinding: the name was fine at registration; at delivery it points at the metadata service."""
    runtime: Runtime = hooked.app.state.runtime  # type: ignore[attr-defined]
    port = receiver.url.split(":")[2].split("/")[0]
    subscribe(hooked, auth, f"http://rebind.example.test:{port}/hooks")
    answers = {"rebind.example.test": ["169.254.169.254"]}
    runtime.webhooks.resolver = lambda host, _port: [webhooks.ipaddress.ip_address(a) for a in answers[host]]
    report(hooked, REPORTERS[0], "A1 Djugu")
    wait_for(lambda: any(r.last_error for r in deliveries(hooked)))
    (row,) = deliveries(hooked)
    assert (
        row.state == "pending"
        and row.last_error == "the host resolves to a link-local or cloud metadata address"
    )
    assert receiver.got == []
    answers["rebind.example.test"] = ["127.0.0.1"]  # the name points somewhere allowed again
    wait_for(lambda: receiver.events() == ["incident.created"])
    assert receiver.got[0].headers["Host"] == f"rebind.example.test:{port}"  # the name, not the address


def test_two_deliverers_share_the_outbox_in_order_and_never_send_a_change_twice(
    make_settings: Callable[..., Settings], auth: dict[str, str], receiver: Receiver
) -> None:
    """Two replicas' deliverers at once (SKIP LOCKED and a lease on PostgreSQL): per incident in order."""
    settings = make_settings(webhook_backoff_base=0.01, webhook_backoff_max=0.02, webhook_concurrency=2)
    flaky = iter(["500", "ok", "ok", "500"] * 40)
    lock = threading.Lock()

    def rule(doc: dict[str, Any]) -> str:
        with lock:
            return next(flaky, "ok")

    receiver.rule = rule
    one, two = Runtime(settings), Runtime(settings)
    try:
        gazetteer.store(one.engine, PLACES)
        with TestClient(
            create_app(settings, runtime=one, processor=False, dispatcher=False, scheduler=False)
        ) as c:
            subscribe(c, auth, receiver.url)
            with transaction(one.factory) as session:
                opened = [
                    Incident(
                        category="attack",
                        severity="high",
                        status="open",
                        place_name=f"Village {n}",
                        precision="unknown",
                        first_reported_at=utcnow(),
                        last_reported_at=utcnow(),
                        code=f"X{n}",
                    )
                    for n in range(6)
                ]
                session.add_all(opened)
                session.flush()
                for step in range(4):  # four changes of each incident, interleaved
                    for incident in opened:
                        incident.report_count = step + 1
                        webhooks.emit(
                            session=session,
                            incident=incident,
                            event=webhooks.WebhookEvent.UPDATED,
                            now=utcnow(),
                        )
        stop = threading.Event()

        def run(runtime: Runtime) -> None:
            while not stop.is_set():
                runtime.webhooks.run_once()

        threads = [threading.Thread(target=run, args=(r,)) for r in (one, two, one, two)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(receiver.delivered()) == 24, timeout=30)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        for n in range(6):
            counts = [
                d["incident"]["report_count"]
                for d in receiver.delivered()
                if d["incident"]["code"] == f"X{n}"
            ]
            assert counts == [1, 2, 3, 4]  # in order, none twice, none skipped
        ok = [g.doc["id"] for g in receiver.got if g.answered == 200]
        assert len(ok) == len(set(ok)) == 24
        assert all(r.state == "delivered" for r in deliveries(c))
    finally:
        one.webhooks.stop()
        two.webhooks.stop()
        one.engine.dispose()
        two.engine.dispose()
