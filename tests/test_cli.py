"""The command line as an operator meets it: real `kengele` processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from app.models import ApiToken, Message
from tests.server import KENGELE, TEST_SECRET_KEY


def run(
    *args: str, db_url: str | None = None, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KENGELE_", "TWILIO_", "AT_"))}
    environ["KENGELE_SECRET_KEY"] = TEST_SECRET_KEY
    if db_url:
        environ["KENGELE_DATABASE_URL"] = db_url
    environ.update(env)
    return subprocess.run([KENGELE, *args], capture_output=True, text=True, env=environ, cwd=cwd, timeout=120)


def test_simulate_shows_stored_message_and_reply(db_url: str) -> None:
    r = run("simulate", "--sender", "+243810000001", "ALERTE ATTAQUE Djugu", db_url=db_url)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["message"]["text"] == "ALERTE ATTAQUE Djugu"
    assert out["message"]["sender"] == "+243810000001"
    assert out["message"]["intent"] == "alert" and out["message"]["processed_at"]
    assert out["alert"]["category"] == "attack"
    assert out["incident"]["code"].startswith("K")
    (reply,) = out["outbound"]
    assert reply["purpose"] == "reply" and reply["recipient"] == "+243810000001"
    assert out["incident"]["code"] in reply["text"]
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert len(conn.execute(select(Message.id)).all()) == 2
    engine.dispose()


def test_simulate_report_time_and_errors(db_url: str) -> None:
    r = run("simulate", "--sender", "0810000002", "--at", "2026-11-20T08:10:00+02:00", "RAS", db_url=db_url)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["message"]["reported_at"].startswith("2026-11-20T06:10:00")
    assert out["message"]["sender"] == "+243810000002" and out["alert"] is None
    bad = run("simulate", "--sender", "+243810000001", "--at", "tomorrow", "x", db_url=db_url)
    assert (
        bad.returncode == 2 and bad.stderr.startswith("kengele: --at") and len(bad.stderr.splitlines()) == 1
    )


def test_parse_prints_json_without_database(tmp_path: Path) -> None:
    r = run(
        "parse", "a3 fataki 2 enfants", cwd=tmp_path, KENGELE_DATABASE_URL=f"sqlite:///{tmp_path}/never.db"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["intent"], out["category"], out["count"]) == ("alert", "abduction", 2)
    assert not (tmp_path / "never.db").exists()
    assert run("parse", "x", "--lang", "xx", cwd=tmp_path).returncode == 2
    kenyan = run("parse", "STOP", "--sender", "+254700000001", cwd=tmp_path)
    assert json.loads(kenyan.stdout)["language"] == "sw"
    bad = run("parse", "STOP", "--sender", "12", cwd=tmp_path)
    assert bad.returncode == 2 and "--sender" in bad.stderr


def test_token_create(db_url: str) -> None:
    r = run("token", "create", "--role", "officer", "--name", "duty post Bunia", db_url=db_url)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("kg_") and len(token) > 30
    engine = create_engine(db_url)
    with engine.connect() as conn:
        (row,) = conn.execute(select(ApiToken.name, ApiToken.role, ApiToken.token_hash)).all()
    engine.dispose()
    assert row.name == "duty post Bunia" and row.role == "officer" and token not in row.token_hash
    bad = run("token", "create", "--role", "god", "--name", "x", db_url=db_url)
    assert bad.returncode == 2 and "--role" in bad.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"KENGELE_GATEWAY": "carrier-pigeon"}, "gateway"),
        ({"KENGELE_DEFAULT_REGION": "XX"}, "default_region"),
        ({"KENGELE_TIMEZONE": "Mars/Olympus"}, "timezone"),
        ({"KENGELE_ENV": "production", "KENGELE_GATEWAY": "twilio"}, "TWILIO_AUTH_TOKEN"),
    ],
)
def test_bad_configuration_is_one_line(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    r = run("db", "upgrade", cwd=tmp_path, KENGELE_DATABASE_URL=f"sqlite:///{tmp_path}/k.db", **env)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_db_upgrade_twice_is_harmless(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    assert run("db", "upgrade", db_url=url).returncode == 0
    assert run("db", "upgrade", db_url=url).returncode == 0


def test_sqlite_refuses_several_workers(tmp_path: Path) -> None:
    r = run("serve", "--workers", "2", db_url=f"sqlite:///{tmp_path}/k.db")
    assert r.returncode == 2 and "PostgreSQL" in r.stderr


def test_python_dash_m_app(tmp_path: Path) -> None:
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "app", "parse", "RAS"], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0 and json.loads(r.stdout)["intent"] == "checkin"
