"""Retention: after KENGELE_RETENTION_DAYS, what people wrote and who wrote it go; what it established stays.

A row older than the window (by arrival) loses:

- an inbound message: its text, the provider's raw form, the words its parse kept, and the
  sender's number unless that number is on the roster;
- an outbound message (sent, delivered or failed): its text, and the recipient's number unless
  it is on the roster (a reply to an unregistered sender);
- an alert: its text, the place as written and the free words of its details; its sender's
  number unless on the roster, once that sender has no report of the same incident inside the
  window, replaced by a pseudonym (`~` and letters) that is the same for one sender within one
  incident, so that counting the reporters of an incident again (a merge, a move) counts the
  same people;
- a delivery receipt: the provider's raw form;
- a USSD session: the whole row (the caller's number and what they typed);
- an outbound webhook delivery, once delivered: the whole row (undelivered ones stay, retried).

Numbers written into place names of alerts and incidents are masked. Kept: incidents (category,
place, counts, times, decisions), alerts' category, severity, place, coordinates, precision,
language, count and times, the audit log and the roster.

Every table is walked in windows of primary keys, one short transaction each: a big database is
never locked for long (SQLite has one writer) and a run stopped half-way is simply run again.
A run is audit-logged once, with its counts. `RetentionJob` runs it once a day.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import (
    ColumnElement,
    Engine,
    Row,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, sessionmaker

from app.crypto import PSEUDONYM, sealed_nonempty
from app.db import transaction, utcnow
from app.enums import AuditAction, AuditEntity, DeliveryState, Direction, MessageStatus
from app.models import (
    Alert,
    AuditLog,
    DeliveryEvent,
    Incident,
    Message,
    Person,
    UssdSession,
    WebhookDelivery,
)
from app.phones import scrub
from app.services.progress import Progress
from app.services.worker import Pass, Signals, Worker

log = logging.getLogger("kengele.retention")

WINDOW = 1000  # primary keys per transaction
RETENTION_LOCK = 0x4B454E52  # "KENR": the advisory lock of a run (PostgreSQL)
RUN_EVERY = timedelta(hours=23)  # a run is due this long after the last one (checked hourly)

# What a run counts, in the order it prints them.
KINDS = (
    "inbound texts",
    "raw forms",
    "sender numbers",
    "outbound texts",
    "recipient numbers",
    "alert texts",
    "alert senders",
    "place names",
    "delivery receipts",
    "ussd sessions",
    "webhook deliveries",
)

# An outbound row in one of these states is history; an older one still queued is left to the outbox.
FINAL = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.FAILED)
# The keys of a parse (keywords.parser.ParseResult) and of an alert's details that hold words as written.
WRITTEN_PARSE = ("place_words", "details", "corrections")
WRITTEN_DETAILS = ("words", "corrections", "place", "readings", "offset")


# -- the numbers ---------------------------------------------------------------------------------
# Each column that holds a phone number, with the columns derived from it that go with it (a
# blind index of an encrypted number belongs here: clearing the number clears it too).
NUMBER_COLUMNS: dict[str, tuple[str, ...]] = {
    "messages.sender": ("sender",),
    "messages.recipient": ("recipient", "recipient_index"),
    "alerts.sender": ("sender", "sender_index"),
}


def cleared_number(table: str, column: str, replacement: str | None = None) -> dict[str, Any]:
    """The values that remove a number from a row: the column and every column derived from it.

    A pseudonym is its own blind index: no number hashes to `~...`, so it joins no real sender's
    reports, and it marks the row as done for the next run.
    """
    return {name: replacement for name in NUMBER_COLUMNS[f"{table}.{column}"]}


def roster_numbers(session: Session) -> frozenset[str]:
    """The numbers on the roster (kept where their owners wrote or were sent): decrypted, once a run."""
    return frozenset(session.scalars(select(Person.phone)))


# -- one run -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Report:
    """What a run removed (or, dry, would remove): rows per kind."""

    days: int
    before: datetime
    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    complete: bool = False  # False: stopped half-way (not audit-logged; the next run does the rest)

    def add(self, kinds: list[str]) -> None:
        for kind in kinds:
            self.counts[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True


def run_retention(
    *,
    factory: sessionmaker[Session],
    days: int,
    actor: str,
    dry_run: bool = False,
    now: datetime | None = None,
    window: int = WINDOW,
    pause: Callable[[float], bool] = _sleep,
    progress: Progress | None = None,
) -> Report:
    """Remove from rows older than `days` what retention removes; audit-log the counts (unless dry).

    Between two transactions the run pauses as long as the last one took (`pause` returns False
    to stop the run there): on SQLite the webhooks' commits wait for no more than one window.
    `progress` hears of each table's rows looked at.
    """
    now = now or utcnow()
    report = Report(days=days, before=now - timedelta(days=days), dry_run=dry_run)
    # The key of this run's pseudonyms: kept nowhere, so a pseudonym leads back to no number.
    key = secrets.token_bytes(32)
    with factory() as session:
        roster = roster_numbers(session)
    sweeps: list[Sweep] = [
        _messages_sweep(report.before, roster),
        _alerts_sweep(report.before, key, roster),
        _incidents_sweep(report.before),
        _receipts_sweep(report.before),
    ]
    for sweep in sweeps:
        if not _walk(factory, sweep, report, window, pause, progress):
            return report
    # A change delivered to a webhook receiver is the receiver's to keep; undelivered ones stay.
    delivered = and_(
        WebhookDelivery.state == DeliveryState.DELIVERED, WebhookDelivery.delivered_at < report.before
    )
    deletions = (
        ("ussd sessions", UssdSession, UssdSession.session_id, UssdSession.updated_at < report.before),
        ("webhook deliveries", WebhookDelivery, WebhookDelivery.id, delivered),
    )
    for label, model, key_column, old in deletions:
        if not _delete_old(factory, report, label, model, key_column, old, window, pause, progress):
            return report
    report.complete = True
    if not dry_run:
        with transaction(factory) as session:
            session.add(
                AuditLog(
                    actor=actor,
                    action=AuditAction.RETENTION,
                    entity=AuditEntity.DATABASE,
                    details={"days": days, "before": report.before.isoformat(), "removed": report.counts},
                    at=utcnow(),
                )
            )
    log.info(
        "retention dry run" if dry_run else "retention run",
        extra={"days": days, "before": report.before.isoformat(), **_log_counts(report)},
    )
    return report


def last_run(factory: sessionmaker[Session]) -> datetime | None:
    """When the last retention run finished, if one did."""
    with factory() as session:
        return session.scalar(
            select(AuditLog.at)
            .where(AuditLog.entity == AuditEntity.DATABASE, AuditLog.action == AuditAction.RETENTION)
            .order_by(AuditLog.id.desc())
            .limit(1)
        )


def _log_counts(report: Report) -> dict[str, int]:
    return {kind.replace(" ", "_"): n for kind, n in report.counts.items()}


# -- walking a table -----------------------------------------------------------------------------
Change = tuple[dict[str, Any], list[str]]  # new values of a row, and the kinds they count as


@dataclass(frozen=True, slots=True)
class Sweep:
    """One table's part of a run: which rows may need a change, and what the change is."""

    table: Table
    columns: tuple[ColumnElement[Any], ...]
    candidates: ColumnElement[bool]
    change: Callable[[Row[Any]], Change]


def _walk(
    factory: sessionmaker[Session],
    sweep: Sweep,
    report: Report,
    window: int,
    pause: Callable[[float], bool],
    progress: Progress | None = None,
) -> bool:
    """Apply a sweep to its table, one window of primary keys per transaction; False if stopped."""
    pk = sweep.table.c.id
    name = sweep.table.name
    with factory() as session:
        low, high, total = session.execute(select(func.min(pk), func.max(pk), func.count())).one()
    if low is None:
        return True
    start, done = low, 0
    if progress:
        progress(name, done, total)
    while start <= high:
        began = time.perf_counter()
        with transaction(factory) as session:
            if progress:  # the rows looked at, not only the candidates: the bar moves with the walk
                inside = select(func.count()).where(pk >= start, pk < start + window)
                done = min(total, done + (session.scalar(inside) or 0))
            rows = session.execute(
                select(pk, *sweep.columns).where(pk >= start, pk < start + window, sweep.candidates)
            ).all()
            changes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in rows:
                values, kinds = sweep.change(row)
                if not values:
                    continue
                report.add(kinds)
                changes.setdefault(tuple(sorted(values)), []).append(
                    {"row_id": row.id, **{f"new_{name}": value for name, value in values.items()}}
                )
            if not report.dry_run:
                for names, params in changes.items():
                    statement = (
                        update(sweep.table)
                        .where(pk == bindparam("row_id"))
                        .values({name: bindparam(f"new_{name}") for name in names})
                    )
                    session.connection().execute(statement, params)
        start += window
        if progress:
            progress(name, total if start > high else done, total)
        if not pause(max(0.001, time.perf_counter() - began)):
            return False
    return True


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _without(mapping: Any, keys: tuple[str, ...]) -> Any:
    """A parse or details with the words as written emptied, its shape kept (None when it had none)."""
    if not isinstance(mapping, dict) or not any(mapping.get(k) for k in keys):
        return None
    return {k: ([] if isinstance(v, list) else None) if k in keys else v for k, v in mapping.items()}


def _scrubbed(value: str | None) -> str | None:
    """`value` with its numbers masked, or None when it has none to mask."""
    if not value:
        return None
    masked = scrub(value)
    return masked if masked != value else None


def _has_digit(column: ColumnElement[Any]) -> ColumnElement[bool]:
    return or_(*(column.contains(digit) for digit in "0123456789"))


# -- messages ------------------------------------------------------------------------------------
def _messages_sweep(before: datetime, roster: frozenset[str]) -> Sweep:
    m = _table(Message).c
    inbound = and_(m.direction == Direction.INBOUND, m.processed_at.is_not(None))
    outbound = and_(m.direction == Direction.OUTBOUND, m.status.in_(FINAL))
    # Numbers are stored encrypted: whether one is on the roster is decided here, not in SQL.
    candidates = and_(
        m.created_at < before,
        or_(
            and_(inbound, or_(sealed_nonempty(m.text), m.raw.is_not(None), m.sender.is_not(None))),
            and_(outbound, or_(sealed_nonempty(m.text), m.recipient.is_not(None))),
        ),
    )
    columns = (m.direction, m.text, m.raw, m.parse, m.error, m.sender, m.recipient)
    return Sweep(_table(Message), columns, candidates, lambda row: _message_change(row, roster))


def _message_change(row: Row[Any], roster: frozenset[str]) -> Change:
    values: dict[str, Any] = {}
    kinds: list[str] = []
    inbound = row.direction == Direction.INBOUND
    if row.text:
        values["text"] = ""
        kinds.append("inbound texts" if inbound else "outbound texts")
        parse = _without(row.parse, WRITTEN_PARSE)
        if parse is not None:
            values["parse"] = parse
        error = _scrubbed(row.error)
        if error is not None:
            values["error"] = error
    if inbound and row.raw is not None:
        values["raw"] = None
        kinds.append("raw forms")
    if inbound and row.sender is not None and row.sender not in roster:
        values |= cleared_number("messages", "sender")
        kinds.append("sender numbers")
    if not inbound and row.recipient is not None and row.recipient not in roster:
        values |= cleared_number("messages", "recipient")
        kinds.append("recipient numbers")
    return values, kinds


# -- alerts --------------------------------------------------------------------------------------
def _alerts_sweep(before: datetime, key: bytes, roster: frozenset[str]) -> Sweep:
    a = _table(Alert).c
    later = aliased(Alert)
    # The same sender's report of the same incident inside the window: their number is in the
    # database for that one anyway, and replacing it in the old ones now would give them a
    # pseudonym the later one cannot share.
    reports_again = exists().where(
        later.sender_index == a.sender_index, later.incident_id == a.incident_id, later.created_at >= before
    )
    # Not yet a pseudonym (its index is the pseudonym), and no report again: the roster is checked below.
    replaceable = and_(not_(a.sender_index.startswith(PSEUDONYM)), ~reports_again)
    candidates = and_(
        a.created_at < before,
        or_(sealed_nonempty(a.text), a.place_query.is_not(None), replaceable, _has_digit(a.place_name)),
    )
    columns = (
        a.incident_id,
        a.text,
        a.place_query,
        a.place_name,
        a.details,
        a.sender,
        replaceable.label("replaceable"),
    )

    def change(row: Row[Any]) -> Change:
        values: dict[str, Any] = {}
        kinds: list[str] = []
        if row.text or row.place_query is not None:
            values["text"], values["place_query"] = "", None
            details = _without(row.details, WRITTEN_DETAILS)
            if details is not None:
                values["details"] = details
            kinds.append("alert texts")
        if (
            row.replaceable
            and row.sender
            and row.sender not in roster
            and not row.sender.startswith(PSEUDONYM)
        ):
            values |= cleared_number("alerts", "sender", pseudonym(key, row.incident_id, row.sender))
            kinds.append("alert senders")
        place = _scrubbed(row.place_name)
        if place is not None:
            values["place_name"] = place
            kinds.append("place names")
        return values, kinds

    return Sweep(_table(Alert), columns, candidates, change)


def pseudonym(key: bytes, incident_id: int | None, sender: str) -> str:
    """A stand-in for a sender within one incident: letters only, so no scrubber takes it for a number."""
    digest = hmac.new(key, f"{incident_id}:{sender}".encode(), hashlib.sha256).digest()
    return PSEUDONYM + "".join(chr(ord("a") + b % 26) for b in digest[:12])


# -- incidents, receipts, USSD sessions ----------------------------------------------------------
def _incidents_sweep(before: datetime) -> Sweep:
    i = _table(Incident).c

    def change(row: Row[Any]) -> Change:
        place = _scrubbed(row.place_name)
        return ({"place_name": place}, ["place names"]) if place is not None else ({}, [])

    candidates = and_(i.last_reported_at < before, _has_digit(i.place_name))
    return Sweep(_table(Incident), (i.place_name,), candidates, change)


def _receipts_sweep(before: datetime) -> Sweep:
    d = _table(DeliveryEvent).c
    candidates = and_(d.occurred_at < before, d.raw.is_not(None))
    return Sweep(_table(DeliveryEvent), (), candidates, lambda row: ({"raw": None}, ["delivery receipts"]))


def _delete_old(
    factory: sessionmaker[Session],
    report: Report,
    label: str,
    model: type[Any],
    key: InstrumentedAttribute[Any],
    old: ColumnElement[bool],
    window: int,
    pause: Callable[[float], bool],
    progress: Progress | None = None,
) -> bool:
    """Delete the `model` rows `old` selects, `window` (by `key`) a transaction; count them as `label`."""
    table = _table(model)
    with factory() as session:
        total = session.scalar(select(func.count()).select_from(table).where(old)) or 0
    if report.dry_run:
        report.counts[label] = total
        if progress:
            progress(table.name, total, total)
        return True
    if progress:
        progress(table.name, 0, total)
    while True:
        began = time.perf_counter()
        with transaction(factory) as session:
            batch = select(key).where(old).limit(window).scalar_subquery()
            gone = session.connection().execute(delete(table).where(key.in_(batch))).rowcount
        report.counts[label] += gone
        if progress:  # rows that went old since the count are removed too
            progress(table.name, min(total, report.counts[label]), total)
        if gone < window:
            return True
        if not pause(max(0.001, time.perf_counter() - began)):
            return False


# -- the daily job -------------------------------------------------------------------------------
class RetentionJob(Worker):
    """Runs retention once a day: hourly it looks whether the last run (any process's) is a day old.

    A run is idempotent, so two replicas running it at once would only waste work; with
    PostgreSQL an advisory lock makes the second one skip.
    """

    name = "retention"
    backoff_cap: ClassVar[float] = 3600.0  # a failed run is tried again within the hour, not sooner

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        engine: Engine,
        days: int,
        signals: Signals,
        every: float = 3600.0,
        delay: float = 300.0,
    ) -> None:
        super().__init__(signals=signals, every=every, factory=factory, retry=60.0)
        self.engine = engine
        self.days = days
        # A process that just started has better things to do first (its first look is this late).
        self.delay = delay

    def prepare(self) -> None:
        """Wait a while after start before the first look."""
        self.rest(self.delay)

    def step(self) -> Pass:
        """Run retention if no run finished in the last day."""
        assert self.factory is not None
        last = last_run(self.factory)
        if last is not None and utcnow() - last < RUN_EVERY:
            return Pass.IDLE
        with self._alone() as alone:
            if alone:
                run_retention(
                    factory=self.factory,
                    days=self.days,
                    actor="retention",
                    pause=lambda seconds: not self._stop.wait(seconds),
                )
        return Pass.IDLE

    @contextmanager
    def _alone(self) -> Iterator[bool]:
        """Hold the run's advisory lock (PostgreSQL) while inside; False if another process has it."""
        if self.engine.dialect.name != "postgresql":
            yield True  # SQLite deployments run one process
            return
        with self.engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": RETENTION_LOCK}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETENTION_LOCK})
                    conn.commit()
