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
from sqlalchemy.sql import ClauseElement

from app.db import utcnow
from app.enums import FORWARDS, Direction, MessageStatus, Purpose
from app.models import Message
from app.services import escalation, outbox, processing
from tests.helpers import engine as keyed_engine

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
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    yield engine
    engine.dispose()


def plan(conn: Connection, statement: Executable) -> str:
    """The plan of `statement`, compiled as the service compiles it, made before its values are known.

    That is the plan a prepared statement keeps: PostgreSQL's generic plan (psycopg prepares a
    query from its fifth run), and SQLite's plan at prepare time (to use a partial index for a
    bound value, SQLite prepares the statement again at each run, once the value is bound).
    """
    compiled = cast(ClauseElement, statement).compile(
        dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
    )
    sql = str(compiled)
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", (None,) * sql.count("?")).all()
        return "\n".join(row[-1] for row in rows)
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    conn.exec_driver_sql("PREPARE probe AS " + re.sub(r"%\((\w+)\)s", number, sql))
    conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
    try:
        args = f"({', '.join('NULL' for _ in names)})" if names else ""
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE probe{args}"))
    finally:
        conn.exec_driver_sql("DEALLOCATE probe")
        conn.exec_driver_sql("RESET plan_cache_mode")


# The old queries' conditions, their values bound: what a partial index cannot serve.
BOUND_QUEUED = T.c.status == MessageStatus.QUEUED
BOUND_SENDING = T.c.status == MessageStatus.SENDING
BOUND_UNPROCESSED = and_(T.c.processed_at.is_(None), T.c.direction == Direction.INBOUND)
PARAMS = {"now": NOW, "limit": 64, "max_priority": 3, "token": TOKEN, "until": NOW, "ids": [1, 2]}
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
        select(T.c.id).where(BOUND_UNPROCESSED, FREE).order_by(T.c.id).limit(bindparam("limit")),
        "ix_messages_unprocessed",
    ),
    "processor: sweep taking over": (
        processing._SWEEP_IDS_TAKING_OVER,
        select(T.c.id)
        .where(BOUND_UNPROCESSED, or_(FREE, T.c.claim_token != bindparam("token")))
        .order_by(T.c.id)
        .limit(bindparam("limit")),
        "ix_messages_unprocessed",
    ),
    "escalator: failed forwards": (
        escalation._FAILED_FORWARDS,
        select(T.c.id)
        .where(T.c.status == MessageStatus.FAILED, T.c.purpose.in_(FORWARDS), T.c.followed_up_at.is_(None))
        .order_by(T.c.id)
        .limit(50),
        "ix_messages_failed",
    ),
}


def test_queue_queries_walk_their_partial_index(db: Engine) -> None:
    misses = []
    with db.connect() as conn:
        for case, (statement, bound, index) in CASES.items():
            used, unused = plan(conn, statement), plan(conn, bound)
            if not re.search(rf"\b{index}\b", used):
                misses.append(f"{case}: {index} not used:\n{used}")
            if re.search(rf"\b{index}\b", unused):
                misses.append(f"{case}: {index} serves a bound value, so it is not partial:\n{unused}")
    assert misses == [], "\n".join(misses)


def test_the_statements_find_the_rows(db: Engine) -> None:
    """What the partial indexes hold is what the queues are: the rows still to do, and only those."""
    later = PARAMS | {"now": NOW + timedelta(seconds=1)}
    with db.connect() as conn:
        assert len(conn.execute(outbox._DUE_IDS, PARAMS).all()) == 5
        assert len(conn.execute(outbox._STALE_IDS, later).all()) == 3
        assert len(conn.execute(processing._SWEEP_IDS, PARAMS).all()) == 5
        assert len(conn.execute(escalation._FAILED_FORWARDS).all()) == 2
