"""The production shape, run for real: nginx (deploy/nginx/) terminating TLS in front of two web
replicas (`kengele serve --no-scheduler --no-dispatcher`) and one `kengele worker`, on PostgreSQL."""

from __future__ import annotations

import os
import re
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.config import Settings
from app.enums import Direction, MessageStatus
from app.models import LoginFailure, Message
from app.services import gazetteer
from app.services.runtime import Runtime
from tests import proxy
from tests.fakes import FakeProvider
from tests.helpers import signed_headers, twilio_form, wait_for
from tests.server import Server, WorkerProcess, free_port, start_all
from tests.test_corpus import CORPUS, load_roster
from tests.test_replicas import ALERTS, provider_env  # ALERTS: focal points, an incident each

pytestmark = pytest.mark.slow  # real server processes and nginx: run alone (make test)

REQUIRE_PROXY = os.environ.get("KENGELE_TEST_REQUIRE_PROXY") == "1"
CALLER = "127.0.0.2"  # a browser's address: loopback, but not the one nginx reaches the replicas from
UPSTREAM = re.compile(r"upstream=(127\.0\.0\.1:\d+) ")


@pytest.fixture
def nginx_binary() -> Path:
    if not os.access(proxy.NGINX, os.X_OK):
        if REQUIRE_PROXY:
            pytest.fail(f"nginx is required here but {proxy.NGINX} is missing (apt-get install nginx)")
        pytest.skip(f"{proxy.NGINX} missing (apt-get install nginx)")
    return proxy.NGINX


def outbound(setup: Runtime) -> list[Message]:
    with setup.factory() as session:
        return list(session.scalars(select(Message).where(Message.direction == Direction.OUTBOUND)))


def processed(setup: Runtime) -> int:
    with setup.factory() as session:
        rows = session.scalars(select(Message).where(Message.direction == Direction.INBOUND))
        return sum(1 for m in rows if m.processed_at is not None)


@dataclass
class Shape:
    public_url: str  # https://localhost:<port>: what Twilio is configured to call
    http_port: int
    cert: Path
    nginx: proxy.Nginx
    servers: list[Server]
    worker: WorkerProcess  # not started


@pytest.fixture
def shape(db_url: str, tmp_path: Path, nginx_binary: Path, twilio_fake: FakeProvider) -> Iterator[Shape]:
    """The proxy on https://localhost:<port> in front of two web replicas; the worker not yet started."""
    https_port, http_port = free_port(), free_port()
    public_url = f"https://localhost:{https_port}"
    env = provider_env(twilio_fake) | {
        "KENGELE_PUBLIC_URL": public_url,
        "KENGELE_ENV": "production",
        "KENGELE_FORWARDED_ALLOW_IPS": "127.0.0.1",  # nginx, as it reaches the replicas
    }
    servers: list[Server] = []
    nginx: proxy.Nginx | None = None
    worker = WorkerProcess(db_url, tmp_path, **env)
    try:
        servers += [Server(db_url, tmp_path, "--no-scheduler", "--no-dispatcher", **env) for _ in range(2)]
        start_all(*servers)
        cert, key = proxy.self_signed(tmp_path)
        rendered = proxy.render(
            tmp_path,
            servers=[f"127.0.0.1:{s.port}" for s in servers],
            http_port=http_port,
            https_port=https_port,
            cert=cert,
            key=key,
        )
        nginx = proxy.Nginx(rendered).start(f"http://127.0.0.1:{http_port}/nginx-health")
        yield Shape(public_url, http_port, cert, nginx, servers, worker)
    finally:
        worker.stop()
        if nginx is not None:
            nginx.stop()
        for server in servers:
            server.stop()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite deployments run one process
def test_webhooks_through_the_tls_proxy_reach_both_replicas_and_the_worker_sends_each_reply_once(
    make_settings: Callable[..., Settings],
    twilio_fake: FakeProvider,
    shape: Shape,
) -> None:
    public_url, nginx, servers, worker = shape.public_url, shape.nginx, shape.servers, shape.worker
    setup = Runtime(make_settings())
    gazetteer.store(setup.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    load_roster(setup)
    hook = public_url + "/webhooks/twilio/sms"
    trust = ssl.create_default_context(cafile=shape.cert)  # the proxy's certificate, as Twilio trusts a CA's
    try:
        with httpx.Client(base_url=public_url, verify=trust, timeout=10) as client:
            ready = client.get("/readyz")
            assert (ready.status_code, ready.json()["status"]) == (200, "ready")
            assert client.get("/metrics").status_code == 404  # scraped on each replica, not here
            for sender, text in ALERTS:
                form = twilio_form(sender, text)
                r = client.post(hook, data=form, headers=signed_headers(form, hook))
                assert r.status_code == 200, r.text
                assert "<Response" in r.text
            # Signed for another URL than the one Twilio calls (a replica's own, or plain http):
            # refused, as is a signature made with another token.
            form = twilio_form("+243810000001", "A1 Djugu forged")
            for url, token in [
                (servers[0].url + "/webhooks/twilio/sms", None),
                (hook.replace("https://", "http://"), None),
                (hook, "not-the-account-token-0123456789"),
            ]:
                headers = signed_headers(form, url) if token is None else signed_headers(form, url, token)
                assert client.post(hook, data=form, headers=headers).status_code == 403, url
            assert client.post(hook, data=form).status_code == 403  # no signature at all
            # Africa's Talking is not configured here: its webhooks do not exist (404), and the
            # proxy's log does not keep the secret a caller put in the path.
            assert client.post("/webhooks/africastalking/s3cr3t-segment/sms", data={}).status_code == 404
        # Port 80 only redirects (its own health answer aside): nothing reaches a replica in clear.
        plain = httpx.get(f"http://localhost:{shape.http_port}/webhooks/twilio/sms?a=1")
        assert (plain.status_code, plain.headers["location"]) == (
            301,
            "https://localhost/webhooks/twilio/sms?a=1",
        )

        # A sign-in failure is counted against the caller's address, not the proxy's (one
        # lock-out for everyone), and not against one the caller claims in X-Forwarded-For.
        caller = httpx.HTTPTransport(local_address=CALLER, verify=trust)
        with httpx.Client(base_url=public_url, transport=caller, timeout=10) as browser:
            page = browser.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert page.status_code == 200 and csrf
            login = {"username": "nobody", "password": "wrong", "csrf_token": csrf.group(1)}
            r = browser.post("/login", data=login, headers={"X-Forwarded-For": "203.0.113.9"})
            assert r.status_code == 401
        with setup.factory() as session:
            counted = list(session.scalars(select(LoginFailure.address)))
        assert counted == [setup.keyring.index(f"login:{CALLER}")]

        logged = "\n".join(nginx.access_lines())
        assert "s3cr3t-segment" not in logged and '"POST /webhooks/africastalking/-/sms" 404' in logged
        assert "a=1" not in logged  # no query string: a search may hold a phone number

        # Both replicas stored some: the proxy's log names the replica that answered each webhook.
        answered = [UPSTREAM.search(line) for line in nginx.access_lines() if "/webhooks/twilio/sms" in line]
        by_replica = Counter(m.group(1) for m in answered if m)
        assert set(by_replica) == {f"127.0.0.1:{s.port}" for s in servers}, by_replica
        assert sum(by_replica.values()) == len(ALERTS) + 4

        # The replicas process (their processor runs) but never send: that is the worker's part.
        wait_for(lambda: processed(setup) == len(ALERTS), timeout=15)
        queued = outbound(setup)
        assert queued and {m.status for m in queued} == {MessageStatus.QUEUED}
        assert twilio_fake.requests == []
        worker.start()
        replied = {sender for sender, _ in ALERTS}
        wait_for(
            lambda: (
                replied <= {r.form["To"][0] for r in twilio_fake.requests}
                and all(m.status in (MessageStatus.SENT, MessageStatus.DELIVERED) for m in outbound(setup))
            ),
            timeout=15,
        )
        sent = outbound(setup)
        received = Counter((r.form["To"][0], r.form["Body"][0]) for r in twilio_fake.requests)
        assert received == Counter((m.recipient, m.text) for m in sent), "an SMS was sent twice (or lost)"
        replies = Counter(m.recipient for m in sent if m.in_reply_to is not None and m.recipient in replied)
        assert replies == Counter(replied), replies  # each alert's reply, once
        # The status callback the worker asked Twilio for is the public one, behind the proxy.
        callbacks = {r.form.get("StatusCallback", [""])[0] for r in twilio_fake.requests}
        assert callbacks == {public_url + "/webhooks/twilio/status"}
    finally:
        setup.stop()
