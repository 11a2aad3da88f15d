"""Keys, sealed values and blind indexes; the settings that give the keys; the files that hold data."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from app import crypto
from app.config import Settings
from app.crypto import Keyring, MissingKey, NotEncrypted, keyring_for
from app.db import make_engine, upgrade
from app.models import Alert, Message, Person
from tests.server import TEST_SECRET_KEY
from tests.test_cli import run

KEY_A = "key-a-9c2f41d07be85a63e1f0d4c7b29a8e56"
KEY_B = "key-b-31e8a6f09d4c72b5a0e9f18c3d6b47a2"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- sealing and indexing --------------------------------------------------------------------------
def test_a_sealed_value_opens_to_itself_and_shows_nothing_of_it() -> None:
    ring = Keyring([KEY_A])
    token = ring.encrypt("+243810000001")
    assert token.startswith(f"k1:{ring.newest.id}:") and "810000001" not in token
    assert ring.decrypt(token) == "+243810000001"
    assert ring.encrypt("+243810000001") != token  # a fresh nonce each time: equal numbers do not show
    assert ring.decrypt(ring.encrypt("")) == ""
    assert ring.decrypt(ring.encrypt('{"From": ["+243 81 000 0001"], "Body": ["é"]}'))[-5:] == '"é"]}'


def test_older_keys_open_what_they_sealed_and_new_values_use_the_newest() -> None:
    old, both = Keyring([KEY_A]), Keyring([KEY_B, KEY_A])
    sealed_by_a = old.encrypt("+243810000002")
    assert both.decrypt(sealed_by_a) == "+243810000002"
    assert not both.is_current(sealed_by_a) and both.is_current(both.encrypt("x"))
    assert both.encrypt("x").startswith(f"k1:{Keyring([KEY_B]).newest.id}:")
    with pytest.raises(MissingKey, match=f"key {old.newest.id}.*KENGELE_SECRET_KEYS"):
        Keyring([KEY_B]).decrypt(sealed_by_a)


def test_altered_or_clear_values_are_refused() -> None:
    ring = Keyring([KEY_A])
    token = ring.encrypt("+243810000003")
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    with pytest.raises(NotEncrypted, match="altered"):
        ring.decrypt(flipped)
    with pytest.raises(NotEncrypted, match="not encrypted"):
        ring.decrypt("+243810000003")


def test_blind_index_is_keyed_stable_and_one_per_key() -> None:
    a, b, both = Keyring([KEY_A]), Keyring([KEY_B]), Keyring([KEY_B, KEY_A])
    assert a.index("+243810000001") == a.index(" +243810000001 ")
    assert len(a.index("+243810000001")) == 64 and a.index("+243810000001") != a.index("+243810000002")
    assert a.index("+243810000001") != b.index("+243810000001")
    assert both.index("+243810000001") == b.index("+243810000001")
    assert both.indexes("+243810000001") == [b.index("+243810000001"), a.index("+243810000001")]
    assert both.indexes_of(["1", "2"]) == both.indexes("1") + both.indexes("2")


def test_keyring_needs_a_key_and_ignores_repeats() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Keyring([])
    assert len(Keyring([KEY_A, KEY_A, ""]).keys) == 1


def test_encrypted_columns_refuse_comparisons_in_sql() -> None:
    for compare in (
        lambda: Person.phone == "+243810000001",
        lambda: Alert.sender.in_(["+243810000001"]),
        lambda: "+243810000001" == Message.sender,  # noqa: SIM300 (the reflected operator)
        lambda: Message.recipient.like("+243%"),
    ):
        with pytest.raises(TypeError, match="is encrypted: compare its blind index"):
            compare()
    assert str(Message.sender.is_(None)) == "messages.sender IS NULL"


def test_an_engine_without_a_keyring_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn, pytest.raises(Exception, match="no keyring"):
        conn.execute(select(Message.id).where(Message.id == 1)).all()  # fine: nothing encrypted
        conn.execute(Message.__table__.insert(), {"direction": "inbound", "sender": "+1", "status": "x"})
    engine.dispose()


# -- settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ["production", "test"])
def test_production_and_test_refuse_to_start_without_a_key(env: str) -> None:
    with pytest.raises(ValidationError, match="KENGELE_SECRET_KEY is required"):
        settings(env=env, secret_key=" ")
    assert settings(env=env, secret_key=TEST_SECRET_KEY).key_secrets == [TEST_SECRET_KEY]
    assert settings(env=env, secret_keys=f"{KEY_B}, {KEY_A}").key_secrets == [KEY_B, KEY_A]


def test_the_key_comes_first_then_the_older_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENGELE_SECRET_KEY", KEY_B)
    monkeypatch.setenv("KENGELE_SECRET_KEYS", f"{KEY_A},{KEY_B}")
    s = settings()
    assert s.key_secrets == [KEY_B, KEY_A]
    assert keyring_for(s).ids == Keyring([KEY_B, KEY_A]).ids
    assert KEY_A not in repr(s) and KEY_B not in repr(s)


def test_development_makes_a_private_key_file_beside_the_database_and_reuses_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(env="development", database_url=f"sqlite:///{tmp_path}/data/k.db")
    with caplog.at_level(logging.WARNING, logger="kengele.crypto"):
        first = keyring_for(s)
    key_file = tmp_path / "data" / "kengele.key"
    assert mode(key_file) == 0o600 and len(key_file.read_text().strip()) >= 43
    (warning,) = [r for r in caplog.records if r.name == "kengele.crypto"]
    assert str(key_file) in warning.getMessage() and "generated" in warning.getMessage()
    assert TEST_SECRET_KEY not in caplog.text and key_file.read_text().strip() not in caplog.text
    crypto._development_secret.cache_clear()  # as a new process would
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kengele.crypto"):
        again = keyring_for(s)
    assert again.ids == first.ids and "reused" in caplog.text
    assert not list(tmp_path.glob("data/.kengele.key.*"))  # no temporary file left


def test_development_with_postgresql_keeps_the_key_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    keyring_for(settings(env="development", database_url="postgresql+psycopg://x@127.0.0.1/k"))
    assert mode(tmp_path / "kengele.key") == 0o600


def test_a_configured_key_makes_no_file(tmp_path: Path) -> None:
    keyring_for(settings(database_url=f"sqlite:///{tmp_path}/k.db", secret_key=KEY_A))
    assert not (tmp_path / "kengele.key").exists()


# -- the database file -----------------------------------------------------------------------------
def test_the_sqlite_file_and_its_wal_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which would make a file 0644
    try:
        url = f"sqlite:///{tmp_path}/k.db"
        upgrade(url)
        engine = make_engine(url, keyring=Keyring([KEY_A]))
        with engine.begin() as conn:
            conn.execute(
                Person.__table__.insert(),
                {"name": "x", "phone": "+243810000001", "role": "focal_point", "status": "approved"},
            )
            assert (tmp_path / "k.db-wal").exists()
            for name in ("k.db", "k.db-wal", "k.db-shm"):
                assert mode(tmp_path / name) == 0o600, name
        engine.dispose()
    finally:
        os.umask(old)


def test_an_existing_readable_database_file_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "k.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="kengele.db"):
        make_engine(f"sqlite:///{path}").dispose()
    assert str(path) in caplog.text and "chmod 600" in caplog.text


# -- as an operator meets it -----------------------------------------------------------------------
def test_make_run_without_a_key_makes_one_beside_the_database_and_keeps_using_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/kengele.db"
    # Two processes, as `make run` then a command: the second finds the key the first made.
    first = run("db", "upgrade", db_url=url, cwd=tmp_path, real=True, KENGELE_SECRET_KEY="")
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "data" / "kengele.key"
    assert mode(key_file) == 0o600 and f"development key {key_file} (generated now)" in first.stderr
    assert mode(tmp_path / "data" / "kengele.db") == 0o600
    sim = run(
        "simulate",
        "--sender",
        "+243810000001",
        "A1 Djugu",
        db_url=url,
        cwd=tmp_path,
        real=True,
        KENGELE_SECRET_KEY="",
    )
    assert sim.returncode == 0, sim.stderr
    assert "(reused)" in sim.stderr and '"sender": "+243810000001"' in sim.stdout
    engine = make_engine(url, keyring=Keyring([key_file.read_text().strip()]))
    with engine.connect() as conn:
        assert (
            conn.execute(select(Message.sender).where(Message.direction == "inbound")).scalar()
            == "+243810000001"
        )
    engine.dispose()


@pytest.mark.parametrize("command", [("db", "upgrade"), ("serve",), ("keys", "rotate")])
def test_production_refuses_to_start_without_a_key_naming_it(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    r = run(
        *command,
        db_url=f"sqlite:///{tmp_path}/k.db",
        cwd=tmp_path,
        KENGELE_ENV="production",
        KENGELE_SECRET_KEY="",
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "KENGELE_SECRET_KEY is required in production" in r.stderr
    assert not (tmp_path / "k.db").exists() and not (tmp_path / "kengele.key").exists()


def test_a_retention_pseudonym_is_its_own_index_under_every_key() -> None:
    """Retention replaces an old sender by `~letters`; a key rotation must not turn it into a hash."""
    from app.crypto import PSEUDONYM, Keyring

    old, new = (
        Keyring(["a-first-key-0123456789abcdef0123"]),
        Keyring(["b-second-key-0123456789abcdef012", "a-first-key-0123456789abcdef0123"]),
    )
    pseudonym = PSEUDONYM + "qwertyuiopas"
    assert old.index(pseudonym) == new.index(pseudonym) == pseudonym
    assert new.indexes(pseudonym) == [pseudonym]
    assert old.index("+243810000001") != new.index("+243810000001")
    assert len(new.indexes("+243810000001")) == 2
    for given in ("~12345", "~", "~abc", "~qwertyuiopasd"):  # a sender as given, not a pseudonym: hashed
        assert new.index(given) != given


@pytest.mark.parametrize("text", ["", "a", "ab", "abc", "A1 Djugu 20 appelez 0810000003"])
def test_sql_tells_an_empty_sealed_text_without_the_key(text: str) -> None:
    """Retention finds texts still to remove in SQL, where only the sealed value is visible."""
    from sqlalchemy import column, create_engine, literal, select

    from app.crypto import Keyring, sealed_nonempty

    sealed = Keyring(["c-third-key-0123456789abcdef01234"]).encrypt(text)
    with create_engine("sqlite://").connect() as conn:
        nonempty = conn.execute(
            select(sealed_nonempty(column("t"))).select_from(select(literal(sealed).label("t")).subquery())
        ).scalar_one()
    assert bool(nonempty) is (text != "")
