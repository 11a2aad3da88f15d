"""The `kengele` command line."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import or_, select

from app import logs
from app.config import Settings
from app.phones import scrub

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from app.services.demo import Loaded
    from app.services.roster import Rules

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """Bad input: exit status 2 with a one-line message."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise CliError(f"configuration: {where}: {first['msg']}") from None


def _upgrade(settings: Settings) -> None:
    from app.crypto import keyring_for
    from app.db import upgrade

    upgrade(settings.database_url, keyring=keyring_for(settings))


def _engine(settings: Settings) -> Engine:
    """An engine on the configured database that reads and writes the encrypted columns."""
    from app.crypto import keyring_for
    from app.db import make_engine

    return make_engine(settings.database_url, keyring=keyring_for(settings))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    if settings.is_sqlite and args.workers > 1:
        raise CliError("--workers: SQLite runs in one process; use PostgreSQL for several workers")
    if args.workers < 1:
        raise CliError("--workers: at least 1")
    logs.configure(settings.log_level, settings.log_format)
    if settings.is_sqlite:
        _upgrade(settings)
    os.environ["KENGELE_RUN_DISPATCHER"] = "0" if args.no_dispatcher else "1"
    os.environ["KENGELE_RUN_PROCESSOR"] = "0" if args.no_processor else "1"
    os.environ["KENGELE_RUN_SCHEDULER"] = "0" if args.no_scheduler else "1"
    uvicorn.run(
        "app.main:from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        # The caller's address and scheme from the proxies named only (docs/scaling.md); webhook
        # signatures are checked against KENGELE_PUBLIC_URL whatever these headers say.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        timeout_graceful_shutdown=10,
    )
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from app.services.runtime import Runtime

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    if settings.is_sqlite:
        _upgrade(settings)
    runtime = Runtime(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.start(intake=False, processor=True, dispatcher=True, scheduler=True)
    stop.wait()
    runtime.stop()
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings()
    _upgrade(settings)
    print(f"database at head: {settings.database_url.split('@')[-1]}")
    return EXIT_OK


# -- keys for phone numbers at rest (app/crypto.py, app/services/keys.py) ------------------------
def cmd_keys_generate(args: argparse.Namespace) -> int:
    from app.crypto import generate_secret

    print(generate_secret())
    return EXIT_OK


def cmd_keys_status(args: argparse.Namespace) -> int:
    from app.crypto import keyring_of
    from app.services import keys

    settings = _settings()
    if settings.is_sqlite:
        _upgrade(settings)
    engine = _engine(settings)
    try:
        keyring = keyring_of(engine)
        todo = keys.pending(engine)
    finally:
        engine.dispose()
    print(f"keys configured, newest first: {', '.join(keyring.ids)}")
    for table, rows in todo.items():
        print(f"{table}: {rows} rows not under key {keyring.newest.id}")
    if not any(todo.values()):
        print(f"every row is under key {keyring.newest.id}")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from app.crypto import CryptoError, keyring_of
    from app.services import keys

    if args.batch < 1:
        raise CliError("--batch: at least 1")
    settings = _settings()
    if settings.is_sqlite:
        _upgrade(settings)
    engine = _engine(settings)
    keyring = keyring_of(engine)
    try:
        with ProgressBar() as progress:
            rows = keys.rotate(engine, batch=args.batch, progress=progress.update)
    except CryptoError as exc:
        raise CliError(f"keys rotate: {exc}") from None
    finally:
        engine.dispose()
    if args.vacuum:
        from app.db import compact

        compact(settings.database_url, [s.table.name for s in keys.sealed_tables()])
    older = keyring.ids[1:]
    after = f"; the older keys ({', '.join(older)}) can be removed" if older else ""
    print(f"{rows} rows encrypted again: every row is under key {keyring.newest.id}{after}")
    return EXIT_OK


class ProgressBar:
    """How far a long command has got, on stderr: a bar on a terminal, a line a tenth of the way elsewhere.

    `update` is the `progress` callback the services take (app/services/progress.py): one bar per
    table or step they name. A step of fewer than SHOW_FROM units is over before anyone could read
    a bar, and shows nothing. The command's summary goes to stdout once the display is closed.
    """

    SHOW_FROM = 100

    def __init__(self, console: Console | None = None, *, unit: str = "rows") -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self.unit = unit
        self._bars: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._shown: tuple[str, int] | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, label: str, done: int, total: int) -> None:
        if total < self.SHOW_FROM:
            return
        if not self.console.is_terminal:
            tenth = 10 * done // total
            if self._shown != (label, tenth):
                self._shown = (label, tenth)
                self.console.file.write(f"{label}: {done}/{total} {self.unit}\n")
                self.console.file.flush()
            return
        if self._bars is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bars = Progress(
                TextColumn("{task.description:<16}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bars.start()
        if label not in self._tasks:
            self._tasks[label] = self._bars.add_task(label, total=total)
        self._bars.update(self._tasks[label], completed=min(done, total), total=total)

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


def cmd_parse(args: argparse.Namespace) -> int:
    from app.phones import country, normalize
    from keywords.parser import SenderContext, lexicon, parse

    settings = _settings()
    lex = lexicon(settings.default_language, extra=settings.grammars_dir)
    if args.lang and args.lang not in lex.grammars:
        raise CliError(f"--lang: no grammar for {args.lang!r}")
    language = args.lang
    if language is None and args.sender:
        phone = normalize(args.sender, settings.default_region)
        if not phone.valid:
            raise CliError(f"--sender: {args.sender!r} is not a valid phone number")
        language = lex.language_of_country(country(phone.value))
    result = parse(args.text, SenderContext(language=language), lex=lex)
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    return EXIT_OK


def cmd_grammar_check(args: argparse.Namespace) -> int:
    """Check grammar files before they are deployed: each beside the shipped ones, as the service would."""
    from app.services.ussd_menu import long_screens
    from keywords.checks import long_replies
    from keywords.grammar import GRAMMAR_DIR, GrammarError, load_all, load_grammar
    from keywords.parser import Lexicon

    shipped, codes = load_all(GRAMMAR_DIR)
    failed = False
    for name in args.files:
        if not Path(name).is_file():
            print(f"{name}: -: {'is a directory' if Path(name).is_dir() else 'no such file'}")
            failed = True
            continue
        try:
            grammar = load_grammar(Path(name))
            lex = Lexicon(shipped | {grammar.language: grammar}, codes, grammar.language)
        except GrammarError as exc:
            print(f"{name}: {exc.key}: {exc.reason}")
            failed = True
            continue
        problems = long_replies(grammar) + long_screens(grammar.language, lex)
        for key, reason in problems:
            print(f"{name}: {key}: {reason}")
        failed = failed or bool(problems)
        if not problems:
            words = sum(len(phrases) for phrases in grammar.categories.values())
            commands = sum(len(phrases) for phrases in grammar.commands.values())
            print(f"{name}: ok (language {grammar.language}, {words} category words, {commands} commands)")
    return EXIT_FAIL if failed else EXIT_OK


def _row(obj: Any, *fields: str) -> dict[str, Any]:
    out = {}
    for name in fields:
        value = getattr(obj, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    from app.enums import Direction
    from app.models import Alert, Incident, Message
    from app.phones import normalize
    from app.services.runtime import Runtime
    from gateways.base import InboundSms

    settings = _settings()
    logs.configure("WARNING", settings.log_format)
    at = None
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise CliError(f"--at: {args.at!r} is not ISO 8601") from None
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if not normalize(args.sender, settings.default_region).valid:
        print(f"warning: --sender {args.sender!r} is not a valid number; stored as given", file=sys.stderr)
    if settings.is_sqlite:
        _upgrade(settings)
    runtime = Runtime(settings)
    sms = InboundSms(
        provider="simulate",
        provider_message_id=f"sim-{uuid.uuid4().hex}",
        sender=args.sender,
        recipient=None,
        text=args.text,
        reported_at=at,
        raw={"from": [args.sender], "text": [args.text]},
    )
    stored = runtime.writer.store_now(sms)
    assert stored.message_id is not None
    runtime.processor.process([stored.message_id])
    with runtime.factory() as session:
        message = session.get(Message, stored.message_id)
        alert = session.scalar(select(Alert).where(Alert.message_id == stored.message_id))
        incident = session.get(Incident, alert.incident_id) if alert and alert.incident_id else None
        # Its reply, and what it made officers get: a forward, an acknowledgement's notices.
        touched = {i for i in (alert.incident_id if alert else None, message and message.incident_id) if i}
        outbound = session.scalars(
            select(Message)
            .where(
                Message.id > stored.message_id,
                Message.direction == Direction.OUTBOUND,
                or_(Message.in_reply_to == stored.message_id, Message.incident_id.in_(touched)),
            )
            .order_by(Message.id)
        ).all()
        message_fields = (
            "id",
            "provider",
            "sender",
            "phone_valid",
            "text",
            "status",
            "intent",
            "outcome",
            "language",
            "reported_at",
            "processed_at",
            "error",
        )
        out = {
            "message": _row(message, *message_fields) | {"parse": message.parse} if message else None,
            "alert": _row(
                alert,
                "id",
                "incident_id",
                "category",
                "severity",
                "place_name",
                "lat",
                "lon",
                "precision",
                "language",
                "reported_at",
            )
            | {"details": alert.details}
            if alert
            else None,
            "incident": _row(
                incident,
                "id",
                "code",
                "category",
                "severity",
                "status",
                "place_name",
                "report_count",
                "reporter_count",
            )
            if incident
            else None,
            "outbound": [
                _row(m, "id", "recipient", "purpose", "status", "text", "language", "idempotency_key")
                for m in outbound
            ],
        }
    runtime.engine.dispose()
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return EXIT_OK


# -- files named on the command line: one wording for what is wrong with them ---------------------
def file_error(path: str, exc: OSError, *, writing: bool = False) -> CliError:
    """`FILE: no such file`, `FILE: is a directory`, `FILE: cannot read: <reason>` (or write)."""
    if isinstance(exc, IsADirectoryError):
        return CliError(f"{path}: is a directory")
    if isinstance(exc, FileNotFoundError):
        return CliError(f"{path}: cannot write: no such directory" if writing else f"{path}: no such file")
    reason = exc.strerror or str(exc)
    return CliError(f"{path}: cannot {'write' if writing else 'read'}: {reason[:1].lower()}{reason[1:]}")


def readable(path: str) -> Path:
    """The path of a file the command is about to read, or the CliError that says why it cannot."""
    try:
        with open(path, "rb"):
            return Path(path)
    except OSError as exc:
        raise file_error(path, exc) from None


def writable(path: str) -> Path:
    """The path of a file the command will write, checked before any work is done for it."""
    target = Path(path)
    if target.is_dir():
        raise CliError(f"{path}: is a directory")
    if not target.parent.exists():
        raise CliError(f"{path}: cannot write: no such directory")
    if not target.parent.is_dir():
        raise CliError(f"{path}: cannot write: not a directory")
    return target


def not_utf8(path: Path) -> CliError:
    """The row (line) of the first byte of a file that is not UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start) + 1
        return CliError(f"{path}: row {row}, column -: not UTF-8 text (save the file as UTF-8)")
    return CliError(f"{path}: cannot read: not UTF-8 text")


def cmd_gazetteer_import(args: argparse.Namespace) -> int:
    from app.db import make_engine
    from app.services import areas, gazetteer

    settings = _settings()
    country = args.country.upper() if args.country else None
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise CliError(f"--country: {args.country!r} is not an ISO alpha-2 code")
    if (args.file is None) == (not args.builtin):
        raise CliError("give FILE or --builtin (GeoNames' places of 1,000 people or more)")
    path = readable(args.file) if args.file is not None else None  # before any database work
    if settings.is_sqlite:
        _upgrade(settings)
    engine = make_engine(settings.database_url)
    try:
        if args.if_empty and gazetteer.count(engine):
            print("the gazetteer has places already: nothing loaded")
            return EXIT_OK
        with engine.connect() as conn:
            book = gazetteer.area_book(conn)
        try:
            if path is None:  # --builtin
                rows = gazetteer.read_builtin(country or settings.default_region, areas=book)
            elif areas.is_admin_file(path):
                found = areas.read_admin_file(path)
                result = gazetteer.store_areas(engine, [a for a in found if country in (None, a.country)])
                print(
                    f"{result.added + result.updated + result.unchanged} areas read: {result.added} added, "
                    f"{result.updated} updated, {result.unchanged} unchanged; "
                    f"{result.places_renamed} places named again"
                )
                return EXIT_OK
            else:
                rows = gazetteer.read_file(path, country, areas=book)
        except (gazetteer.GazetteerError, areas.AreaFileError) as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise file_error(args.file, exc) from None
        except UnicodeDecodeError:
            raise not_utf8(Path(args.file)) from None
        with ProgressBar() as progress:
            stored = gazetteer.store(engine, rows, progress=progress.update)
    finally:
        engine.dispose()
    repeated = f"; {stored.repeated} repeated ids (the last row of each kept)" if stored.repeated else ""
    print(
        f"{len(rows)} places read: {stored.added} added, {stored.updated} updated, "
        f"{stored.unchanged} unchanged{repeated}"
    )
    return EXIT_OK


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return "unknown"


def _roster_rules(settings: Settings, session: Session) -> Rules:
    from app.services.geotag import PlaceIndex
    from app.services.roster import Rules
    from keywords.parser import lexicon

    languages = frozenset(lexicon(settings.default_language, extra=settings.grammars_dir).grammars)
    return Rules(region=settings.default_region, languages=languages, places=PlaceIndex.load(session))


def cmd_roster_import(args: argparse.Namespace) -> int:
    from app.db import make_sessionmaker
    from app.services import roster

    settings = _settings()
    try:
        data = readable(args.file).read_bytes()
    except OSError as exc:
        raise file_error(args.file, exc) from None
    if settings.is_sqlite:
        _upgrade(settings)
    engine = _engine(settings)
    try:
        with ProgressBar() as progress:
            report = roster.import_csv(
                make_sessionmaker(engine),
                data,
                rules=lambda session: _roster_rules(settings, session),
                actor=f"cli:{_user()}",
                skip_bad=args.skip_bad,
                progress=progress.update,
            )
    finally:
        engine.dispose()
    lines = [(r.row, f"row {r.row}: {r.outcome}") for r in report.results]
    lines += [(e.row, str(e)) for e in report.errors]
    for _, line in sorted(lines, key=lambda item: item[0]):
        print(line)
    print(
        f"{report.rows} rows: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.invalid} invalid"
        + ("" if report.applied else "; nothing imported")
    )
    if not report.errors:
        return EXIT_OK  # every row imported (or a header with no rows: nothing to import)
    first = report.errors[0]
    if not report.applied:
        more = f" (and {len(report.errors) - 1} more errors)" if len(report.errors) > 1 else ""
        if report.unreadable:  # the header, the encoding: no row can be read
            hint = ""
        elif args.skip_bad:
            hint = ": no good row"
        else:
            hint = "; --skip-bad imports the good rows"
        raise CliError(f"{args.file}: {first}{more}; nothing imported{hint}")
    # --skip-bad imported the good rows: say on stderr that the others were not, and exit 1.
    others = f", and {report.invalid - 1} more rows" if report.invalid > 1 else ""
    print(
        scrub(
            f"kengele: {args.file}: {report.invalid} of {report.rows} rows skipped ({first}{others}); "
            f"the other {report.rows - report.invalid} imported"
        ),
        file=sys.stderr,
    )
    return EXIT_FAIL


def cmd_roster_export(args: argparse.Namespace) -> int:
    from app.db import make_sessionmaker, transaction
    from app.services import roster

    target = writable(args.file) if args.file is not None else None
    settings = _settings()
    if settings.is_sqlite:
        _upgrade(settings)
    engine = _engine(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            text = roster.export_csv(session, _roster_rules(settings, session).places)
    finally:
        engine.dispose()
    if target is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        target.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise file_error(args.file, exc, writing=True) from None
    print(f"{text.count(chr(10)) - 1} people written to {args.file}")
    return EXIT_OK


def _database(settings: Settings) -> Engine:
    """The engine of a command that reads or writes the database (migrated first on SQLite)."""
    if settings.is_sqlite:
        _upgrade(settings)
    return _engine(settings)


def cmd_token_create(args: argparse.Namespace) -> int:
    from app.auth import ROLES, TokenError, create_token
    from app.db import make_sessionmaker, transaction
    from app.enums import ApiRole

    if args.role not in ROLES:
        raise CliError(f"--role: {args.role!r} is not one of {', '.join(ROLES)}")
    if not args.name.strip():
        raise CliError("--name: empty")
    engine = _database(_settings())
    try:
        with transaction(make_sessionmaker(engine)) as session:
            token = create_token(
                session=session, name=args.name.strip(), role=ApiRole(args.role), actor=f"cli:{_user()}"
            )
    except TokenError as exc:
        raise CliError(f"--name: {exc}") from None
    finally:
        engine.dispose()
    print(token)
    return EXIT_OK


def _read_password() -> str:
    """The new user's password: prompted twice on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise CliError("password: the two entries differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise CliError("password: none given (type it at the prompt, or pipe it on stdin)")
    return line.rstrip("\r\n")


def cmd_user_create(args: argparse.Namespace) -> int:
    from app.auth import ROLES
    from app.db import make_sessionmaker, transaction
    from app.enums import ApiRole
    from app.services.accounts import AccountError, create_user

    if args.role not in ROLES:
        raise CliError(f"--role: {args.role!r} is not one of {', '.join(ROLES)}")
    password = _read_password()
    engine = _database(_settings())
    try:
        with transaction(make_sessionmaker(engine)) as session:
            user = create_user(
                session=session,
                name=args.name,
                role=ApiRole(args.role),
                password=password,
                language=args.language,
                actor=f"cli:{_user()}",
            )
            name = user.name
    except AccountError as exc:
        field, _, why = str(exc).partition(": ")
        raise CliError(f"--{field}: {why}" if why and field != "password" else str(exc)) from None
    finally:
        engine.dispose()
    print(f"user {name!r} created ({args.role}); sign in at /login")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace) -> int:
    from app.db import make_sessionmaker, transaction
    from app.services.accounts import list_users

    engine = _database(_settings())
    try:
        with transaction(make_sessionmaker(engine)) as session:
            rows = [
                (
                    u.name,
                    u.role,
                    u.language,
                    _when(u.created_at),
                    _when(u.last_login_at),
                    "active" if u.active else f"disabled {_when(u.disabled_at)}",
                )
                for u in list_users(session=session)
            ]
    finally:
        engine.dispose()
    if not rows:
        print("no users")
        return EXIT_OK
    _print_table(("NAME", "ROLE", "LANGUAGE", "CREATED", "LAST SIGN-IN", "STATUS"), rows)
    return EXIT_OK


def cmd_user_disable(args: argparse.Namespace) -> int:
    from app.db import make_sessionmaker, transaction
    from app.services.accounts import AccountError, disable_user

    engine = _database(_settings())
    try:
        with transaction(make_sessionmaker(engine)) as session:
            changed = disable_user(session=session, name=args.name, actor=f"cli:{_user()}")
    except AccountError as exc:
        raise CliError(f"user disable: {exc}") from None
    finally:
        engine.dispose()
    print(
        f"disabled {args.name!r}: signed out everywhere" if changed else f"{args.name!r} was disabled already"
    )
    return EXIT_OK


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Print rows under a header in columns two spaces apart (the list commands' output)."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


def cmd_token_list(args: argparse.Namespace) -> int:
    from app.auth import list_tokens
    from app.db import make_sessionmaker, transaction

    engine = _database(_settings())
    try:
        with transaction(make_sessionmaker(engine)) as session:
            rows = [
                (t.name, t.role, _when(t.created_at), _when(t.last_used_at), _when(t.revoked_at))
                for t in list_tokens(session=session)
            ]
    finally:
        engine.dispose()
    if not rows:
        print("no API tokens")
        return EXIT_OK
    _print_table(("NAME", "ROLE", "CREATED", "LAST USED", "REVOKED"), rows)
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from app.auth import TokenError, revoke_token
    from app.db import make_sessionmaker, transaction

    engine = _database(_settings())
    try:
        with transaction(make_sessionmaker(engine)) as session:
            revoked = revoke_token(session=session, name=args.name, actor=f"cli:{_user()}")
    except TokenError as exc:
        raise CliError(f"token revoke: {exc}") from None
    finally:
        engine.dispose()
    if revoked:
        print(f"revoked {args.name!r}: it is refused from now on")
    else:
        print(f"{args.name!r} was revoked already")
    return EXIT_OK


def cmd_retention_run(args: argparse.Namespace) -> int:
    from app.db import make_sessionmaker
    from app.services.retention import run_retention

    settings = _settings()
    logs.configure("WARNING", settings.log_format)
    engine = _database(settings)
    try:
        with ProgressBar() as progress:
            report = run_retention(
                factory=make_sessionmaker(engine),
                days=settings.retention_days,
                actor=f"cli:{_user()}",
                dry_run=args.dry_run,
                progress=progress.update,
            )
    finally:
        engine.dispose()
    print(
        f"retention: rows older than {report.days} days (before {_when(report.before)})"
        + ("; dry run, nothing changed" if report.dry_run else "")
    )
    print("would remove:" if report.dry_run else "removed:")
    width = max(len(kind) for kind in report.counts)
    for kind, n in report.counts.items():
        print(f"  {kind.ljust(width)}  {n}")
    return EXIT_OK


def _program() -> str:
    """The command as the user typed it (`.venv/bin/kengele` under `make run`), for lines they paste."""
    typed = Path(sys.argv[0]) if sys.argv and Path(sys.argv[0]).name == "kengele" else None
    if typed is None:
        return "kengele"
    if not typed.is_absolute():
        return str(typed)
    if typed.is_relative_to(Path.cwd()):
        return str(typed.relative_to(Path.cwd()))
    on_path = shutil.which("kengele")
    return "kengele" if on_path and Path(on_path).resolve() == typed.resolve() else str(typed)


def cmd_demo_load(args: argparse.Namespace) -> int:
    from app.services import demo
    from app.services.runtime import Runtime

    settings = _settings()
    refused = demo.refusal(settings)
    if refused and args.if_empty:  # `make run` and the image: the server starts, with no demo
        print(f"demo not loaded: {refused}")
        return EXIT_OK
    if refused:
        raise CliError(f"demo load: {refused}")
    logs.configure("WARNING", settings.log_format)
    engine = _database(settings)
    try:
        people = demo.people_count(engine)
    finally:
        engine.dispose()
    if args.if_empty and people:
        print(f"the roster has {people} people already: demo not loaded")
        return EXIT_OK
    runtime = Runtime(settings)
    try:
        loaded = demo.load(
            engine=runtime.engine,
            factory=runtime.factory,
            rules=lambda session: _roster_rules(settings, session),
            checkins=runtime.checkins,
            actor=f"cli:{_user()}",
        )
    except demo.DemoError as exc:
        print(scrub(f"kengele: {exc}"), file=sys.stderr)
        return EXIT_FAIL
    finally:
        runtime.engine.dispose()
    _print_demo(loaded, settings)
    return EXIT_OK


def _print_demo(loaded: Loaded, settings: Settings) -> None:
    from app.services import demo

    people = loaded.people
    print(
        f"Demo network loaded: {loaded.places} places of Ituri and Nord-Kivu ({loaded.places_added} new), "
        f"{people.rows} people ({people.created} new): officers of levels 1 and 2, and focal points."
    )
    print(
        "Their numbers are invented (+243 81 000 1xxx, +243 81 000 9xxx) and marked as the demo's: "
        "the console gateway texts no one, and no gateway that does is ever given their SMS."
    )
    url = settings.public_url
    if loaded.token is None:
        print(
            f"\nThe API token {demo.TOKEN_NAME!r} exists already (it was shown once, when it was made); "
            f"`{_program()} token revoke {demo.TOKEN_NAME}` and load again for a new one."
        )
    else:
        print("\nAn admin API token, shown this once (only its hash is kept):")
        print(f"  {loaded.token}")
        print(f'  curl -H "Authorization: Bearer {loaded.token}" {url}/api/v1/incidents')
        print(f"  {url}/docs  (Authorize with the token)")
    if loaded.password is not None:
        print(
            f"\nThe dashboard: {url}/  sign in as {demo.USER_NAME!r} "
            f"with {loaded.password}  (shown this once)"
        )
    else:
        print(
            f"\nThe dashboard: {url}/  (the user {demo.USER_NAME!r} exists already; "
            f"`{_program()} user create --role admin --name NAME` for another)"
        )
    if loaded.checkins:
        print(
            f"\nCheck-ins: a first round of {loaded.checkins} SMS is queued; the server sends it on starting."
            f"\nThen rounds follow KENGELE_CHECKIN_SCHEDULE ({settings.checkin_schedule!r} in "
            f"{settings.timezone}); for one every 5 minutes: KENGELE_CHECKIN_SCHEDULE='*/5 * * * *' make run"
        )
    print(
        "\nTry it from another terminal while the server runs (it prints each SMS as a 'console SMS' line):"
    )
    for step in (demo.ALERT, demo.ACK, demo.CHECKIN):
        text = step.text.format(code=loaded.next_code)
        print(f'  {_program()} simulate --sender {step.sender} "{text}"')
        print(f"      {step.shows.format(code=loaded.next_code)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kengele", description="SMS/USSD gateway for community alert networks"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate (SQLite) and serve the API, webhooks and background work")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-scheduler", action="store_true")
    serve.add_argument("--no-dispatcher", action="store_true")
    serve.add_argument(
        "--no-processor",
        action="store_true",
        help="only store inbound messages; a `kengele worker` processes them",
    )
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="scheduler, processor sweep and outbox dispatcher only")
    worker.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="the keys phone numbers are encrypted under (KENGELE_SECRET_KEY[S])")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("generate", help="print a new secret key").set_defaults(func=cmd_keys_generate)
    keys_sub.add_parser("status", help="rows not yet under the newest key").set_defaults(func=cmd_keys_status)
    rotate = keys_sub.add_parser(
        "rotate", help="encrypt every row again under the newest key (resumable, in batches)"
    )
    rotate.add_argument("--batch", type=int, default=500, help="rows per transaction")
    rotate.add_argument(
        "--vacuum",
        action="store_true",
        help="then rewrite the tables so no copy under an old key remains (locks them while it runs)",
    )
    rotate.set_defaults(func=cmd_keys_rotate)

    parse = sub.add_parser("parse", help="print the parse of TEXT as JSON; touches no database")
    parse.add_argument("text")
    parse.add_argument("--lang")
    parse.add_argument("--sender")
    parse.set_defaults(func=cmd_parse)

    grammar = sub.add_parser("grammar", help="keyword grammar files (xx.toml)")
    grammar_sub = grammar.add_subparsers(dest="grammar_command", required=True)
    check = grammar_sub.add_parser(
        "check", help="load each file beside the shipped grammars; replies and USSD screens must fit"
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=cmd_grammar_check)

    sim = sub.add_parser("simulate", help="run one inbound SMS through the whole pipeline")
    sim.add_argument("--sender", required=True)
    sim.add_argument("--at", help="report time, ISO 8601")
    sim.add_argument("text")
    sim.set_defaults(func=cmd_simulate)

    gaz = sub.add_parser("gazetteer", help="places")
    gaz_sub = gaz.add_subparsers(dest="gazetteer_command", required=True)
    gaz_import = gaz_sub.add_parser(
        "import",
        help="load places (CSV, GeoNames dump .txt) or area names (admin1CodesASCII.txt, admin2Codes.txt)",
    )
    gaz_import.add_argument("file", nargs="?")
    gaz_import.add_argument("--country", help="keep only this country (ISO alpha-2)")
    gaz_import.add_argument("--builtin", action="store_true", help="GeoNames data shipped with Kengele")
    gaz_import.add_argument("--if-empty", action="store_true", help="only when no place is loaded yet")
    gaz_import.set_defaults(func=cmd_gazetteer_import)

    people = sub.add_parser("roster", help="people: focal points, officers, admins")
    people_sub = people.add_subparsers(dest="roster_command", required=True)
    roster_import = people_sub.add_parser(
        "import", help="load people from CSV; a file with a bad row changes nothing unless --skip-bad"
    )
    roster_import.add_argument("file")
    roster_import.add_argument("--skip-bad", action="store_true", help="import the good rows of the file")
    roster_import.set_defaults(func=cmd_roster_import)
    roster_export = people_sub.add_parser("export", help="write the roster as CSV (stdout without FILE)")
    roster_export.add_argument("file", nargs="?")
    roster_export.set_defaults(func=cmd_roster_export)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new API token")
    create.add_argument("--role", required=True)
    create.add_argument("--name", required=True)
    create.set_defaults(func=cmd_token_create)
    token_sub.add_parser(
        "list", help="every token: name, role, created, last used, revoked (never the token)"
    ).set_defaults(func=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="refuse the token of this name from now on")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_token_revoke)

    user = sub.add_parser("user", help="dashboard accounts")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    user_create = user_sub.add_parser(
        "create", help="a new dashboard user; the password is read from stdin (prompted on a terminal)"
    )
    user_create.add_argument("--role", required=True)
    user_create.add_argument("--name", required=True)
    user_create.add_argument("--language", default="en", help="en, fr or sw (the dashboard's language)")
    user_create.set_defaults(func=cmd_user_create)
    user_sub.add_parser("list", help="every user: name, role, last sign-in, status").set_defaults(
        func=cmd_user_list
    )
    user_disable = user_sub.add_parser("disable", help="refuse the user's sign-ins; end their sessions")
    user_disable.add_argument("name")
    user_disable.set_defaults(func=cmd_user_disable)

    retention = sub.add_parser("retention", help="removing old texts and numbers")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    retention_run = retention_sub.add_parser(
        "run", help="remove texts and unregistered numbers older than KENGELE_RETENTION_DAYS; print counts"
    )
    retention_run.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    retention_run.set_defaults(func=cmd_retention_run)

    demo = sub.add_parser("demo", help="the demo network (development only; its numbers are invented)")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    demo_load = demo_sub.add_parser(
        "load", help="load the demo places and people, an admin token and a first check-in round"
    )
    demo_load.add_argument("--if-empty", action="store_true", help="only when the roster has nobody yet")
    demo_load.set_defaults(func=cmd_demo_load)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(scrub(f"kengele: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAIL
    except Exception as exc:
        print(scrub(f"kengele: {type(exc).__name__}: {exc}").splitlines()[0], file=sys.stderr)
        return EXIT_FAIL
