"""Key rotation: written under key A, rotated to B with A still listed, then A removed; nothing lost."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import Text, select, type_coerce

from app.config import Settings
from app.crypto import Keyring, MissingKey
from app.db import make_engine, utcnow
from app.models import Alert, Base, DeliveryEvent, Incident, Message, Person, UssdSession
from app.services import keys, roster
from app.services.pipeline import load_senders
from app.services.runtime import Runtime
from tests.helpers import stored_bytes
from tests.test_cli import run
from tests.test_crypto import KEY_A, KEY_B
from tests.test_escalation import setup, sms

JEANNE, STRANGER = "+243810000001", "+243820000050"
A, B, BOTH = Keyring([KEY_A]), Keyring([KEY_B]), Keyring([KEY_B, KEY_A])


def stored_values(db_url: str, keyring: Keyring) -> list[str]:
    """Every encrypted value as stored, over every table."""
    engine = make_engine(db_url, keyring=keyring)
    out: list[str] = []
    with engine.connect() as conn:
        for sealed in keys.sealed_tables():
            for column in sealed.columns:
                query = select(type_coerce(column, Text)).where(column.is_not(None))
                out += conn.execute(query).scalars().all()
    engine.dispose()
    return out


def read_everything(runtime: Runtime) -> int:
    """Load every row of every table through the models (which opens every value); how many."""
    with runtime.factory() as session:
        return sum(len(session.scalars(select(model)).all()) for model in Base.__subclasses__())


def written_under_a(runtime: Runtime) -> None:
    sms(runtime, JEANNE, "A1 Djugu", "a1")
    sms(runtime, STRANGER, "A1 Djugu", "a2")
    with runtime.factory.begin() as session:
        session.add(UssdSession(session_id="ATUid_a", phone=JEANNE, created_at=utcnow(), updated_at=utcnow()))
        message = session.scalars(select(Message).where(Message.direction == "outbound")).first()
        raw = json.dumps({"To": [message.recipient if message else ""]})
        session.add(
            DeliveryEvent(
                provider="twilio", provider_message_id="SMa", status="delivered", provider_status="x", raw=raw
            )
        )


def the_incident(runtime: Runtime) -> tuple[int, int]:
    with runtime.factory() as session:
        incident = session.scalars(select(Incident)).one()
        return incident.report_count, incident.reporter_count


def test_rotation_from_a_to_b_loses_no_row_and_no_lookup(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    runtime = setup(make_settings, secret_key=KEY_A)
    written_under_a(runtime)
    assert the_incident(runtime) == (2, 2)
    runtime.stop()
    assert all(v.startswith(f"k1:{A.newest.id}:") for v in stored_values(db_url, A))

    # B first, A still listed: old rows are read and found by number; new rows are sealed under B.
    runtime = Runtime(make_settings(secret_key=KEY_B, secret_keys=KEY_A))
    total = read_everything(runtime)
    sms(runtime, JEANNE, "A1 Djugu", "b1")  # Jeanne again (her roster entry and first report under A)
    assert the_incident(runtime) == (3, 2)  # one more report, not one more reporter
    with runtime.factory() as session:
        alert = session.scalars(select(Alert).order_by(Alert.id.desc())).first()
        jeanne = session.scalars(select(Person).where(Person.phone_index.in_(BOTH.indexes(JEANNE)))).one()
        assert alert is not None and alert.person_id == jeanne.id  # the sender was recognised
    runtime.stop()
    mixed = stored_values(db_url, BOTH)
    assert any(v.startswith(f"k1:{A.newest.id}:") for v in mixed)
    assert any(v.startswith(f"k1:{B.newest.id}:") for v in mixed)

    env = {"KENGELE_SECRET_KEY": KEY_B, "KENGELE_SECRET_KEYS": KEY_A}
    status = run("keys", "status", db_url=db_url, **env)
    assert status.returncode == 0 and f"messages: 0 rows not under key {B.newest.id}" not in status.stdout
    assert "every row is under" not in status.stdout
    rotated = run("keys", "rotate", "--batch", "2", "--vacuum", db_url=db_url, **env)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip().endswith(
        f"every row is under key {B.newest.id}; the older keys ({A.newest.id}) can be removed"
    )
    assert rotated.stderr == ""  # a few rows: over before a progress bar could be read (tests/test_cli.py)
    again = run("keys", "rotate", db_url=db_url, **env)
    assert again.stdout.startswith("0 rows encrypted again"), again.stdout
    assert all(v.startswith(f"k1:{B.newest.id}:") for v in stored_values(db_url, B))
    assert f"k1:{A.newest.id}:".encode() not in stored_bytes(db_url)  # no copy under A left in the file

    # A removed: every row readable, every lookup by number still finds its rows.
    runtime = Runtime(make_settings(secret_key=KEY_B))
    assert read_everything(runtime) >= total
    sms(runtime, JEANNE, "A1 Djugu", "c1")
    sms(runtime, STRANGER, "A1 Djugu", "c2")
    assert the_incident(runtime) == (5, 2)
    with runtime.factory() as session:
        assert set(load_senders(session, {JEANNE, STRANGER}, utcnow()).people) == {JEANNE}
        with pytest.raises(roster.Conflict, match="already on the roster"):
            roster._phone_free(session, JEANNE)
        assert session.get(UssdSession, "ATUid_a").phone == JEANNE  # type: ignore[union-attr]
        for table in ("people", "alerts"):
            column = "phone" if table == "people" else "sender"
            model = Person if table == "people" else Alert
            for number, index in session.execute(
                select(getattr(model, column), getattr(model, f"{column}_index"))
            ):
                assert index == B.index(number)
    runtime.stop()

    # and whoever has only A reads nothing: the error names the key that is missing
    with pytest.raises(Exception, match=f"key {B.newest.id}, which is not configured"):
        read_everything(Runtime(make_settings(secret_key=KEY_A)))


def test_a_rotation_that_stops_is_resumed_where_it_stopped(db_url: str) -> None:
    under_a = make_engine(db_url, keyring=A)
    with under_a.begin() as conn:
        conn.execute(
            Person.__table__.insert(),
            [
                {"name": f"p{i}", "phone": f"+24381000010{i}", "role": "focal_point", "status": "approved"}
                for i in range(7)
            ],
        )
    under_a.dispose()
    engine = make_engine(db_url, keyring=BOTH)

    def interrupted(table: str, done: int, total: int) -> None:
        if table == "people" and done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        keys.rotate(engine, batch=2, progress=interrupted)
    assert keys.pending(engine)["people"] == 3  # the batches done are kept
    assert keys.rotate(engine, batch=2) == 3
    assert not any(keys.pending(engine).values())
    engine.dispose()
    with pytest.raises(MissingKey):
        A.decrypt(stored_values(db_url, B)[0])


def test_keys_generate_prints_a_new_key() -> None:
    first, second = run("keys", "generate"), run("keys", "generate")
    assert first.returncode == 0 and len(first.stdout.strip()) == 43
    assert first.stdout != second.stdout
