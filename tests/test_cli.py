"""The command line as an operator meets it: exit codes, stdout, one-line errors (see `run`)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import create_engine, insert, select, update

from app.cli import ProgressBar
from app.cli import main as cli_main
from app.crypto import Keyring
from app.models import Alert, ApiToken, Message, Person
from app.services.intake import message_row, store_batch
from gateways.base import InboundSms
from tests.helpers import engine as helpers_engine
from tests.helpers import recent
from tests.server import KENGELE, TEST_SECRET_KEY

# Commands that start servers or wait for signals run as their own process; the others run in this
# one: the same `main` the `kengele` script calls, its exit code, stdout and stderr, without the
# second of interpreter start and imports each (the suite runs hundreds). `real=True` forces the
# installed script: the first row of the error-wording table and the key file's two processes
# (tests/test_crypto.py) use it, and test_python_dash_m_app runs `python -m app` itself.
OWN_PROCESS = {"serve", "worker"}


def run(
    *args: str,
    db_url: str | None = None,
    cwd: Path | None = None,
    input_text: str | None = None,
    real: bool = False,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KENGELE_", "TWILIO_", "AT_"))}
    environ["KENGELE_SECRET_KEY"] = TEST_SECRET_KEY
    if db_url:
        environ["KENGELE_DATABASE_URL"] = db_url
    environ.update(env)
    if real or (args and args[0] in OWN_PROCESS):
        return subprocess.run(
            [KENGELE, *args],
            capture_output=True,
            text=True,
            env=environ,
            cwd=cwd,
            timeout=120,
            input=input_text,
        )
    return in_process(list(args), environ=environ, cwd=cwd, input_text=input_text)


def in_process(
    argv: list[str], *, environ: dict[str, str], cwd: Path | None, input_text: str | None
) -> subprocess.CompletedProcess[str]:
    """`kengele ARGV` in this process, with its own environment, directory, stdin and root logger."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    stdin = sys.stdin
    os.environ.clear()
    os.environ.update(environ)
    try:
        if cwd is not None:
            os.chdir(cwd)
        sys.stdin = io.StringIO(input_text or "")
        # A fresh process's logging: warnings and worse, the bare message, on stderr (Python's
        # last resort), until a command configures its own.
        last_resort = logging.StreamHandler(err)
        last_resort.setLevel(logging.WARNING)
        root.handlers[:] = [last_resort]
        root.setLevel(logging.WARNING)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main(argv)
            except SystemExit as exc:  # argparse's usage errors and --help
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdin = stdin
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return subprocess.CompletedProcess([KENGELE, *argv], code, out.getvalue(), err.getvalue())


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
    at = recent("2026-11-20T08:10:00+02:00")
    r = run("simulate", "--sender", "0810000002", "--at", at, "RAS", db_url=db_url)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["message"]["reported_at"] == datetime.fromisoformat(at).astimezone(UTC).isoformat()
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
        ({"KENGELE_ENV": "production", "KENGELE_ADMIN_TOKEN": "1"}, "KENGELE_ADMIN_TOKEN is too short"),
        ({"KENGELE_ENV": "production", "AT_API_KEY": "k" * 64}, "AT_API_KEY is one character repeated"),
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
    r = subprocess.run(
        [sys.executable, "-m", "app", "parse", "RAS"], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0 and json.loads(r.stdout)["intent"] == "checkin"


def test_token_list_and_revoke(client: TestClient, db_url: str) -> None:
    tokens = {}
    for role, name in (("officer", "duty post Bunia"), ("viewer", "viewer Goma")):
        r = run("token", "create", "--role", role, "--name", name, db_url=db_url)
        assert r.returncode == 0, r.stderr
        tokens[name] = r.stdout.strip()
    bunia = {"Authorization": f"Bearer {tokens['duty post Bunia']}"}
    assert client.get("/api/v1/messages", headers=bunia).status_code == 200
    listed = run("token", "list", db_url=db_url)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "CREATED", "LAST", "USED", "REVOKED"]
    assert [line.split("  ")[0] for line in lines] == ["duty post Bunia", "viewer Goma"]
    assert "officer" in lines[0] and "viewer" in lines[1]
    assert lines[0].count("UTC") == 2 and lines[1].count("UTC") == 1  # created; last used (Bunia only)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        hashes = conn.execute(select(ApiToken.token_hash)).scalars().all()
    engine.dispose()
    for secret in [*tokens.values(), *hashes]:
        assert secret not in listed.stdout

    revoked = run("token", "revoke", "duty post Bunia", db_url=db_url)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert client.get("/api/v1/messages", headers=bunia).status_code == 401  # at once
    viewer = {"Authorization": f"Bearer {tokens['viewer Goma']}"}
    assert client.get("/api/v1/incidents", headers=viewer).status_code == 200
    assert run("token", "list", db_url=db_url).stdout.splitlines()[1].count("UTC") == 3
    again = run("token", "revoke", "duty post Bunia", db_url=db_url)
    assert again.returncode == 0 and "already" in again.stdout
    unknown = run("token", "revoke", "nobody", db_url=db_url)
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1 and "'nobody'" in unknown.stderr
    taken = run("token", "create", "--role", "admin", "--name", "viewer Goma", db_url=db_url)
    assert taken.returncode == 2 and "'viewer Goma'" in taken.stderr
    # a revoked token's name may be given to a new token
    assert (
        run("token", "create", "--role", "officer", "--name", "duty post Bunia", db_url=db_url).returncode
        == 0
    )


def test_retention_run_and_dry_run(db_url: str) -> None:
    r = run("simulate", "--sender", "+243820000041", "A1 Djugu appelez 0810000041", db_url=db_url)
    assert r.returncode == 0, r.stderr
    engine = helpers_engine(db_url)
    with engine.begin() as conn:
        then = datetime.now(UTC) - timedelta(days=100)
        conn.execute(update(Message).values(created_at=then, status="sent"))
        conn.execute(update(Message).where(Message.direction == "inbound").values(status="received"))
        conn.execute(update(Alert).values(created_at=then))
    dry = run("retention", "run", "--dry-run", db_url=db_url, KENGELE_RETENTION_DAYS="90")
    assert dry.returncode == 0, dry.stderr
    first, heading, *kinds = dry.stdout.splitlines()
    assert "older than 90 days" in first and "dry run" in first and heading == "would remove:"
    counted = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1]) for line in kinds}
    assert counted["inbound texts"] == counted["sender numbers"] == counted["alert senders"] == 1
    assert counted["outbound texts"] == counted["recipient numbers"] == 1  # the reply
    with engine.connect() as conn:
        assert conn.execute(select(Message.sender).where(Message.direction == "inbound")).scalar()
    done = run("retention", "run", db_url=db_url, KENGELE_RETENTION_DAYS="90")
    assert done.returncode == 0 and done.stdout.splitlines()[1] == "removed:"
    assert done.stdout.splitlines()[2:] == dry.stdout.splitlines()[2:]
    with engine.connect() as conn:
        assert conn.execute(
            select(Message.text, Message.sender).where(Message.direction == "inbound")
        ).one() == (
            "",
            None,
        )
    engine.dispose()
    again = run("retention", "run", db_url=db_url)
    assert again.returncode == 0 and all(line.endswith(" 0") for line in again.stdout.splitlines()[2:])


# -- progress of long commands: a line a tenth of the way on stderr without a terminal ----------
def test_progress_without_a_terminal_is_a_line_a_tenth_of_the_way() -> None:
    out = io.StringIO()  # no terminal
    with ProgressBar(Console(file=out)) as bar:
        for done in range(0, 201, 5):
            bar.update("messages", done, 200)
        bar.update("people", 0, 0)  # nothing to do
        bar.update("alerts", 40, 99)  # over before a bar could be read
        bar.update("places", 0, 100)
    assert out.getvalue().splitlines() == [
        *(f"messages: {done}/200 rows" for done in range(0, 201, 20)),
        "places: 0/100 rows",
    ]


def test_progress_on_a_terminal_draws_bars() -> None:
    out = io.StringIO()
    with ProgressBar(Console(file=out, force_terminal=True, width=100)) as bar:
        for done in range(0, 1001, 50):
            bar.update("messages", done, 1000)
        bar.update("people", 0, 150)
        bar.update("people", 160, 150)  # a service may find more than it counted first
    drawn = out.getvalue()
    assert "\x1b[" in drawn  # drawn in place with terminal codes, not written as lines
    assert "messages" in drawn and "1000/1000" in drawn and "150/150" in drawn


def geonames_dump(path: Path, n: int) -> Path:
    lines = [
        f"{300000 + i}\tVillage {i}\tVillage {i}\t\t1.{i:04d}\t30.5\tP\tPPL\tCD\t\t17\t1734\t\t\t0\t\t900"
        "\tAfrica/Lubumbashi\t2016-11-23\n"
        for i in range(n)
    ]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def gazetteer_file(db_url: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    return ["gazetteer", "import", str(geonames_dump(tmp_path / "CD.txt", 150))], {}


def roster_file(db_url: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    path = tmp_path / "roster.csv"
    rows = "".join(f"Officer {i},+24381{2000000 + i},officer\n" for i in range(120))
    path.write_text("name,phone,role\n" + rows, encoding="utf-8")
    return ["roster", "import", str(path)], {}


def old_messages(db_url: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    engine = helpers_engine(db_url)
    now = datetime.now(UTC)
    store_batch(
        engine,
        [
            message_row(
                InboundSms("africastalking", f"m{i}", f"+24382{3000000 + i}", None, "A1", None),
                region="CD",
                now=now,
                claim_token=None,
                lease=timedelta(0),
            )
            for i in range(150)
        ],
    )
    engine.dispose()
    return ["retention", "run", "--dry-run"], {}


def sealed_under_an_old_key(db_url: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    from tests.test_crypto import KEY_A, KEY_B

    engine = helpers_engine(db_url, Keyring([KEY_A]))
    with engine.begin() as conn:
        people = [{"name": f"p{i}", "phone": f"+24381{4000000 + i}", "role": "officer"} for i in range(150)]
        conn.execute(insert(Person), people)
    engine.dispose()
    return ["keys", "rotate"], {"KENGELE_SECRET_KEY": KEY_B, "KENGELE_SECRET_KEYS": KEY_A}


@pytest.mark.parametrize(
    ("given", "steps", "summary"),
    [
        (gazetteer_file, [("places", 150)], "150 places read: 150 added, 0 updated, 0 unchanged"),
        (roster_file, [("checking", 120), ("saving", 120)], "120 rows: 120 created, 0 updated"),
        (old_messages, [("messages", 150)], "retention: rows older than"),
        (sealed_under_an_old_key, [("people", 150)], "150 rows encrypted again"),
    ],
    ids=["gazetteer import", "roster import", "retention run", "keys rotate"],
)
def test_long_commands_show_progress_on_stderr_and_their_summary_on_stdout(
    db_url: str,
    tmp_path: Path,
    given: Callable[[str, Path], tuple[list[str], dict[str, str]]],
    steps: list[tuple[str, int]],
    summary: str,
) -> None:
    args, env = given(db_url, tmp_path)
    r = run(*args, db_url=db_url, **env)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    for label, total in steps:
        mine = [line for line in lines if line.startswith(f"{label}: ")]
        assert mine[0] == f"{label}: 0/{total} rows" and mine[-1] == f"{label}: {total}/{total} rows", lines
        assert len(mine) <= 11  # a line a tenth of the way, not a line a row
    assert len(lines) == sum(len([x for x in lines if x.startswith(f"{label}: ")]) for label, _ in steps)
    assert summary in r.stdout and ": 0/" not in r.stdout


# -- one wording for a file that cannot be read or written, whatever the command ------------------
def test_a_file_that_cannot_be_used_is_worded_alike_by_every_command(db_url: str, tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("name,phone,role\n", encoding="utf-8")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(
        "name,lat,lon\nDjugu,1.9,30.5\nMongbwalu\xe9,1.9,30.5\n".replace(",", "\t").encode("latin-1")
    )
    latin_csv = tmp_path / "latin1.csv"
    latin_csv.write_bytes(
        "name,phone,role\nA,+243810000001,admin\nJos\xe9,+243810000002,admin\n".encode("latin-1")
    )
    missing, folder, under_a_file = tmp_path / "nope.csv", tmp_path, plain / "x.csv"
    table = [
        # command, file, what stderr says after `kengele: FILE: `
        (("gazetteer", "import"), missing, "no such file"),
        (("gazetteer", "import"), folder, "is a directory"),
        (("gazetteer", "import"), under_a_file, "cannot read: not a directory"),
        (("gazetteer", "import"), latin, "row 3, column -: not UTF-8 text (save the file as UTF-8)"),
        (("roster", "import"), missing, "no such file"),
        (("roster", "import"), folder, "is a directory"),
        (("roster", "import"), under_a_file, "cannot read: not a directory"),
        (
            ("roster", "import"),
            latin_csv,
            "row 3, column -: not UTF-8 text (save the file as CSV UTF-8); nothing imported",
        ),
        (("roster", "export"), folder, "is a directory"),
        (("roster", "export"), tmp_path / "no" / "such" / "out.csv", "cannot write: no such directory"),
        (("roster", "export"), under_a_file, "cannot write: not a directory"),
    ]
    for i, (command, path, reason) in enumerate(table):
        r = run(*command, str(path), db_url=db_url, real=i == 0)  # the first as the installed script
        assert (r.returncode, r.stderr) == (2, f"kengele: {path}: {reason}\n"), (command, path, r.stderr)
        assert r.stdout == "" or reason.startswith("row "), (command, path)  # a roster's report
    written = {p.name for p in tmp_path.iterdir() if not p.name.startswith("kengele.db")}
    assert written == {"plain.csv", "latin1.txt", "latin1.csv"}  # no export written half-way, no folder made


def test_simulate_shows_the_forward_and_the_acknowledgement_it_caused(db_url: str) -> None:
    roster = Path(__file__).parent / "corpus" / "roster.csv"
    assert (
        run(
            "gazetteer", "import", str(Path(__file__).parent / "corpus" / "gazetteer.csv"), db_url=db_url
        ).returncode
        == 0
    )
    assert run("roster", "import", str(roster), db_url=db_url).returncode == 0
    alert = json.loads(
        run("simulate", "--sender", "+243810000001", "ALERTE ATTAQUE Djugu", db_url=db_url).stdout
    )
    sent = {(m["purpose"], m["recipient"]) for m in alert["outbound"]}
    assert sent == {("reply", "+243810000001"), ("alert_forward", "+243990000001")}
    code = alert["incident"]["code"]
    ack = json.loads(run("simulate", "--sender", "+243990000001", f"RECU {code}", db_url=db_url).stdout)
    assert ack["outbound"] and {m["purpose"] for m in ack["outbound"]} <= {"reply", "notice"}


# -- KENGELE_GRAMMARS_DIR and `kengele grammar check` ---------------------------------------------
def french(folder: Path, edit: Callable[[str], str], name: str = "fr.toml") -> Path:
    """Write the shipped French grammar, edited, into `folder` (a deployment's grammars)."""
    from keywords.grammar import GRAMMAR_DIR

    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(edit((GRAMMAR_DIR / "fr.toml").read_text(encoding="utf-8")), encoding="utf-8")
    return path


def test_a_deployment_grammar_changes_the_french_reply(db_url: str, tmp_path: Path) -> None:
    french(tmp_path / "grammars", lambda s: s.replace("Alerte recue: ", "Alerte bien arrivee: "))
    grammars = {"KENGELE_GRAMMARS_DIR": str(tmp_path / "grammars")}
    r = run("simulate", "--sender", "+243810000001", "ALERTE ATTAQUE Djugu", db_url=db_url, **grammars)
    assert r.returncode == 0, r.stderr
    (reply,) = json.loads(r.stdout)["outbound"]
    assert reply["text"].startswith("Alerte bien arrivee: K")


def no_grammar(folder: Path) -> None:
    folder.mkdir()


@pytest.mark.parametrize(
    ("write", "folder", "needle"),
    [
        (
            lambda d: french(d, lambda s: s.replace("no_incident = ", "no_incident_x = ")),
            "grammars",
            "KENGELE_GRAMMARS_DIR: {tmp}/grammars/fr.toml: replies.no_incident: missing",
        ),
        (
            lambda d: french(d, lambda s: s.replace('stemmer = "french"', 'stemmer = "klingon"')),
            "grammars",
            "KENGELE_GRAMMARS_DIR: {tmp}/grammars/fr.toml: stemmer: 'klingon' is not a Snowball algorithm",
        ),
        (no_grammar, "nowhere", "KENGELE_GRAMMARS_DIR: {tmp}/nowhere: no such folder"),
        (no_grammar, "grammars", "KENGELE_GRAMMARS_DIR: {tmp}/grammars: holds no grammar file (xx.toml)"),
    ],
)
def test_serve_refuses_a_bad_grammars_dir_in_one_line(
    tmp_path: Path, write: Callable[[Path], object], folder: str, needle: str
) -> None:
    write(tmp_path / "grammars")
    env = {"KENGELE_GRAMMARS_DIR": str(tmp_path / folder)}
    r = run("serve", "--port", "1", db_url=f"sqlite:///{tmp_path}/k.db", **env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle.format(tmp=tmp_path.resolve()) in r.stderr
    assert not (tmp_path / "k.db").exists()


def test_grammar_check(tmp_path: Path) -> None:
    from keywords.grammar import GRAMMAR_DIR, load_grammar

    def words(path: Path) -> tuple[int, int]:
        g = load_grammar(path)
        return sum(map(len, g.categories.values())), sum(map(len, g.commands.values()))

    good = french(tmp_path / "ok", lambda s: s.replace("attack = [", 'attack = ["etumba", '))
    broken = french(
        tmp_path / "broken", lambda s: s.replace("{code} recu. Merci.", "{code} recu par {officer}.")
    )
    long = french(
        tmp_path / "long", lambda s: s.replace('category = "Quelle alerte?"', f'category = "{"Q" * 120}"')
    )
    # Neither the database nor the deployment's (here broken) folder is read: the files are checked alone.
    env = {
        "KENGELE_DATABASE_URL": f"sqlite:///{tmp_path}/never.db",
        "KENGELE_GRAMMARS_DIR": str(tmp_path / "no"),
    }
    (fr_words, fr_commands), (sw_words, sw_commands) = words(good), words(GRAMMAR_DIR / "sw.toml")
    ok_fr = f"{good}: ok (language fr, {fr_words} category words, {fr_commands} commands)"
    r = run("grammar", "check", str(good), str(GRAMMAR_DIR / "sw.toml"), cwd=tmp_path, **env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        ok_fr,
        f"{GRAMMAR_DIR / 'sw.toml'}: ok (language sw, {sw_words} category words, {sw_commands} commands)",
    ]
    r = run(
        "grammar", "check", str(good), str(broken), str(long), str(tmp_path / "xx.toml"), cwd=tmp_path, **env
    )
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        ok_fr,
        f"{broken}: replies.ack: unknown placeholder 'officer'",
        f"{long}: ussd.category: the card's list is cut before code 10",
        f"{tmp_path / 'xx.toml'}: -: no such file",
    ]
    assert not (tmp_path / "never.db").exists()
