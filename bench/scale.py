"""Ten million messages: the queues' claims and the intake's commits as the history grows.

For SQLite, then PostgreSQL when reachable, `messages` is filled to each size with the mix of a
long-lived deployment: nearly every row finished (inbound processed; outbound sent, delivered or
failed, failed forwards handed on), spread over 90 days, and a few hundred still to do (queued
outbound, unprocessed inbound). The encrypted columns hold real ciphertext: one inbound and one
outbound message go in through the intake and the outbox, and the fill copies what they stored.
Then, each many times, p50 and p99 of:

- a dispatcher's claim (the real Dispatcher.claim; the rows are given back after each, unmeasured);
- an intake commit of one message and of 32 (intake.store_batch, fsynced as for a webhook);
- the processor's sweep claim of unprocessed rows (its statements, rolled back).

Also the table's size on disk with its indexes, the fill time (ANALYZE, on PostgreSQL VACUUM
ANALYZE, included), and, at the largest size, the index each claim's plan walks: the plan a
prepared statement keeps (PostgreSQL's generic one), which must be the claim's partial index.

    python -m bench.scale [ROWS ...]    other sizes than 10,000 and 10,000,000
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from app.db import make_engine, make_sessionmaker, transaction, upgrade, utcnow
from app.enums import Direction, MessageStatus, Purpose
from app.models import Message
from app.services import escalation, intake, outbox, processing
from app.services.outbox import PRIORITY, Dispatcher, RetryPolicy, enqueue
from app.services.worker import Signals
from bench.common import (
    KEYRING,
    expect,
    percentile,
    postgres_database,
    postgres_reachable,
    postgres_required,
    scratch,
)
from gateways.base import InboundSms
from gateways.console import ConsoleGateway
from tests.plans import prepared_plan

SIZES = (10_000, 10_000_000)
SMOKE_SIZES = (10_000, 100_000)
PENDING = 300  # queued outbound rows, and as many unprocessed inbound ones
HISTORY = timedelta(days=90)
CHUNK = 1_000_000  # rows per fill transaction
RUNS = 200
SENDER, SERVICE, OFFICER = "+243810000001", "+243990001000", "+243990000001"


@dataclass(frozen=True, slots=True)
class Sealed:
    """What the intake and the outbox stored for one message each: the ciphertexts the fill copies."""

    text: str
    sender: str
    recipient: str
    raw: str
    out_text: str
    out_recipient: str
    out_index: str


@dataclass(frozen=True, slots=True)
class Result:
    database: str
    rows: int
    fill: float  # seconds
    size: int  # bytes
    claim: list[float]
    intake_one: list[float]
    intake_batch: list[float]
    sweep: list[float]
    plans: dict[str, str]  # claim -> the indexes its prepared plan walks


def _sms(pid: str) -> InboundSms:
    form = {"from": [SENDER], "to": [SERVICE], "text": ["A1 Djugu, attaque"], "id": [pid], "date": [""]}
    return InboundSms("africastalking", pid, SENDER, SERVICE, "A1 Djugu, attaque", None, form)


def _row(pid: str) -> dict[str, Any]:
    return intake.message_row(_sms(pid), region="CD", now=utcnow(), claim_token=None, lease=timedelta(0))


def seal(engine: Engine) -> Sealed:
    """Store one inbound message (intake) and queue one SMS (outbox); read back what they stored."""
    (inbound,) = intake.store_batch(engine, [_row("seed-in")])
    with transaction(make_sessionmaker(engine)) as session:
        enqueue(
            session=session,
            recipient=OFFICER,
            text="K1 attaque Djugu: 2 rapports. ACK K1",
            purpose=Purpose.ALERT_FORWARD,
            key="seed-out",
        )
        out = session.scalar(select(Message.id).where(Message.idempotency_key == "seed-out"))
    stored = "SELECT text, sender, recipient, raw, recipient_index FROM messages WHERE id = :id"
    with engine.connect() as conn:
        i = conn.execute(text(stored), {"id": inbound}).one()
        o = conn.execute(text(stored), {"id": out}).one()
        conn.execute(text("DELETE FROM messages"))
        conn.commit()
    expect(i.sender.startswith("k1:") and o.recipient.startswith("k1:"), "the numbers were not sealed")
    return Sealed(i.text, i.sender, i.recipient, i.raw, o.text, o.recipient, o.recipient_index)


def _fill_sql(dialect: str) -> str:
    """One INSERT ... SELECT of rows :lo to :hi of a fill of :n (the last 2 * PENDING still to do)."""
    if dialect == "sqlite":
        source = "g"
        prefix = "WITH RECURSIVE g(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM g WHERE i < :hi) "

        def at(seconds: str) -> str:  # as SQLAlchemy stores a UTC datetime on SQLite
            return f"strftime('%Y-%m-%d %H:%M:%S', :start + {seconds}, 'unixepoch') || '.000000'"

        def key(name: str) -> str:
            return f"'{name}' || printf('%010d', i)"

    else:
        source = "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g(i)"
        prefix = ""

        def at(seconds: str) -> str:
            return f"to_timestamp(CAST(:start AS double precision) + {seconds})"

        def key(name: str) -> str:
            return f"'{name}' || lpad(CAST(i AS text), 10, '0')"

    pending = "i > :n - :pending2"
    inbound = "i % 2 = 1"
    t = "i * :step"  # seconds from the start of the history to the row's arrival
    # Outbound, finished: 5 % failed, 25 % sent, 70 % delivered; purposes as a network sends them.
    status = (
        f"CASE WHEN {inbound} THEN 'received' WHEN {pending} THEN 'queued' WHEN i / 2 % 20 = 0 THEN 'failed'"
        " WHEN i / 2 % 20 <= 5 THEN 'sent' ELSE 'delivered' END"
    )
    purpose = (
        f"CASE WHEN {inbound} THEN NULL WHEN i / 2 % 10 < 4 THEN 'reply' WHEN i / 2 % 10 < 6"
        " THEN 'alert_forward' WHEN i / 2 % 10 = 6 THEN 'escalation' WHEN i / 2 % 10 = 7 THEN 'notice'"
        " ELSE 'checkin' END"
    )
    priority = (
        f"CASE WHEN {inbound} THEN 0 WHEN i / 2 % 10 < 4 THEN {PRIORITY[Purpose.REPLY]}"
        f" WHEN i / 2 % 10 < 7 THEN {PRIORITY[Purpose.ALERT_FORWARD]} WHEN i / 2 % 10 = 7"
        f" THEN {PRIORITY[Purpose.NOTICE]} ELSE {PRIORITY[Purpose.CHECKIN]} END"
    )
    done_out = f"NOT ({inbound}) AND NOT ({pending})"
    columns = {
        "direction": f"CASE WHEN {inbound} THEN 'inbound' ELSE 'outbound' END",
        "provider": f"CASE WHEN {inbound} OR NOT ({pending}) THEN 'africastalking' END",
        "provider_message_id": (
            f"CASE WHEN {inbound} THEN {key('ATXid_')} WHEN NOT ({pending}) THEN {key('ATPid_')} END"
        ),
        "sender": f"CASE WHEN {inbound} THEN :sender END",
        "recipient": f"CASE WHEN {inbound} THEN :recipient ELSE :out_recipient END",
        "recipient_index": f"CASE WHEN {inbound} THEN NULL ELSE :out_index END",
        "kind": "'sms'",
        "phone_valid": ":yes",
        "text": f"CASE WHEN {inbound} THEN :text ELSE :out_text END",
        "purpose": purpose,
        "status": status,
        "language": "'fr'",
        "created_at": at(t),
        "reported_at": f"CASE WHEN {inbound} THEN {at(t)} END",
        "raw": f"CASE WHEN {inbound} THEN :raw END",
        "processed_at": f"CASE WHEN {inbound} AND NOT ({pending}) THEN {at(t + ' + 1')} END",
        "intent": f"CASE WHEN {inbound} AND NOT ({pending}) THEN 'report' END",
        "outcome": f"CASE WHEN {inbound} AND NOT ({pending}) THEN 'alert' END",
        "idempotency_key": f"CASE WHEN NOT ({inbound}) THEN {key('fill:')} END",
        "attempts": f"CASE WHEN {done_out} THEN 1 ELSE 0 END",
        "gateway_index": "0",
        "gateway_attempts": "0",
        "priority": priority,
        "next_attempt_at": f"CASE WHEN NOT ({inbound}) THEN {at(t)} END",
        "sent_at": f"CASE WHEN {done_out} THEN {at(t + ' + 2')} END",
        "delivered_at": f"CASE WHEN {done_out} AND i / 2 % 20 > 5 THEN {at(t + ' + 9')} END",
        "error": f"CASE WHEN {done_out} AND i / 2 % 20 = 0 THEN 'africastalking: UserInBlacklist' END",
        # every failed forward was handed on to the next officer
        "followed_up_at": f"CASE WHEN {done_out} AND i / 2 % 20 = 0 THEN {at(t + ' + 60')} END",
    }
    return (
        f"{prefix}INSERT INTO messages ({', '.join(columns)}) "
        f"SELECT {', '.join(columns.values())} FROM {source}"
    )


def fill(engine: Engine, n: int) -> float:
    """`messages` filled to `n` rows (after ANALYZE); the seconds it took."""
    started = time.perf_counter()
    sealed = seal(engine)
    now = utcnow()
    params: dict[str, Any] = {
        "n": n,
        "pending2": 2 * PENDING,
        "start": (now - HISTORY).timestamp(),
        "step": HISTORY.total_seconds() / n,
        "yes": True,
        "sender": sealed.sender,
        "recipient": sealed.recipient,
        "text": sealed.text,
        "raw": sealed.raw,
        "out_text": sealed.out_text,
        "out_recipient": sealed.out_recipient,
        "out_index": sealed.out_index,
    }
    sql = text(_fill_sql(engine.dialect.name))
    for lo in range(1, n + 1, CHUNK):
        with engine.begin() as conn:
            conn.execute(sql, params | {"lo": lo, "hi": min(n, lo + CHUNK - 1)})
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()  # outside a transaction: a checkpoint cannot run in one
        try:
            raw.driver_connection.execute("ANALYZE")  # type: ignore[union-attr]
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()
    else:
        # A long-lived table has been vacuumed by autovacuum (visibility map set): so is this one.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) messages")
    return time.perf_counter() - started


def _timed(runs: int, step: Callable[[int], None]) -> list[float]:
    times = []
    for k in range(runs):
        t0 = time.perf_counter()
        step(k)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def claims(engine: Engine, runs: int) -> list[float]:
    """The real dispatcher's claim; its rows given back (unmeasured) so the queue stays as it is."""
    dispatcher = Dispatcher(
        factory=make_sessionmaker(engine),
        gateways=[ConsoleGateway()],
        policy=RetryPolicy(3, 1.0, 60.0),
        signals=Signals(),
    )
    wanted = min(dispatcher.claim_limit, PENDING)
    times = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            token, rows = dispatcher.claim(dispatcher.claim_limit)
            times.append((time.perf_counter() - t0) * 1000)
            expect(len(rows) == wanted, f"a claim took {len(rows)} rows of {PENDING} queued, not {wanted}")
            dispatcher._release_all(token)
    finally:
        dispatcher.stop()
    return times


def sweeps(engine: Engine, runs: int) -> list[float]:
    """The processor's sweep claim (its two statements in one transaction), rolled back."""
    factory = make_sessionmaker(engine)
    token = uuid.uuid4().hex

    def one(_: int) -> None:
        with factory() as session:  # rolled back on leaving: the rows stay unclaimed
            conn = session.connection()
            now = utcnow()
            params = {"now": now, "token": token, "limit": 500}
            ids = list(conn.execute(processing._SWEEP_IDS, params).scalars())
            claimed = conn.execute(processing._SWEEP_CLAIM, params | {"ids": ids, "until": now}).rowcount
            expect(len(ids) == PENDING == claimed, f"a sweep claimed {claimed} of {len(ids)}, not {PENDING}")

    return _timed(runs, one)


def intakes(engine: Engine, runs: int, batch: int) -> list[float]:
    """Commits of `batch` new inbound messages through the intake (durable: fsynced on SQLite)."""
    tag = uuid.uuid4().hex[:8]

    def one(k: int) -> None:
        rows = [_row(f"bench-{tag}-{k}-{j}") for j in range(batch)]
        ids = intake.store_batch(engine, rows)
        expect(len(ids) == batch and None not in ids, f"{ids.count(None)} of {batch} messages not stored")

    return _timed(runs, one)


def size_on_disk(engine: Engine, path: Path | None) -> int:
    if path is not None:
        return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_total_relation_size('messages')")).scalar_one())


# Each queue query and the partial index its prepared plan must walk.
PLANS = {
    "claim (due)": (outbox._DUE_IDS, "ix_messages_due"),
    "claim (stale)": (outbox._STALE_IDS, "ix_messages_stale"),
    "processor's claim": (processing._SWEEP_IDS, "ix_messages_unprocessed"),
    "escalator's failed forwards": (escalation._FAILED_FORWARDS, "ix_messages_failed"),
}


def claim_plans(engine: Engine) -> dict[str, str]:
    """The indexes each claim walks, in the plan a prepared statement keeps (PostgreSQL: generic)."""
    walks = {}
    with engine.connect() as conn:
        for name, (statement, _) in PLANS.items():
            plan = prepared_plan(conn, statement)
            found = re.findall(r"\bix_messages_\w+|\bpk_messages\b", plan)
            walks[name] = ", ".join(dict.fromkeys(found)) or plan.replace("\n", " / ")
    return walks


def opens(engine: Engine) -> None:
    """Fail unless a filled row of each direction opens under the bench key, as the app reads it."""
    with Session(engine) as session:
        for direction in Direction:
            row = session.scalars(select(Message).where(Message.direction == direction).limit(1)).one()
            number = row.sender if direction == Direction.INBOUND else row.recipient
            expect(number in (SENDER, OFFICER) and bool(row.text), f"a filled {direction} row reads wrong")
            expect(direction == Direction.OUTBOUND or "A1 Djugu" in (row.raw or ""), "its raw form is lost")


def measure(label: str, engine: Engine, n: int, runs: int, path: Path | None = None) -> Result:
    """Fill an empty, migrated `messages` to `n` rows, then time each claim and commit `runs` times."""
    seconds = fill(engine, n)
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(Message)).scalar_one()
    expect(rows == n, f"{label}: the fill left {rows} rows, not {n}")
    opens(engine)
    size, plans = size_on_disk(engine, path), claim_plans(engine)  # before the claims' dead rows
    queued = (Message.direction == Direction.OUTBOUND, Message.status == MessageStatus.QUEUED)
    claim = claims(engine, runs)
    sweep = sweeps(engine, runs)
    with engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(Message).where(*queued)).scalar_one()
    expect(left == PENDING, f"{label}: {left} rows queued after the claims, not {PENDING}")
    one = intakes(engine, runs, 1)
    batch = intakes(engine, runs, 32)
    return Result(label, n, seconds, size, claim, one, batch, sweep, plans)


def on_sqlite(workdir: Path, sizes: tuple[int, ...], runs: int) -> list[Result]:
    """Each size in a database file of its own, copied from one migrated file."""
    template = workdir / "template.db"
    upgrade(f"sqlite:///{template}")
    results = []
    for n in sizes:
        path = workdir / f"scale-{n}.db"
        shutil.copy(template, path)
        engine = make_engine(f"sqlite:///{path}", keyring=KEYRING)
        try:
            results.append(measure("SQLite", engine, n, runs, path))
        finally:
            engine.dispose()
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
    return results


def on_postgresql(sizes: tuple[int, ...], runs: int) -> list[Result]:
    """Each size in one throwaway database, emptied in between."""
    results = []
    with postgres_database("scale") as url:
        upgrade(url)
        engine = make_engine(url, keyring=KEYRING)
        try:
            for n in sizes:
                with engine.begin() as conn:
                    conn.execute(text("TRUNCATE messages RESTART IDENTITY CASCADE"))
                results.append(measure("PostgreSQL", engine, n, runs))
        finally:
            engine.dispose()
    return results


def _ms(values: list[float]) -> str:
    return f"{percentile(values, 50):7.2f} {percentile(values, 99):7.2f}"


def report(results: list[Result]) -> None:
    print(
        f"  {'database':<11} {'rows':>11}  {'claim p50/p99 ms':>16}  {'intake(1)':>15}  {'intake(32)':>15}"
        f"  {'processor claim':>15}  {'size MB':>8}  {'fill s':>6}"
    )
    for r in results:
        print(
            f"  {r.database:<11} {r.rows:>11,}  {_ms(r.claim):>16}  {_ms(r.intake_one):>15}"
            f"  {_ms(r.intake_batch):>15}  {_ms(r.sweep):>15}  {r.size / 1e6:>8.0f}  {r.fill:>6.1f}"
        )
    for r in results:
        if r.rows == max(x.rows for x in results):
            walks = "; ".join(f"{name} -> {index}" for name, index in r.plans.items())
            print(f"  {r.database} at {r.rows:,} rows, prepared plans: {walks}")


def main(sizes: tuple[int, ...] = SIZES, runs: int = RUNS) -> None:
    print(
        f"messages at scale: {' and '.join(f'{n:,}' for n in sizes)} rows over {HISTORY.days} days, "
        f"{PENDING} queued and {PENDING} unprocessed; each measure {runs} times (p50 p99, ms)"
    )
    with scratch("scale") as workdir:
        results = on_sqlite(workdir, sizes, runs)
    if postgres_reachable():
        results += on_postgresql(sizes, runs)
    else:
        expect(not postgres_required(), "PostgreSQL is not reachable (KENGELE_TEST_REQUIRE_PG=1)")
        print("  PostgreSQL: not reachable, skipped")
    report(results)
    for r in results:
        for name, (_, index) in PLANS.items():
            expect(index in r.plans[name], f"{r.database}, {r.rows:,} rows: {name} walks {r.plans[name]}")


def smoke() -> None:
    main(SMOKE_SIZES, runs=30)


if __name__ == "__main__":
    import sys

    main(tuple(int(n) for n in sys.argv[1:]) or SIZES)
