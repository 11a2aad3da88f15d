"""Processing after the commit: fresh messages as they are stored, leftovers of a crash on a sweep."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import cast

from sqlalchemy import BigInteger, ColumnElement, Select, Table, Update, any_, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.enums import Outcome
from app.models import UNPROCESSED, Message
from app.outage import unavailable
from app.services.dedup import hold_cells
from app.services.pipeline import PipelineConfig, alert_cells, handle_inbound, load_senders, read
from app.services.worker import Pass, Signals, Worker

log = logging.getLogger("kengele.processing")

MAX_PROCESS_ATTEMPTS = 3
# While webhooks arrive, rest this many times as long as each transaction worked (25 % duty).
BUSY_REST = 3.0
# How long the processor waits for more messages to handle in the same transaction.
GATHER = 0.005

# Built once: constructing a statement costs more than running it (see bench/).
_TABLE = cast(Table, Message.__table__)
# Ids as one array on PostgreSQL: `IN (...)` has a text of its own per number of ids, so it is
# parsed and planned anew each time; `= ANY(array)` is one statement, prepared once.
_IDS = _TABLE.c.id.in_(bindparam("ids", expanding=True))
_IDS_ARRAY = _TABLE.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(BigInteger)))
_OURS = (_TABLE.c.claim_token == bindparam("token"), _TABLE.c.processed_at.is_(None))
# PostgreSQL: the rows locked till the commit (no new row versions, no index entries, as an UPDATE
# of claimed_until would write), so a sweep that took them meanwhile waits, then finds them
# processed. Found by id alone, processed_at read back: with `processed_at IS NULL` in the query,
# PostgreSQL may walk ix_messages_unprocessed (its estimate of unprocessed rows is low, and a
# backlog is when it is wrong), every unprocessed row for each batch. SQLite: the claim renewed
# (its one writer at a time keeps sweeps out meanwhile).
_RENEW_LOCK = (
    select(_TABLE.c.id, _TABLE.c.processed_at)
    .where(_IDS_ARRAY, _TABLE.c.claim_token == bindparam("token"))
    .with_for_update()
)
_RENEW_IN = update(_TABLE).where(_IDS, *_OURS).values(claimed_until=bindparam("until")).returning(_TABLE.c.id)
_LOAD = {"postgresql": select(Message).where(_IDS_ARRAY)}
_LOAD_IN = select(Message).where(_IDS)
# A sweep's claim: unprocessed inbound rows nobody holds (or, taking over, that another process
# held), found through their partial index, ix_messages_unprocessed, whose condition it repeats.
_FREE = or_(_TABLE.c.claimed_until.is_(None), _TABLE.c.claimed_until < bindparam("now"))
_TAKEN_OVER = or_(_FREE, _TABLE.c.claim_token != bindparam("token"))


def _sweep_ids(free: ColumnElement[bool]) -> Select[int]:
    # By id, in the order of ix_messages_unprocessed (the same processed_at and direction in all of
    # it): only that index gives it, so PostgreSQL never walks the whole table by id (app/models.py).
    order = (_TABLE.c.processed_at, _TABLE.c.direction, _TABLE.c.id)
    return select(_TABLE.c.id).where(UNPROCESSED, free).order_by(*order).limit(bindparam("limit"))


def _sweep_claim(free: ColumnElement[bool]) -> Update:
    return (
        update(_TABLE)
        .where(_TABLE.c.id.in_(bindparam("ids", expanding=True)), UNPROCESSED, free)
        .values(claim_token=bindparam("token"), claimed_until=bindparam("until"))
    )


_SWEEP_IDS, _SWEEP_IDS_TAKING_OVER = _sweep_ids(_FREE), _sweep_ids(_TAKEN_OVER)
_SWEEP_CLAIM, _SWEEP_CLAIM_TAKING_OVER = _sweep_claim(_FREE), _sweep_claim(_TAKEN_OVER)


class Processor(Worker):
    """Runs the pipeline on committed inbound messages this process has claimed."""

    name = "processor"
    # Alerts wait behind a failed pass: retry every second, as soon as the database is back.
    backoff_cap = 1.0

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        config: PipelineConfig,
        claim_token: str,
        signals: Signals,
        sweep_every: float = 5.0,
        sole_process: bool = False,
        lease: timedelta = timedelta(seconds=30),
        budget: float = 0.003,
        calm_budget: float = 0.015,
        sizes: tuple[int, int] = (4, 16),
    ) -> None:
        # `every`: a sweep when no message came for this long; after a failed pass, 1 s and more.
        super().__init__(signals=signals, every=sweep_every, factory=factory, retry=1.0)
        self.lease = lease
        # Work per transaction: short while webhooks queue (their commits wait for ours on SQLite),
        # longer otherwise (fewer commits and claim renewals: more messages a second).
        self.budget = budget
        self.calm_budget = calm_budget
        self.sizes = sizes  # messages a transaction at most: while webhooks queue, otherwise
        self.config = config
        self.claim_token = claim_token
        # SQLite deployments run one process: at start, every claim left behind is a dead one.
        self.sole_process = sole_process
        # PostgreSQL: other processes write incidents too, under the dedup cells' locks (dedup.py).
        bind = factory.kw.get("bind")
        self._cells = bind is not None and bind.dialect.name == "postgresql"

    def submit(self, ids: Iterable[int]) -> None:
        """Hand claimed messages to the processor's thread."""
        for message_id in ids:
            self.signals.stored.put(message_id)

    def interrupt(self) -> None:
        """Wake the thread from its wait for stored messages."""
        self.signals.stored.put(None)

    def prepare(self) -> None:
        """Sweep before the first message: what a crash left behind comes first."""
        self._sweep(take_over=self.sole_process)

    def step(self) -> Pass:
        """Process the messages stored meanwhile, or sweep when none came for `every` seconds."""
        stored = self.signals.stored
        try:
            message_id = stored.get(timeout=self.every)
        except queue.Empty:
            self._sweep()
            return Pass.AGAIN
        if message_id is None:
            return Pass.DONE
        batch = [message_id]
        gather_until = time.monotonic() + GATHER  # more messages a transaction: fewer commits
        while len(batch) < 256:
            try:
                nxt = stored.get(timeout=max(0.0, gather_until - time.monotonic()))
            except queue.Empty:
                break
            if nxt is None:  # stopping: this batch is the last
                break
            batch.append(nxt)
        self.signals.in_hand = len(batch)
        try:
            if self.process(batch):
                self.signals.outbox_ready()
        except Exception:  # the database is away: these are tried again after the back-off
            self.submit(batch)
            raise
        finally:
            self.signals.in_hand = 0
        return Pass.AGAIN

    def _sweep(self, *, take_over: bool = False) -> None:
        # A failed sweep is only logged: fresh messages must not wait out a back-off for it.
        try:
            if self.sweep(take_over=take_over):
                self.signals.outbox_ready()
        except Exception:
            log.exception("sweep failed")

    def sweep(self, limit: int = 500, *, take_over: bool = False) -> int:
        """Claim and process messages nobody is processing (left by a crash or another replica)."""
        now = utcnow()
        select_ids, claim = (
            (_SWEEP_IDS_TAKING_OVER, _SWEEP_CLAIM_TAKING_OVER) if take_over else (_SWEEP_IDS, _SWEEP_CLAIM)
        )
        params = {"now": now, "token": self.claim_token, "limit": limit}
        with self.transaction() as session:
            conn = session.connection()
            ids = list(conn.execute(select_ids, params).scalars())
            if not ids:
                return 0
            conn.execute(claim, params | {"ids": ids, "until": now + self.lease})
        log.info("sweep claimed unprocessed messages", extra={"count": len(ids)})
        return self.process(ids)

    def process(self, ids: list[int]) -> int:
        """Process claimed messages, a few milliseconds of work per transaction; the number processed.

        Short transactions keep the intake's commits quick. When one message of a transaction
        fails, the transaction is rolled back and its messages are redone one per transaction, so
        the bad one is counted alone and the others commit.
        """
        done = 0
        position = 0
        while position < len(ids):
            started = time.perf_counter()
            busy = self.signals.intake_busy()
            size, budget = (self.sizes[0], self.budget) if busy else (self.sizes[1], self.calm_budget)
            chunk: list[int] = []
            try:
                with self.transaction() as session:
                    claimed = self._renew_claims(session, ids[position : position + size])
                    load = _LOAD.get(session.get_bind().dialect.name, _LOAD_IN)
                    messages = {m.id: m for m in session.scalars(load, {"ids": list(claimed)})}
                    phones = {m.sender for m in messages.values() if m.sender}
                    senders = load_senders(session, phones, utcnow(), limits=self.config.limits)
                    readings = {i: read(m, self.config, senders) for i, m in messages.items()}
                    if self._cells:  # every report's cells, in one sorted order, before the first
                        cells = (
                            alert_cells(session, messages[i], self.config, r) for i, r in readings.items()
                        )
                        hold_cells(session, frozenset().union(*cells))
                    for message_id in ids[position : position + size]:
                        chunk.append(message_id)
                        if message_id in messages:
                            handle_inbound(
                                session=session,
                                message=messages[message_id],
                                config=self.config,
                                senders=senders,
                                reading=readings[message_id],
                            )
                        if time.perf_counter() - started > budget:
                            break
                position += len(chunk)
                done += len(claimed & set(chunk))
                # messages renewed but left for the next transaction keep their claim: fine
            except Exception:
                position += len(chunk)
                done += sum(self._process_alone(message_id) for message_id in chunk)
            self._yield(time.perf_counter() - started)
        return done

    def _yield(self, worked: float) -> None:
        """While webhooks arrive, leave them most of the CPU: storing comes before processing."""
        time.sleep(worked * BUSY_REST if self.signals.intake_busy() else 0)

    def _renew_claims(self, session: Session, ids: list[int]) -> set[int]:
        """Hold these messages for this transaction; the ones still ours and unprocessed.

        The rows are locked (PostgreSQL) until the transaction ends, so a replica sweeping at the
        same moment waits, then finds them processed: never processed twice.
        """
        params = {"ids": ids, "token": self.claim_token, "until": utcnow() + self.lease}
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            return {row.id for row in connection.execute(_RENEW_LOCK, params) if row.processed_at is None}
        return set(connection.execute(_RENEW_IN, params).scalars())

    def _process_alone(self, message_id: int) -> int:
        try:
            with self.transaction() as session:
                if message_id not in self._renew_claims(session, [message_id]):
                    return 0
                message = session.get(Message, message_id)
                assert message is not None
                handle_inbound(session=session, message=message, config=self.config)
            return 1
        except Exception as exc:
            if unavailable(exc):  # not the message's fault: no attempt counted; a sweep retries it
                self.signals.database.failed(where=self.name, exc=exc)
                return 0
            log.exception("processing failed", extra={"message_id": message_id})
            self._record_failure(message_id, exc)
            return 0

    def _record_failure(self, message_id: int, exc: Exception) -> None:
        """Count the failure; after a few, park the message for a human (triage) rather than loop."""
        try:
            self._count_failure(message_id, exc)
        except Exception:  # the database is away too: the claim expires and a sweep retries
            log.exception("could not record a processing failure", extra={"message_id": message_id})

    def _count_failure(self, message_id: int, exc: Exception) -> None:
        with self.transaction() as session:
            message = session.get(Message, message_id)
            if message is None or message.processed_at is not None:
                return
            message.attempts += 1
            message.error = f"processing failed: {type(exc).__name__}: {exc}"[:1000]
            if message.attempts >= MAX_PROCESS_ATTEMPTS:
                message.outcome = Outcome.ERROR
                message.processed_at = utcnow()
            else:  # let a later sweep try again
                message.claimed_until = utcnow() + timedelta(seconds=5 * message.attempts)
                message.claim_token = None
