"""Intake: store the raw provider message and commit before anything else happens to it.

Webhooks hand their message to one writer thread that commits them in small batches (group
commit): each request waits for the commit of its own row, then answers 2xx. A provider's retry
of a message id already stored is skipped by the unique constraint and answered 2xx as well.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Engine, Insert, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql

from app.crypto import keyring_of
from app.db import durable, insert_ignoring_conflicts, utcnow
from app.enums import Direction, MessageStatus
from app.metrics import INBOUND, INTAKE_BATCH
from app.models import Message
from app.outage import dropped, unavailable
from app.phones import normalize
from app.services.worker import Pass, Signals, Worker
from gateways.base import InboundSms

log = logging.getLogger("kengele.intake")

BATCH_MAX = 512
# Pauses before retrying a batch the database dropped: a connection killed mid-commit is replaced
# by the pool at once, so one quick retry turns most of an episode's 503s into 2xx; the last pause
# keeps a webhook's wait for its 503 well inside the providers' timeouts when the database is down.
RETRY_PAUSES = (0.0, 0.2)
# Rows bind plain strings: sqlite3 binds a str subclass (an enum member) only after looking for an adapter.
_INBOUND, _RECEIVED = str(Direction.INBOUND), str(MessageStatus.RECEIVED)


@dataclass(frozen=True, slots=True)
class Stored:
    message_id: int | None  # None: a retry of a message already stored
    duplicate: bool


# A webhook's message, and where to tell the request once it is committed.
Waiting = tuple[InboundSms, asyncio.AbstractEventLoop, asyncio.Future[Stored]]


def clean_text(text: str) -> str:
    """Text as the sender wrote it, minus NUL (PostgreSQL cannot store it)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


# A provider's date further back or ahead than this is not believed: a phone's clock set to 0001
# or 2099 would place the report where no incident is, or overflow the dedup window's arithmetic.
GIVEN_DATE_PAST = timedelta(days=30)
GIVEN_DATE_FUTURE = timedelta(days=1)


def report_time(given: datetime | None, *, now: datetime) -> tuple[datetime, datetime | None]:
    """The time a report is placed at, and the given date where it was not believed.

    A date of the last 30 days is taken (a backlog delivered late after an outage stays at the
    hour it was sent). A date up to a day ahead of our clock is a clock running a little fast:
    no report comes from the future, so it is placed at its arrival. A date further back or
    further ahead is not believed: arrival time, and the given date is kept.
    """
    if given is None:
        return now, None
    if now - GIVEN_DATE_PAST <= given <= now:
        return given, None
    if now < given <= now + GIVEN_DATE_FUTURE:
        return now, None
    return now, given


def message_row(
    sms: InboundSms, *, region: str, now: datetime, claim_token: str | None, lease: timedelta
) -> dict[str, Any]:
    """The messages row for one inbound SMS."""
    phone = normalize(sms.sender, region)
    reported, given = report_time(sms.reported_at, now=now)
    return {
        "direction": _INBOUND,
        "provider": sms.provider,
        "provider_message_id": sms.provider_message_id,
        "sender": phone.value,
        "recipient": sms.recipient,
        "phone_valid": phone.valid,
        "kind": str(sms.kind),
        "text": clean_text(sms.text),
        "status": _RECEIVED,
        "created_at": now,
        "reported_at": reported,
        "given_date": given.isoformat() if given is not None else None,
        "raw": json.dumps(sms.raw, ensure_ascii=False),
        "claimed_until": now + lease if claim_token else None,
        "claim_token": claim_token,
        "attempts": 0,
        "gateway_index": 0,
        "gateway_attempts": 0,
    }


@lru_cache(maxsize=4)
def _store_statement(dialect_name: str) -> Insert:
    table = Message.__table__
    return insert_ignoring_conflicts(dialect_name, table).returning(
        table.c.id, table.c.provider, table.c.provider_message_id
    )


def store_batch(engine: Engine, rows: list[dict[str, Any]]) -> list[int | None]:
    """Insert rows in one transaction; the id of each new row, None for each already stored.

    A batch the database dropped (an outage, a connection killed mid-commit) is tried again a
    little later. Retrying is safe: a row whose commit did land before the connection died is
    skipped by the unique key on its provider message id and reported as already stored.
    """
    for pause in RETRY_PAUSES:
        try:
            return _insert(engine, rows)
        except Exception as exc:
            if not dropped(exc):
                raise
            time.sleep(pause)
    return _insert(engine, rows)


@lru_cache(maxsize=1)
def _unnest_statement(columns: tuple[str, ...]) -> Insert:
    """PostgreSQL: a batch as one array per column, the same short statement whatever its size.

    A multi-row VALUES statement has a text of its own per batch size, too long for psycopg's
    statement cache: parsing it cost more than storing the rows. This one is parsed and planned
    once (a prepared statement), and sends each column's values as one array.
    """
    table = cast(Table, Message.__table__)
    arrays = [func.unnest(bindparam(name, type_=postgresql.ARRAY(table.c[name].type))) for name in columns]
    return (
        postgresql.insert(table)
        .from_select(list(columns), select(*arrays))
        .on_conflict_do_nothing()
        .returning(table.c.id, table.c.provider, table.c.provider_message_id)
    )


def _as_arrays(engine: Engine, rows: list[dict[str, Any]]) -> tuple[tuple[str, ...], dict[str, list[Any]]]:
    """The rows as one list per column, with the values Message's Python-side defaults would give."""
    index = keyring_of(engine).index
    columns = (*rows[0], "recipient_index", "priority")
    arrays: dict[str, list[Any]] = {name: [] for name in columns}
    for row in rows:
        for name, value in row.items():
            arrays[name].append(value)
        recipient = row["recipient"]
        arrays["recipient_index"].append(None if recipient is None else index(recipient))
        arrays["priority"].append(0)
    return columns, arrays


def _insert(engine: Engine, rows: list[dict[str, Any]]) -> list[int | None]:
    with durable(), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            columns, arrays = _as_arrays(engine, rows)
            returned = conn.execute(_unnest_statement(columns), arrays).all()
        else:
            returned = conn.execute(_store_statement(engine.dialect.name), rows).all()
    ids = {(r.provider, r.provider_message_id): r.id for r in returned}
    out: list[int | None] = []
    for row in rows:
        out.append(ids.pop((row["provider"], row["provider_message_id"]), None))
    return out


class IntakeWriter(Worker):
    """The one thread that commits inbound messages, in batches, for every webhook request."""

    name = "intake"
    drain = True
    join_timeout = 10.0

    def __init__(self, *, engine: Engine, region: str, lease: timedelta, signals: Signals) -> None:
        # Its failures are single batches (each answered 5xx): try the next one soon.
        super().__init__(signals=signals, every=0.0, retry=0.05)
        self.engine = engine
        self.region = region
        # A fresh row is processed by the process that stored it; other replicas leave it alone this long.
        self.lease = lease
        self.claim_token = uuid.uuid4().hex
        self._queue: queue.SimpleQueue[Waiting | None] = queue.SimpleQueue()  # None: stop
        # False when this process runs no processor: rows are left unclaimed for a worker to sweep.
        self.claim = True

    def start(self, *, claim: bool = True) -> None:
        """Start committing; `claim`: this process's processor takes the fresh rows."""
        self.claim = claim
        super().start()

    def interrupt(self) -> None:
        """Queue the stop: the webhooks queued before it are still committed."""
        self._queue.put(None)

    async def store(self, sms: InboundSms) -> Stored:
        """Commit one message; returns once it is durable (raises if the database refused it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        self._queue.put((sms, loop, future))
        return await future

    def store_now(self, sms: InboundSms, *, claim: bool = True) -> Stored:
        """Commit one message from the calling thread (CLI, tests)."""
        row = message_row(
            sms,
            region=self.region,
            now=utcnow(),
            claim_token=self.claim_token if claim else None,
            lease=self.lease,
        )
        (message_id,) = store_batch(self.engine, [row])
        INBOUND.labels(sms.provider, "duplicate" if message_id is None else "stored").inc()
        return Stored(message_id, message_id is None)

    def step(self) -> Pass:
        """Commit the webhooks waiting (up to BATCH_MAX) in one transaction."""
        item = self._queue.get()
        if item is None:
            return Pass.DONE
        batch = [item]
        while len(batch) < BATCH_MAX:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)
                break
            batch.append(nxt)
        try:
            self._commit(batch)
        except Exception as exc:  # no webhook waits forever: the ones not answered yet answer 5xx
            for _, loop, future in batch:
                loop.call_soon_threadsafe(_fail, future, exc)
            raise
        return Pass.AGAIN

    def _commit(self, batch: list[Waiting]) -> None:
        now = utcnow()
        token = self.claim_token if self.claim else None
        rows = [
            message_row(sms, region=self.region, now=now, claim_token=token, lease=self.lease)
            for sms, _, _ in batch
        ]
        INTAKE_BATCH.observe(len(batch))
        outcomes: list[int | Exception | None]
        try:
            outcomes = list(store_batch(self.engine, rows))
            self.signals.database.succeeded()
        except Exception as exc:
            if unavailable(exc):  # every request of the batch answers 503 and says so (routes/webhooks)
                outcomes = [exc] * len(batch)
            else:
                log.exception("intake commit failed", extra={"batch": len(batch)})
                # One bad row must not fail the others: store them one by one.
                outcomes = [self._store_alone(row) for row in rows] if len(batch) > 1 else [exc]
        self.signals.intake_committed(len(batch))
        fresh: list[int] = []
        for (sms, loop, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):  # the request answers 5xx: the provider may retry
                INBOUND.labels(sms.provider, "error").inc()
                loop.call_soon_threadsafe(_fail, future, outcome)
                continue
            INBOUND.labels(sms.provider, "duplicate" if outcome is None else "stored").inc()
            if outcome is not None:
                fresh.append(outcome)
            loop.call_soon_threadsafe(_resolve, future, Stored(outcome, outcome is None))
        if self.claim:
            for message_id in fresh:
                self.signals.stored.put(message_id)

    def _store_alone(self, row: dict[str, Any]) -> int | Exception | None:
        try:
            return store_batch(self.engine, [row])[0]
        except Exception as exc:
            if not unavailable(exc):
                log.exception("intake commit failed for one message", extra={"provider": row["provider"]})
            return exc


def _resolve(future: asyncio.Future[Stored], value: Stored) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Stored], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
