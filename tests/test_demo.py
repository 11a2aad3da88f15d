"""The demo network: `kengele demo load --if-empty` as `make run` runs it, and what a newcomer does next."""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.cli import _roster_rules
from app.config import Settings
from app.main import create_app
from app.models import ApiToken, CheckIn, Incident, Person
from app.schemas import CODE_PREFIX
from app.services import demo
from app.services.runtime import Runtime
from tests.helpers import api, count, engine, messages, phone_is, wait_for
from tests.server import KENGELE, Server
from tests.test_cli import run

FOCAL_POINTS, OFFICERS = 7, 4


def demo_rows(name: str) -> list[dict[str, str]]:
    text = resources.files(demo.DATA).joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def simulate_lines(stdout: str) -> list[list[str]]:
    """The `simulate` commands the demo printed, each as the words after the program."""
    commands = [shlex.split(line) for line in stdout.splitlines() if " simulate --sender " in line]
    return [words[words.index("simulate") :] for words in commands]


def bearer(stdout: str) -> str:
    found = re.search(r'curl -H "Authorization: Bearer (kg_[\w-]+)"', stdout)
    assert found, stdout
    return found.group(1)


def scalar(db_url: str, query: object) -> object:
    db = engine(db_url)
    try:
        with db.connect() as conn:
            return conn.execute(query).scalar()  # type: ignore[call-overload]
    finally:
        db.dispose()


def test_the_demo_files_are_a_network_whose_walk_through_holds() -> None:
    """Officers of two levels in two areas named as the demo places name them; invented numbers only."""
    places = demo_rows(demo.GAZETTEER)
    people = demo_rows(demo.ROSTER)
    areas = {p["admin1"] for p in places} | {p["admin2"] for p in places}
    assert areas == {"Ituri", "Djugu", "Nord-Kivu", "Beni"}
    officers = {(p["level"], p["area"]) for p in people if p["role"] == "officer"}
    assert officers == {("1", "Djugu"), ("1", "Beni"), ("2", "Ituri"), ("2", "Nord-Kivu")}
    phones = [p["phone"].replace(" ", "") for p in people]
    assert all(re.fullmatch(r"\+24381000[19]\d{3}", phone) for phone in phones) and len(set(phones)) == len(
        phones
    )
    focal = {p["phone"].replace(" ", ""): p for p in people if p["role"] == "focal_point"}
    assert len(focal) == FOCAL_POINTS and {p["place"] for p in focal.values()} <= {p["name"] for p in places}
    home = next(p for p in places if p["name"] == focal[demo.ALERT.sender]["place"])
    assert home["name"] in demo.ALERT.text and demo.ALERT.text.startswith("ALERTE ATTAQUE")
    (officer,) = [p for p in people if p["phone"].replace(" ", "") == demo.ACK.sender]
    assert (officer["role"], officer["level"], officer["area"]) == ("officer", "1", home["admin2"])
    assert officer["name"] in demo.ALERT.shows and demo.CHECKIN.sender in focal


def test_demo_load_on_an_empty_database_then_the_walk_through(
    db_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    loaded = run("demo", "load", "--if-empty", db_url=db_url)
    assert loaded.returncode == 0, loaded.stderr
    assert "http://127.0.0.1:8000/docs" in loaded.stdout
    token = bearer(loaded.stdout)
    alert, ack, checkin = simulate_lines(loaded.stdout)
    assert alert == ["simulate", "--sender", demo.ALERT.sender, demo.ALERT.text]
    assert ack == ["simulate", "--sender", demo.ACK.sender, "RECU K1"]
    assert scalar(db_url, select(func.count(Person.id))) == FOCAL_POINTS + OFFICERS
    assert scalar(db_url, select(func.count(Person.id)).where(Person.demo)) == FOCAL_POINTS + OFFICERS
    assert count(db_url, purpose="checkin") == FOCAL_POINTS  # the first round, sent when the server starts

    assert run(*alert, db_url=db_url).returncode == 0
    (forward,) = messages(db_url, purpose="alert_forward")  # level 1 only: level 2 is told if nobody acks
    assert forward.recipient == demo.ACK.sender  # Capt. Alain Dufour, level 1 for Djugu
    assert forward.text.startswith("K1 ATTAQUE Fataki 20 - 1 rapport ")
    assert run(*ack, db_url=db_url).returncode == 0
    incident = select(Incident.acknowledged_by).where(
        Incident.code == "K1", Incident.status == "acknowledged"
    )
    assert scalar(db_url, incident) == "Capt. Alain Dufour"
    assert run(*checkin, db_url=db_url).returncode == 0
    answered = (
        select(CheckIn.answered_at)
        .join(Person, Person.id == CheckIn.person_id)
        .where(phone_is(demo.CHECKIN.sender))
    )
    assert scalar(db_url, answered) is not None

    with TestClient(create_app(make_settings())) as client:  # the token shown once opens the API
        incidents = api(client, "/api/v1/incidents", token)
        assert [(i["code"], i["status"]) for i in incidents["items"]] == [("K1", "acknowledged")]
        people = api(client, "/api/v1/people?limit=100", token)["items"]
        assert len(people) == FOCAL_POINTS + OFFICERS and all(p["demo"] for p in people)

    # The roster exported and imported again (as a network starting from the demo would) keeps the mark.
    roster = tmp_path / "roster.csv"
    assert run("roster", "export", str(roster), db_url=db_url).returncode == 0
    roster.write_text(
        roster.read_text(encoding="utf-8").replace("Jeanne Mave", "Jeanne M."), encoding="utf-8"
    )
    reimported = run("roster", "import", str(roster), db_url=db_url)
    assert reimported.returncode == 0, reimported.stderr
    assert reimported.stdout.splitlines()[-1].endswith("1 updated, 10 unchanged, 0 invalid")
    assert scalar(db_url, select(func.count(Person.id)).where(Person.demo)) == FOCAL_POINTS + OFFICERS

    again = run("demo", "load", "--if-empty", db_url=db_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"the roster has {FOCAL_POINTS + OFFICERS} people already: demo not loaded\n"
    assert scalar(db_url, select(func.count(ApiToken.id))) == 1
    assert count(db_url, purpose="checkin") == FOCAL_POINTS


def test_production_refuses_the_demo(db_url: str) -> None:
    r = run("demo", "load", db_url=db_url, KENGELE_ENV="production")
    assert r.returncode == 2 and r.stdout == ""
    assert (
        r.stderr.startswith("kengele: demo load: refused in production") and len(r.stderr.splitlines()) == 1
    )
    # As `make run` and the image run it: a note, and the server starts (nothing loaded).
    r = run("demo", "load", "--if-empty", db_url=db_url, KENGELE_ENV="production")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("demo not loaded: refused in production") and len(r.stdout.splitlines()) == 1
    assert scalar(db_url, select(func.count(Person.id))) == 0


def test_a_gateway_that_texts_phones_refuses_the_demo(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kengele.db"
    r = run("demo", "load", db_url=url, KENGELE_GATEWAY="console,twilio")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "twilio" in r.stderr and "KENGELE_GATEWAY=console" in r.stderr
    r = run("demo", "load", "--if-empty", db_url=url, KENGELE_GATEWAY="twilio,console")
    assert r.returncode == 0 and r.stderr == "" and len(r.stdout.splitlines()) == 1
    assert r.stdout.startswith("demo not loaded: KENGELE_GATEWAY sends through twilio")
    assert not (tmp_path / "kengele.db").exists()  # refused before the database is opened


def test_the_first_round_is_the_one_a_starting_server_would_send(
    make_settings: Callable[..., Settings],
) -> None:
    """The server's catch-up after the demo sends nothing twice; a roster the gazetteer refuses is named."""
    settings = make_settings()
    runtime = Runtime(settings)
    try:
        loaded = demo.load(
            engine=runtime.engine,
            factory=runtime.factory,
            rules=lambda session: _roster_rules(settings, session),
            checkins=runtime.checkins,
            actor="test",
        )
        assert (loaded.places, loaded.people.created, loaded.checkins) == (8, 11, FOCAL_POINTS)
        assert loaded.token is not None and loaded.next_code == "K1"
        assert runtime.checkins.catch_up() == 0
        again = demo.load(
            engine=runtime.engine,
            factory=runtime.factory,
            rules=lambda session: _roster_rules(settings, session),
            checkins=runtime.checkins,
            actor="test",
        )
        assert (again.people.unchanged, again.token, again.checkins) == (11, None, 0)

        with pytest.raises(
            demo.DemoError, match=r"^demo roster\.csv: row 2, column language: .*no demo person"
        ):
            demo.load(
                engine=runtime.engine,
                factory=runtime.factory,
                rules=lambda session: replace(_roster_rules(settings, session), languages=frozenset({"en"})),
                checkins=runtime.checkins,
                actor="test",
            )
    finally:
        runtime.stop()


def test_the_code_printed_for_the_ack_is_the_one_the_alert_gets(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    """On PostgreSQL an id a rolled-back insert took is gone: the next incident is not max(id) + 1."""
    settings = make_settings()
    runtime = Runtime(settings)
    try:
        with runtime.factory() as session:
            now = datetime.now(UTC)
            session.add(
                Incident(category="attack", severity="high", first_reported_at=now, last_reported_at=now)
            )
            session.flush()
            session.rollback()
        loaded = demo.load(
            engine=runtime.engine,
            factory=runtime.factory,
            rules=lambda session: _roster_rules(settings, session),
            checkins=runtime.checkins,
            actor="test",
        )
    finally:
        runtime.stop()
    assert loaded.next_code.startswith(CODE_PREFIX)
    r = run("simulate", "--sender", demo.ALERT.sender, demo.ALERT.text, db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["incident"]["code"] == loaded.next_code


@pytest.mark.slow
def test_a_newcomer_sees_a_forward_an_ack_and_a_checkin(tmp_path: Path) -> None:
    """`make run`'s steps in a fresh folder, then the commands the demo printed, pasted as printed."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "kengele").symlink_to(KENGELE)
    # As on a laptop: SQLite beside the working folder, no secret key (a development key file is made).
    server = Server(
        "sqlite:///./kengele.db",
        tmp_path,
        KENGELE_SECRET_KEY="",
        KENGELE_LOG_LEVEL="INFO",
        KENGELE_LOG_FORMAT="text",
    )

    def typed(*words: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(words, cwd=tmp_path, env=server.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r

    typed(".venv/bin/kengele", "db", "upgrade")
    typed(".venv/bin/kengele", "gazetteer", "import", "--builtin", "--if-empty")
    printed = typed(".venv/bin/kengele", "demo", "load", "--if-empty").stdout
    assert (tmp_path / "kengele.key").exists()
    pasted = [
        shlex.split(line) for line in printed.splitlines() if line.startswith("  .venv/bin/kengele simulate")
    ]
    alert, ack, checkin = pasted
    server.start()
    try:

        def console(fragment: str, times: int = 1) -> bool:
            return server.log.read_text(encoding="utf-8").count(fragment) >= times

        wait_for(lambda: console("; checkin): ", FOCAL_POINTS), timeout=30)
        typed(*alert)
        officer = "(officer Capt. Alain Dufour, level 1, Djugu; "
        wait_for(lambda: console(officer + "alert_forward): K1 ATTAQUE Fataki 20 - 1 rapport "), timeout=30)
        typed(*ack)
        wait_for(lambda: console(officer + "reply): K1 recu. Merci."), timeout=30)
        typed(*checkin)
        wait_for(lambda: console("; reply): Merci, RAS bien note."), timeout=30)

        curl = next(shlex.split(line) for line in printed.splitlines() if line.strip().startswith("curl "))
        assert curl[-1] == f"{server.url}/api/v1/incidents"
        answer = httpx.get(curl[-1], headers=dict([curl[2].split(": ", 1)]), timeout=10)
        assert answer.status_code == 200 and answer.json()["items"][0]["status"] == "acknowledged"
        assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200
    finally:
        server.stop()
