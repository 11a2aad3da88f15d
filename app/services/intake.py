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
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, Insert

from app.db import durable, insert_ignoring_conflicts, utcnow
from app.metrics import INBOUND, INTAKE_BATCH
from app.models import Message
from app.phones import normalize
from gateways.base import InboundSms

log = logging.getLogger("kengele.intake")

BATCH_MAX = 512


@dataclass(frozen=True, slots=True)
class Stored:
    message_id: int | None  # None: a retry of a message already stored
    duplicate: bool


def clean_text(text: str) -> str:
    """Text as the sender wrote it, minus NUL (PostgreSQL cannot store it)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def message_row(
    sms: InboundSms, *, region: str, now: datetime, claim_token: str | None, lease: timedelta
) -> dict[str, Any]:
    """The messages row for one inbound SMS."""
    phone = normalize(sms.sender, region)
    reported = sms.reported_at if sms.reported_at is not None and sms.reported_at <= now else now
    return {
        "direction": "inbound",
        "provider": sms.provider,
        "provider_message_id": sms.provider_message_id,
        "sender": phone.value,
        "recipient": sms.recipient,
        "phone_valid": phone.valid,
        "kind": sms.kind,
        "text": clean_text(sms.text),
        "status": "received",
        "created_at": now,
        "reported_at": reported,
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
    return insert_ignoring_conflicts(dialect_name, table).returning(  # type: ignore[arg-type]
        table.c.id, table.c.provider, table.c.provider_message_id
    )


def store_batch(engine: Engine, rows: list[dict[str, Any]]) -> list[int | None]:
    """Insert rows in one transaction; the id of each new row, None for each already stored."""
    stmt = _store_statement(engine.dialect.name)
    with durable(), engine.begin() as conn:
        returned = conn.execute(stmt, rows).all()
    ids = {(r.provider, r.provider_message_id): r.id for r in returned}
    out: list[int | None] = []
    for row in rows:
        out.append(ids.pop((row["provider"], row["provider_message_id"]), None))
    return out


# Webhooks per commit (moving average) from which intake is a burst and comes first. A steady
# stream waits for our own processing transactions and makes batches of a few: not a burst.
BURST_BATCH = 8.0


class IntakeWriter:
    """The one thread that commits inbound messages, in batches, for every webhook request."""

    def __init__(
        self,
        *,
        engine: Engine,
        region: str,
        lease: timedelta,
        on_stored: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.region = region
        # A fresh row is processed by the process that stored it; other replicas leave it alone this long.
        self.lease = lease
        self.on_stored = on_stored
        self.claim_token = uuid.uuid4().hex
        self._queue: queue.SimpleQueue[tuple[InboundSms, asyncio.AbstractEventLoop, asyncio.Future[Stored]]]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_commit = 0.0
        self._batch_average = 1.0  # moving average of webhooks per commit
        # False when this process runs no processor: rows are left unclaimed for a worker to sweep.
        self.claim = True

    def busy(self) -> bool:
        """Webhooks queue up: batches of many were committed in the last 50 ms.

        A steady trickle (one webhook per commit, however many a second) is not busy: processing
        and sending then run at full speed, so an alert reaches its officer in well under a second.
        Only a burst that makes webhooks wait for each other's commits sends them to the back.
        """
        return time.monotonic() - self._last_commit < 0.05 and self._batch_average >= BURST_BATCH

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kengele-intake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        if self._thread is not None:
            self._queue.put(None)  # type: ignore[arg-type]
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

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

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < BATCH_MAX:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # type: ignore[arg-type]
                    break
                batch.append(nxt)
            self._commit(batch)

    def _commit(
        self, batch: list[tuple[InboundSms, asyncio.AbstractEventLoop, asyncio.Future[Stored]]]
    ) -> None:
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
        except Exception as exc:
            log.exception("intake commit failed", extra={"batch": len(batch)})
            # One bad row must not fail the others: store them one by one.
            outcomes = [self._store_alone(row) for row in rows] if len(batch) > 1 else [exc]
        self._last_commit = time.monotonic()
        self._batch_average = 0.8 * self._batch_average + 0.2 * len(batch)
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
        if fresh and self.on_stored is not None and self.claim:
            self.on_stored(fresh)

    def _store_alone(self, row: dict[str, Any]) -> int | Exception | None:
        try:
            return store_batch(self.engine, [row])[0]
        except Exception as exc:
            log.exception("intake commit failed for one message", extra={"provider": row["provider"]})
            return exc


def _resolve(future: asyncio.Future[Stored], value: Stored) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Stored], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
