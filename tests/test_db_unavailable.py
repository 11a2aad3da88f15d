"""The database away: 503 with Retry-After (USSD: an END screen), never 500, and back by itself."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.config import Settings
from app.main import create_app
from app.outage import RETRY_AFTER, dropped, unavailable
from keywords import grammar
from tests.conftest import ADMIN_TOKEN, PG_ADMIN_URL, _truncate
from tests.helpers import AT_SECRET, TWILIO_TOKEN, at_form, count, signed_headers, twilio_form
from tests.server import TEST_SECRET_KEY, free_port
from tests.test_webhook_routes import at_delivery, at_voice, twilio_status, twilio_voice

AT = f"/webhooks/africastalking/{AT_SECRET}"


def settings_for(url: str) -> Settings:
    """Test settings on `url`, with both providers' webhooks verified."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        database_url=url,
        admin_token=ADMIN_TOKEN,
        secret_key=TEST_SECRET_KEY,
        gateway="console",
        at_webhook_secret=AT_SECRET,
        twilio_auth_token=TWILIO_TOKEN,
        public_url="http://testserver",
        log_format="text",
    )


def app_on(url: str) -> TestClient:
    """A client of an app on `url` with no background worker but the intake (only requests commit)."""
    return TestClient(create_app(settings_for(url), processor=False, dispatcher=False, scheduler=False))


def twilio_post(client: TestClient, path: str, form: dict[str, str]) -> Any:
    url = f"http://testserver/webhooks/twilio/{path}"
    return client.post(f"/webhooks/twilio/{path}", data=form, headers=signed_headers(form, url))


def ussd(sender: str = "+243810000001", session: str = "ATUid_1", step: str = "") -> dict[str, str]:
    return {"sessionId": session, "serviceCode": "*384#", "phoneNumber": sender, "text": step}


# -- which errors are an outage ---------------------------------------------------------------------
def _sqlite_locked(tmp_path: Path) -> BaseException:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        other.close()
        holder.close()
    raise AssertionError("no lock")


def _raised(run: Callable[[], object]) -> BaseException:
    try:
        run()
    except Exception as exc:
        return exc
    raise AssertionError("nothing raised")


def _sqlalchemy(url: str, sql: str) -> BaseException:
    engine = create_engine(url)

    def run() -> None:
        with engine.begin() as conn:
            conn.execute(text(sql))

    try:
        return _raised(run)
    finally:
        engine.dispose()


def test_sqlite_errors_tell_outage_from_bug(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    table: list[tuple[str, BaseException, bool]] = [
        ("database is locked (driver)", _sqlite_locked(tmp_path), True),
        ("cannot open the file", _sqlalchemy(f"sqlite:///{tmp_path}/no/such/dir.db", "SELECT 1"), True),
        ("no such table", _sqlalchemy(url, "SELECT * FROM nothing_here"), False),
        ("syntax error", _sqlalchemy(url, "SELEC 1"), False),
        ("every pooled connection busy", PoolTimeout("QueuePool limit reached"), True),
        ("not a database error", ValueError("bad"), False),
    ]
    for name, exc, expected in table:
        assert unavailable(exc) is expected, name
        assert not dropped(exc), name  # never retried at once: the busy timeout already waited


def test_postgresql_errors_tell_outage_from_bug(pg_database: str) -> None:
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    killed = _sqlalchemy(pg_database, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert dropped(killed) and dropped(_sqlalchemy(closed, "SELECT 1"))  # a fresh connection may cure these
    table: list[tuple[str, BaseException, bool]] = [
        ("connection refused", _sqlalchemy(closed, "SELECT 1"), True),
        ("backend terminated (AdminShutdown)", killed, True),
        ("undefined table", _sqlalchemy(pg_database, "SELECT * FROM nothing_here"), False),
        ("division by zero", _sqlalchemy(pg_database, "SELECT 1/0"), False),
        (
            "unique violation",
            _sqlalchemy(pg_database, "CREATE TEMP TABLE u (x int unique); INSERT INTO u VALUES (1), (1)"),
            False,
        ),
    ]
    for name, exc, expected in table:
        assert unavailable(exc) is expected, name


# -- every route, the database away --------------------------------------------------------------
# (method, path, how to send, expected status); a webhook's form is built fresh for each call.
ROUTES: list[tuple[str, str, Callable[[TestClient], Any], int]] = [
    ("POST", "twilio sms", lambda c: twilio_post(c, "sms", twilio_form()), 503),
    ("POST", "twilio status", lambda c: twilio_post(c, "status", twilio_status()), 503),
    ("POST", "twilio voice", lambda c: twilio_post(c, "voice", twilio_voice()), 503),
    ("POST", "at sms", lambda c: c.post(f"{AT}/sms", data=at_form()), 503),
    ("POST", "at delivery", lambda c: c.post(f"{AT}/delivery", data=at_delivery()), 503),
    ("POST", "at voice", lambda c: c.post(f"{AT}/voice", data=at_voice()), 503),
    ("GET", "/readyz", lambda c: c.get("/readyz"), 503),
    *[
        ("GET", path, lambda c, p=path: c.get(p, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}), 503)
        for path in (
            "/api/v1/incidents",
            "/api/v1/incidents/K42",
            "/api/v1/alerts",
            "/api/v1/messages",
            "/api/v1/triage",
            "/api/v1/people",
            "/api/v1/network/health",
            "/api/v1/incidents.geojson",
        )
    ],
]


@pytest.fixture
def away() -> Iterator[TestClient]:
    """An app whose database is a PostgreSQL port nobody listens on."""
    with app_on(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/kengele") as client:
        yield client


@pytest.mark.parametrize(("method", "name", "call", "status"), ROUTES, ids=[r[1] for r in ROUTES])
def test_a_route_answers_503_with_retry_after(
    away: TestClient, method: str, name: str, call: Callable[[TestClient], Any], status: int
) -> None:
    r = call(away)
    assert r.status_code == status, r.text
    assert r.headers["retry-after"] == str(RETRY_AFTER)
    assert r.headers["content-type"] == "application/json"
    assert "database" in r.json()["detail"]
    assert r.headers["cache-control"] == "no-store"  # the security headers, as on every answer


@pytest.mark.parametrize(
    ("sender", "words"),
    [
        ("+243810000001", "Service indisponible"),
        ("+254711000001", "Huduma haipatikani"),
        ("+256771000001", "Service unavailable"),
    ],
)
def test_ussd_ends_asking_to_dial_again_in_the_callers_language(
    away: TestClient, sender: str, words: str
) -> None:
    # A 503 ends the session (AT takes only CON/END): the caller would see only a network error.
    r = away.post(f"{AT}/ussd", data=ussd(sender))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith(f"END {words}") and len(r.text) <= 182


def test_liveness_does_not_need_the_database(away: TestClient) -> None:
    assert away.get("/healthz").status_code == 200


def test_the_api_document_names_the_503_of_webhooks(away: TestClient) -> None:
    paths = away.get("/openapi.json").json()["paths"]
    sms = paths["/webhooks/twilio/sms"]["post"]["responses"]
    assert "Retry-After" in sms["503"]["headers"]
    assert "503" not in paths["/webhooks/africastalking/{secret}/ussd"]["post"]["responses"]  # an END screen


def test_one_warning_for_an_outage_not_a_traceback_per_request(
    away: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            for _method, _name, call, _status in ROUTES:
                call(away)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("kengele")]
    assert [r.getMessage() for r in warnings] == ["database unavailable: answering 503 until it is back"]
    assert not [r for r in caplog.records if r.exc_info]


# -- a connection dropped mid-commit (PostgreSQL) -------------------------------------------------
class Killer:
    """Terminate the backend of the next `left` commits, just before their COMMIT reaches it."""

    def __init__(self, admin_url: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.left = 0
        self.lock = threading.Lock()

    def __call__(self, conn: Any) -> None:
        with self.lock:
            if self.left <= 0:
                return
            self.left -= 1
        pid = conn.connection.dbapi_connection.info.backend_pid
        with self.admin.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


@pytest.fixture
def dropping(pg_database: str) -> Iterator[tuple[TestClient, Killer, str]]:
    """An app on PostgreSQL whose connections a `Killer` drops at commit when armed."""
    _truncate(pg_database)
    killer = Killer(PG_ADMIN_URL)
    with app_on(pg_database) as client:
        event.listen(client.app.state.runtime.engine, "commit", killer)  # type: ignore[attr-defined]
        yield client, killer, pg_database
    killer.admin.dispose()


def test_a_connection_dropped_mid_commit(dropping: tuple[TestClient, Killer, str]) -> None:
    client, killer, url = dropping
    # Once: the intake retries the batch on a fresh connection, and the provider gets its 200.
    killer.left = 1
    form = twilio_form()
    assert twilio_post(client, "sms", form).status_code == 200
    assert count(url, provider_message_id=form["MessageSid"]) == 1
    # Every try: 503 and nothing kept; the provider's retry once it is back: 200, stored once.
    killer.left = 100
    form = twilio_form()
    r = twilio_post(client, "sms", form)
    assert r.status_code == 503 and r.headers["retry-after"] == str(RETRY_AFTER)
    assert count(url, provider_message_id=form["MessageSid"]) == 0
    killer.left = 0
    assert twilio_post(client, "sms", form).status_code == 200
    assert twilio_post(client, "sms", form).status_code == 200  # a second retry changes nothing
    assert count(url, provider_message_id=form["MessageSid"]) == 1


def test_ussd_session_insert_dropped(dropping: tuple[TestClient, Killer, str]) -> None:
    client, killer, _ = dropping
    killer.left = 100
    r = client.post(f"{AT}/ussd", data=ussd(session="ATUid_drop"))
    assert r.status_code == 200 and r.text.startswith("END Service indisponible")
    killer.left = 1  # one drop is retried unseen
    r = client.post(f"{AT}/ussd", data=ussd(session="ATUid_drop"))
    assert r.status_code == 200 and r.text.startswith("CON "), r.text


def test_back_by_itself_after_every_connection_is_killed(dropping: tuple[TestClient, Killer, str]) -> None:
    client, _, url = dropping
    assert client.post(f"{AT}/sms", data=at_form()).status_code == 200  # the pool holds a connection now
    name = url.rsplit("/", 1)[1]
    with create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT").connect() as admin:
        admin.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name}
        )
    form = at_form()
    assert client.post(f"{AT}/sms", data=form).status_code == 200  # no restart: a fresh connection
    assert count(url, provider_message_id=form["id"]) == 1
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.get("/api/v1/messages", headers=auth).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_a_grammar_without_the_unavailable_text_uses_its_expired_one(tmp_path: Path) -> None:
    source = (Path(grammar.__file__).parent / "grammars" / "en.toml").read_text(encoding="utf-8")
    older = "\n".join(line for line in source.splitlines() if not line.startswith("unavailable ="))
    (tmp_path / "en.toml").write_text(older, encoding="utf-8")
    loaded = grammar.load_grammar(tmp_path / "en.toml")
    assert loaded.ussd["unavailable"] == loaded.ussd["expired"]
