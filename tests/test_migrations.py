"""Migrations run on SQLite and PostgreSQL and describe exactly the models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, MetaData, Table, create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import alembic_config, make_engine, upgrade, utcnow
from app.models import Alert, Base, Message, Person, UssdSession
from app.services import roster
from app.services.pipeline import load_senders
from tests.helpers import TEST_KEYRING, leaks, stored_bytes
from tests.helpers import engine as keyed_engine


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"render_as_batch": conn.dialect.name == "sqlite"})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_sqlite_pragmas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/k.db"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert {
        "messages",
        "people",
        "places",
        "alerts",
        "incidents",
        "delivery_events",
        "checkins",
        "api_tokens",
        "audit_log",
    } <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_downgrade_and_upgrade_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/k.db"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(url)


# -- 0004: a database stored in clear is encrypted -------------------------------------------------
JEANNE, OFFICER, SERVICE = "+243810000001", "+243990000001", "+243990001000"
CLEAR_ROWS: dict[str, list[dict[str, Any]]] = {
    "people": [
        {"id": 1, "name": "Jeanne", "phone": JEANNE, "role": "focal_point", "status": "approved"},
        {"id": 2, "name": "Officer", "phone": OFFICER, "role": "officer", "status": "approved"},
    ],
    "messages": [
        {
            "id": 1,
            "direction": "inbound",
            "provider": "twilio",
            "provider_message_id": "SM1",
            "sender": JEANNE,
            "recipient": SERVICE,
            "status": "received",
            "text": "A1 Djugu",
            "raw": json.dumps({"From": ["+243 81 000 0001"], "To": [SERVICE]}),
        },
        {"id": 2, "direction": "outbound", "recipient": OFFICER, "status": "sent", "text": "K1 attack"},
    ],
    "alerts": [
        {"id": 1, "message_id": 1, "sender": JEANNE, "category": "attack", "severity": "high", "text": "A1"}
    ],
    "delivery_events": [
        {
            "id": 1,
            "message_id": 2,
            "provider": "twilio",
            "provider_message_id": "SM2",
            "status": "delivered",
            "provider_status": "delivered",
            "raw": json.dumps({"To": [OFFICER]}),
        }
    ],
    "ussd_sessions": [{"session_id": "ATUid_1", "phone": JEANNE, "screen": "start"}],
}
ENCRYPTED = {
    "people": ["phone"],
    "messages": ["sender", "recipient", "raw"],
    "alerts": ["sender"],
    "delivery_events": ["raw"],
    "ussd_sessions": ["phone"],
}


def _filled(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """A row with `values` and something of the right type in every other required column."""
    empty = {int: 0, bool: False, float: 0.0, str: "", dict: {}, datetime: datetime.now(UTC)}
    row = dict(values)
    for column in table.columns:
        if column.name not in row and not column.nullable and not column.primary_key:
            kind = dict if isinstance(column.type, JSON) else column.type.python_type
            row[column.name] = empty[kind]
    return row


def _insert_clear(db_url: str) -> None:
    engine = create_engine(db_url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        for name, rows in CLEAR_ROWS.items():
            for row in rows:
                conn.execute(meta.tables[name].insert(), _filled(meta.tables[name], row))
    engine.dispose()


def _stored(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The encrypted columns as stored (not decrypted), by table."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        out = {t: conn.execute(text(f"SELECT {', '.join(c)} FROM {t}")).all() for t, c in ENCRYPTED.items()}
    engine.dispose()
    return out


def test_0004_encrypts_a_database_stored_in_clear(db_url: str) -> None:
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "0003")
    try:
        _insert_clear(db_url)
        with pytest.raises(RuntimeError, match="KENGELE_SECRET_KEY"):
            upgrade(db_url)  # rows in clear and no key: nothing is half done
        assert _stored(db_url)["people"] == [(JEANNE,), (OFFICER,)]

        upgrade(db_url, keyring=TEST_KEYRING)
        for table, rows in _stored(db_url).items():
            for value in (v for row in rows for v in row if v is not None):
                assert value.startswith(f"k1:{TEST_KEYRING.newest.id}:"), (table, value)
        assert leaks(stored_bytes(db_url), [JEANNE, OFFICER, SERVICE]) == []

        db = keyed_engine(db_url)
        with Session(db) as session:
            people = session.scalars(select(Person).order_by(Person.id)).all()
            assert [(p.phone, p.phone_index) for p in people] == [
                (JEANNE, TEST_KEYRING.index(JEANNE)),
                (OFFICER, TEST_KEYRING.index(OFFICER)),
            ]
            inbound = session.get(Message, 1)
            assert inbound is not None and (inbound.sender, inbound.recipient) == (JEANNE, SERVICE)
            assert json.loads(inbound.raw or "")["From"] == ["+243 81 000 0001"]
            alert = session.get(Alert, 1)
            assert alert is not None and alert.sender_index == TEST_KEYRING.index(JEANNE)
            assert session.get(UssdSession, "ATUid_1").phone == JEANNE  # type: ignore[union-attr]
            # found by number, as the pipeline and the roster look them up
            assert set(load_senders(session, {JEANNE}, utcnow()).people) == {JEANNE}
            with pytest.raises(roster.Conflict, match="person 2"):
                roster._phone_free(session, OFFICER)
            session.add(Person(name="again", phone=JEANNE, role="focal_point"))
            with pytest.raises(IntegrityError):
                session.flush()  # one number, one person: the unique constraint is on the index
        db.dispose()

        cfg.attributes["keyring"] = TEST_KEYRING
        command.downgrade(cfg, "0003")  # and back: the numbers in clear again
        assert _stored(db_url)["people"] == [(JEANNE,), (OFFICER,)]
    finally:
        upgrade(db_url, keyring=TEST_KEYRING)  # the session's PostgreSQL database stays at head


def test_0006_names_the_areas_geonames_gave_as_codes(db_url: str) -> None:
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "0005")
    engine = create_engine(db_url)
    meta = MetaData()
    meta.reflect(engine)
    places, incidents, people, rounds = (
        meta.tables[t] for t in ("places", "incidents", "people", "checkin_rounds")
    )
    beni = {"id": 1, "name": "Beni", "name_norm": "beni", "lat": 0.49, "lon": 29.47, "country": "CD"}
    rows = {
        places: [
            beni | {"admin1": "11", "admin2": "219056", "source": "geonames"},
            beni | {"id": 2, "admin1": "Nord-Kivu", "source": "csv"},
            beni | {"id": 3, "admin1": "North Kivu", "admin2": "Djugu", "source": "csv"},
        ],
        incidents: [{"id": 1, "code": "K1", "place_id": 1, "area": "219056"}],
        people: [
            {"id": 1, "phone_index": "a", "area": "North Kivu"},
            {"id": 2, "phone_index": "b", "area": "Djugu"},
            {"id": 3, "phone_index": "c", "area": "11"},  # the code the places carried
        ],
        rounds: [{"id": 1, "round_key": "11@2026-12-01T08:00", "area": "11"}],
    }
    with engine.begin() as conn:
        for table, values in rows.items():
            for row in values:
                conn.execute(table.insert(), _filled(table, row))
    upgrade(db_url)
    query = "SELECT admin1, admin2, admin1_code, admin2_code FROM places ORDER BY id"
    with engine.connect() as conn:
        assert conn.execute(text(query)).all() == [
            ("Nord-Kivu", "Beni", "11", "219056"),
            ("Nord-Kivu", None, None, None),  # the network's own place is left as it was
            ("Nord-Kivu", "Djugu", None, None),  # ... but for another spelling of a known area
        ]
        assert conn.execute(text("SELECT area FROM incidents")).scalar_one() == "Beni"
        people_areas = conn.execute(text("SELECT area FROM people ORDER BY id")).scalars().all()
        assert people_areas == ["Nord-Kivu", "Djugu", "Nord-Kivu"]
        assert conn.execute(text("SELECT area FROM checkin_rounds")).scalar_one() == "Nord-Kivu"
    command.downgrade(cfg, "0005")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT admin1, admin2 FROM places ORDER BY id")).all() == [
            ("11", "219056"),  # GeoNames' codes back where they were
            ("Nord-Kivu", None),
            ("Nord-Kivu", "Djugu"),
        ]
    engine.dispose()
    upgrade(db_url)


def test_0007_marks_the_demo_people_a_database_had_already(db_url: str) -> None:
    """Number and name of a demo row as shipped: a real person who has one of its numbers is no demo."""
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "0006")
    engine = create_engine(db_url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        people = meta.tables["people"]
        assert "demo" not in people.c
        rows = [
            ("Jeanne Mave", "+243810001001"),  # the demo's
            ("Josephine Real", "+243810009001"),  # a demo number, someone else's name
            ("Capt. Alain Dufour", "+243990000001"),  # a demo name, another number
        ]
        with engine.begin() as conn:
            for i, (name, phone) in enumerate(rows, start=1):
                row = {"id": i, "name": name, "phone": "sealed", "phone_index": TEST_KEYRING.index(phone)}
                conn.execute(people.insert(), _filled(people, row))
        upgrade(db_url)  # without a key nobody can be matched: nobody is marked
        query = text("SELECT name FROM people WHERE demo ORDER BY id")
        with engine.connect() as conn:
            assert conn.execute(query).scalars().all() == []
        command.downgrade(cfg, "0006")
        upgrade(db_url, keyring=TEST_KEYRING)
        with engine.connect() as conn:
            assert conn.execute(query).scalars().all() == ["Jeanne Mave"]
    finally:
        engine.dispose()
        upgrade(db_url, keyring=TEST_KEYRING)  # the session's PostgreSQL database stays at head
