"""The queue queries walk their partial indexes, on SQLite and in PostgreSQL's generic plans.

A partial index holds only the rows still to be done, so it stays small however long the history.
It serves a query only when the query's WHERE repeats the index's condition with the values
written in; a prepared statement's bound value hides it from PostgreSQL's generic plan, which
psycopg's prepared statements get after a few runs. Each case runs EXPLAIN on the statement the
service runs, then on the same query with that value bound, which must not find the index: the
index is partial (a plain one would serve both), and the test tells the two apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Table,
    and_,
    bindparam,
    insert,
    or_,
    select,
    text,
    update,
)

from app.db import utcnow
from app.enums import FORWARDS, Direction, MessageStatus, Purpose
from app.models import Message
from app.services import escalation, outbox, processing
from tests.helpers import engine as keyed_engine
from tests.plans import prepared_plan

T = cast(Table, Message.__table__)
NOW = utcnow()
TOKEN = "t" * 32


def _rows() -> list[dict[str, Any]]:
    """A long-lived deployment in miniature: thousands of finished rows, a few still to do."""
    done: list[dict[str, Any]] = []
    finished = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.FAILED)
    for i in range(2000):
        at = NOW - timedelta(minutes=i)
        if i % 2:
            done.append(
                {"direction": Direction.INBOUND, "status": MessageStatus.RECEIVED, "processed_at": at}
            )
        else:
            purpose = FORWARDS[i % 4 // 2] if i % 3 else Purpose.REPLY
            status = finished[i % 3]
            done.append(
                {"direction": Direction.OUTBOUND, "status": status, "purpose": purpose, "sent_at": at}
                | ({"followed_up_at": at} if status == MessageStatus.FAILED else {})
            )
    todo: list[dict[str, Any]] = [{"direction": Direction.INBOUND, "status": MessageStatus.RECEIVED}] * 5
    todo += [{"direction": Direction.OUTBOUND, "status": MessageStatus.QUEUED, "next_attempt_at": NOW}] * 5
    todo += [{"direction": Direction.OUTBOUND, "status": MessageStatus.SENDING, "claimed_until": NOW}] * 3
    todo += [
        {"direction": Direction.OUTBOUND, "status": MessageStatus.FAILED, "purpose": Purpose.ALERT_FORWARD}
    ] * 2
    unset = dict.fromkeys(("purpose", "processed_at", "sent_at", "followed_up_at", "next_attempt_at"))
    base = unset | {"text": "", "created_at": NOW, "priority": 0, "claimed_until": None}
    return [base | row for row in done + todo]


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = keyed_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(Message), _rows())
    yield engine
    engine.dispose()


# The old queries' conditions, their values bound: what a partial index cannot serve.
BOUND_QUEUED = T.c.status == MessageStatus.QUEUED
BOUND_SENDING = T.c.status == MessageStatus.SENDING
BOUND_UNPROCESSED = and_(T.c.processed_at.is_(None), T.c.direction == Direction.INBOUND)
PARAMS = {"now": NOW, "limit": 64, "max_priority": 3, "token": TOKEN, "until": NOW, "ids": [1, 2]}
UNPROCESSED_ORDER = (T.c.processed_at, T.c.direction, T.c.id)
FREE = or_(T.c.claimed_until.is_(None), T.c.claimed_until < bindparam("now"))
CASES: dict[str, tuple[Executable, Executable, str]] = {
    "dispatcher: due": (
        outbox._DUE_IDS,
        select(T.c.id)
        .where(
            BOUND_QUEUED, T.c.priority <= bindparam("max_priority"), T.c.next_attempt_at <= bindparam("now")
        )
        .order_by(T.c.priority, T.c.next_attempt_at)
        .limit(bindparam("limit")),
        "ix_messages_due",
    ),
    "dispatcher: stale": (
        outbox._STALE_IDS,
        select(T.c.id).where(BOUND_SENDING, T.c.claimed_until < bindparam("now")).limit(bindparam("limit")),
        "ix_messages_stale",
    ),
    "dispatcher: release": (
        outbox._RELEASE_ALL,
        update(T).where(T.c.claim_token == bindparam("token"), BOUND_SENDING).values(claim_token=None),
        "ix_messages_stale",
    ),
    "processor: sweep": (
        processing._SWEEP_IDS,
        select(T.c.id).where(BOUND_UNPROCESSED, FREE).order_by(*UNPROCESSED_ORDER).limit(bindparam("limit")),
        "ix_messages_unprocessed",
    ),
    "processor: sweep taking over": (
        processing._SWEEP_IDS_TAKING_OVER,
        select(T.c.id)
        .where(BOUND_UNPROCESSED, or_(FREE, T.c.claim_token != bindparam("token")))
        .order_by(*UNPROCESSED_ORDER)
        .limit(bindparam("limit")),
        "ix_messages_unprocessed",
    ),
    "escalator: failed forwards": (
        escalation._FAILED_FORWARDS,
        select(T.c.id)
        .where(T.c.status == MessageStatus.FAILED, T.c.purpose.in_(FORWARDS), T.c.followed_up_at.is_(None))
        .order_by(T.c.followed_up_at, T.c.id)
        .limit(50),
        "ix_messages_failed",
    ),
}


def misses(conn: Connection) -> list[str]:
    """Each case whose statement does not walk its index, or whose bound twin does."""
    found = []
    for case, (statement, bound, index) in CASES.items():
        used, unused = prepared_plan(conn, statement), prepared_plan(conn, bound)
        if not re.search(rf"\b{index}\b", used):
            found.append(f"{case}: {index} not used:\n{used}")
        if re.search(rf"\b{index}\b", unused):
            found.append(f"{case}: {index} serves a bound value, so it is not partial:\n{unused}")
    return found


def test_queue_queries_walk_their_partial_index(db: Engine) -> None:
    """Without statistics (the service never runs ANALYZE on SQLite) and with them (autovacuum's)."""
    with db.connect() as conn:
        assert misses(conn) == [], "no statistics:\n" + "\n".join(misses(conn))
    with db.begin() as conn:
        conn.execute(text("ANALYZE"))
    with db.connect() as conn:
        assert misses(conn) == [], "after ANALYZE:\n" + "\n".join(misses(conn))


def test_the_statements_find_the_rows(db: Engine) -> None:
    """What the partial indexes hold is what the queues are: the rows still to do, and only those."""
    later = PARAMS | {"now": NOW + timedelta(seconds=1)}
    with db.connect() as conn:
        assert len(conn.execute(outbox._DUE_IDS, PARAMS).all()) == 5
        assert len(conn.execute(outbox._STALE_IDS, later).all()) == 3
        assert len(conn.execute(processing._SWEEP_IDS, PARAMS).all()) == 5
        assert len(conn.execute(escalation._FAILED_FORWARDS).all()) == 2
