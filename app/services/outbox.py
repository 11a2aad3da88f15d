"""The outbox: outbound SMS are rows written with the state that caused them; a dispatcher sends them.

A dispatcher claims due rows atomically (status queued -> sending with its own claim token and a
lease), so two dispatchers, in one process or in two replicas, never send the same row. Retryable
errors back off exponentially with jitter on the same gateway, then fail over to the next one of
KENGELE_GATEWAY; a permanent error, or the last gateway's last try, ends in `failed` with the reason.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Connection, Insert, Row, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db import insert_ignoring_conflicts, transaction, utcnow
from app.enums import Direction, MessageStatus, Purpose, Role
from app.metrics import DELIVERY, OUTBOUND, OUTBOX_DEPTH, SEND_DEFERRED, SUPPRESSED
from app.models import QUEUED, SENDING, DeliveryEvent, Message, Person
from app.services.pacing import LATE, RESERVE_SHARE, Decision, Pacer, Verdict
from app.services.worker import Pass, Signals, Worker
from gateways.base import DeliveryReport, DeliveryStatus, Gateway, MessageKind, SendError

log = logging.getLogger("kengele.outbox")

PURPOSES = tuple(Purpose)
# When the outbox is long, what goes first: an officer learning of an attack before a reporter's
# thank-you, and both before the day's check-ins.
PRIORITY: dict[str, int] = {
    Purpose.ALERT_FORWARD: 0,
    Purpose.ESCALATION: 0,
    Purpose.NOTICE: 1,
    Purpose.UPDATE: 1,
    Purpose.REPLY: 2,
    Purpose.CHECKIN: 3,
}
# Our statuses in the order a message moves through them; a late receipt never moves one back.
_RANK: dict[str, int] = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.FAILED: 4,
}
# Rows inserted by the thousand (a check-in round) bind plain strings: sqlite3 binds a str subclass,
# an enum member, only after looking for an adapter, some 10 % of such an insert.
_OUTBOUND, _QUEUED, _SMS = str(Direction.OUTBOUND), str(MessageStatus.QUEUED), str(MessageKind.SMS)


def enqueue(
    *,
    session: Session,
    recipient: str,
    text: str,
    purpose: Purpose,
    key: str,
    incident_id: int | None = None,
    person_id: int | None = None,
    in_reply_to: int | None = None,
    language: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Queue one SMS in the caller's transaction; a second enqueue with the same key does nothing."""
    values = outbound_row(
        recipient=recipient,
        text=text,
        purpose=purpose,
        key=key,
        now=now or utcnow(),
        incident_id=incident_id,
        person_id=person_id,
        in_reply_to=in_reply_to,
        language=language,
    )
    connection = session.connection()
    return connection.execute(_enqueue_statement(connection.dialect.name), values).scalar() is not None


def outbound_row(
    *,
    recipient: str,
    text: str,
    purpose: Purpose,
    key: str,
    now: datetime,
    incident_id: int | None = None,
    person_id: int | None = None,
    in_reply_to: int | None = None,
    language: str | None = None,
) -> dict[str, Any]:
    """The columns of one queued SMS (for inserts of many at once, e.g. a check-in round)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    return {
        "direction": _OUTBOUND,
        "recipient": recipient,
        "text": text,
        "purpose": str(purpose),
        "status": _QUEUED,
        "idempotency_key": key,
        "incident_id": incident_id,
        "person_id": person_id,
        "in_reply_to": in_reply_to,
        "language": language,
        "created_at": now,
        "next_attempt_at": now,
        "phone_valid": True,
        "kind": _SMS,
        "attempts": 0,
        "gateway_index": 0,
        "gateway_attempts": 0,
        "priority": PRIORITY[purpose],
    }


@lru_cache(maxsize=4)
def _enqueue_statement(dialect_name: str) -> Insert:
    table = Message.__table__
    return insert_ignoring_conflicts(dialect_name, table).returning(table.c.id)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int  # per gateway
    base: float  # seconds
    cap: float

    def delay(self, attempt: int) -> timedelta:
        """Exponential backoff with jitter: base * 2^(attempt-1), capped, times a factor in [0.5, 1.5)."""
        raw = min(self.cap, self.base * (2 ** max(attempt - 1, 0)))
        return timedelta(seconds=raw * (0.5 + random.random()))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A claimed outbound row: what the dispatcher needs to send it."""

    id: int
    recipient: str
    text: str
    key: str
    attempts: int
    gateway_index: int
    gateway_attempts: int
    label: str = ""  # who the recipient is, in words (recipient_label)
    demo: bool = False  # for a demo person: never handed to a gateway that texts phones
    priority: int = PRIORITY[Purpose.CHECKIN]


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the console says of the person an SMS is for."""

    id: int
    role: str
    name: str
    level: int | None
    area: str | None


def recipient_label(*, purpose: str | None, person: Recipient | None) -> str:
    """Say who an SMS is for and why, in words a person reading the console knows; never the number.

    `person` is None for a number not on the roster. Staff are named. A focal point is only their
    roster id: a villager's name in a log, beside the last digits of their number, would point at
    an informant.
    """
    if person is None:
        who = "not on the roster"
    elif person.role == Role.OFFICER:
        who = f"officer {person.name}, level {person.level or 1}, {person.area or 'everywhere'}"
    elif person.role == Role.ADMIN:
        who = f"admin {person.name}"
    else:
        who = f"{person.role.replace('_', ' ')} #{person.id}"
    return f"{who}; {purpose}" if purpose else who


def _demo_rows(conn: Connection, claimed: Sequence[Row[Any]]) -> set[int]:
    """The claimed row ids whose SMS is for a demo person (one query, by the rows' person ids)."""
    wanted = sorted({r.person_id for r in claimed if r.person_id is not None})
    demo = set(conn.execute(_DEMO_PEOPLE, {"ids": wanted}).scalars()) if wanted else set()
    return {r.id for r in claimed if r.person_id in demo}


def _labels(conn: Connection, claimed: Sequence[Row[Any]]) -> dict[int, str]:
    """Claimed row id -> who its SMS is for (recipient_label), the recipients read in one query."""
    wanted = sorted({r.person_id for r in claimed if r.person_id is not None})
    people = {p.id: Recipient(*p) for p in conn.execute(_PEOPLE, {"ids": wanted})} if wanted else {}
    return {r.id: recipient_label(purpose=r.purpose, person=people.get(r.person_id)) for r in claimed}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt did to its row."""

    status: MessageStatus
    attempts: int
    gateway_index: int
    gateway_attempts: int
    next_attempt_at: datetime | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    sent_at: datetime | None = None
    error: str | None = None


# Built once: constructing a statement costs more than running it (see bench/).
_T = cast(Table, Message.__table__)
_DUE = or_(
    and_(_T.c.status == MessageStatus.QUEUED, _T.c.next_attempt_at <= bindparam("now")),
    and_(_T.c.status == MessageStatus.SENDING, _T.c.claimed_until < bindparam("now")),
)
# Only outbound rows are ever queued or sending; each query walks its own partial index, whose
# condition (QUEUED, SENDING) it repeats with the value written in (app/models.py).
_DUE_IDS = (
    select(_T.c.id)
    .where(
        QUEUED,
        _T.c.priority <= bindparam("max_priority"),
        _T.c.next_attempt_at <= bindparam("now"),
    )
    .order_by(_T.c.priority, _T.c.next_attempt_at)
    .limit(bindparam("limit"))
)
_STALE_IDS = select(_T.c.id).where(SENDING, _T.c.claimed_until < bindparam("now")).limit(bindparam("limit"))
_DUE_IDS_SKIP_LOCKED = _DUE_IDS.with_for_update(skip_locked=True)
_STALE_IDS_SKIP_LOCKED = _STALE_IDS.with_for_update(skip_locked=True)
_CLAIM = (
    update(_T)
    .where(_T.c.id.in_(bindparam("ids", expanding=True)), _T.c.direction == Direction.OUTBOUND, _DUE)
    .values(status=MessageStatus.SENDING, claim_token=bindparam("token"), claimed_until=bindparam("until"))
    .returning(
        _T.c.id,
        _T.c.recipient,
        _T.c.text,
        _T.c.idempotency_key,
        _T.c.attempts,
        _T.c.gateway_index,
        _T.c.gateway_attempts,
        _T.c.person_id,
        _T.c.purpose,
        _T.c.priority,
    )
)
_PEOPLE = select(Person.id, Person.role, Person.name, Person.level, Person.area).where(
    Person.id.in_(bindparam("ids", expanding=True))
)
_DEMO_PEOPLE = select(Person.id).where(Person.id.in_(bindparam("ids", expanding=True)), Person.demo.is_(True))
# Why an SMS for a demo person is failed, not sent: its number is invented but may be someone's.
NOT_FOR_DEMO = "not sent: the recipient is a demo person (kengele demo load), whose number is invented"
_RECORD = (
    update(_T)
    .where(_T.c.id == bindparam("b_id"), _T.c.claim_token == bindparam("b_token"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        gateway_index=bindparam("b_gateway_index"),
        gateway_attempts=bindparam("b_gateway_attempts"),
        next_attempt_at=bindparam("b_next_attempt_at"),
        provider=bindparam("b_provider"),
        provider_message_id=bindparam("b_provider_message_id"),
        sent_at=bindparam("b_sent_at"),
        error=bindparam("b_error"),
        claim_token=None,
        claimed_until=None,
    )
)


# Claimed rows given back untouched: not attempted (no slot of a paced gateway, or a failed pass).
_RELEASE = (
    update(_T)
    .where(
        _T.c.id.in_(bindparam("ids", expanding=True)),
        _T.c.claim_token == bindparam("token"),
        _T.c.status == MessageStatus.SENDING,
    )
    .values(status=MessageStatus.QUEUED, claim_token=None, claimed_until=None)
)
_RELEASE_ALL = (  # the rows `sending`, few, found through ix_messages_stale
    update(_T)
    .where(_T.c.claim_token == bindparam("token"), SENDING)
    .values(status=MessageStatus.QUEUED, claim_token=None, claimed_until=None)
)
PURPOSE_OF_PRIORITY = {1: "notices and updates", 2: "replies", 3: "check-ins"}
# The notice admins get when a gateway has spent NOTICE_SHARE of its daily budget.
BUDGET_NOTICE = (
    "Kengele: {gateway} has sent {spent} of its {budget} SMS for {day}. At {stop}, replies and "
    "check-ins stop for the day; at {budget}, notices; forwards and escalations go on."
)


# Alerts waiting to be processed above which the dispatcher sends only what officers must read now.
URGENT_BACKLOG = 20


class Dispatcher(Worker):
    """Claims due outbound rows and sends each through the gateways, in order."""

    name = "dispatcher"

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        gateways: Sequence[Gateway],
        policy: RetryPolicy,
        signals: Signals,
        concurrency: int = 4,
        lease: float = 120.0,
        poll: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        send_timeout: float = 10.0,
        pacer: Pacer | None = None,
    ) -> None:
        if not gateways:
            raise ValueError("the dispatcher needs at least one gateway")
        super().__init__(signals=signals, every=poll, factory=factory, wake=signals.outbox)
        self.gateways = list(gateways)
        self.policy = policy
        self.concurrency = concurrency
        self.lease = timedelta(seconds=lease)
        self.clock = clock
        # Who each SMS is for, in words, only for a gateway that shows it to a person (the console):
        # providers that text phones are spared the look-up.
        self.labelled = any(not gateway.reaches_phones for gateway in self.gateways)
        # Demo people are looked up only where a gateway would text their invented numbers.
        self.texting = [gateway.name for gateway in self.gateways if gateway.reaches_phones]
        # Claim no more than can be sent, at worst, well within the lease.
        self.claim_limit = max(1, min(64, int(concurrency * lease / (send_timeout * 2))))
        # Pacing and budgets (KENGELE_SEND_RATE, KENGELE_DAILY_SMS_BUDGET); none: every gateway
        # sends as fast as it answers. A paced first gateway is claimed for only what it can send
        # within the pacer's horizon, so the rest stays queued for the next pass to order again.
        self.pacer = pacer or Pacer(rates={}, budgets={})
        self.claim_limit = self.pacer.claim_limit(self.gateways[0].name, self.claim_limit)
        # After a pass that could send nothing for want of a slot: how long to rest (seconds).
        self._idle_for = 0.0
        self._day = ""  # the budget day of the pass under way
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kengele-send")
        self._threads_warm = False

    def start(self) -> None:
        """Start sending; first warn when the roster has demo people and a gateway texts phones."""
        self.warn_of_demo_people()
        super().start()

    def warn_of_demo_people(self) -> int:
        """Log a warning when demo people are on the roster and a gateway texts phones; how many."""
        if not self.texting:
            return 0
        try:
            with self.transaction() as session:
                count = session.scalar(select(func.count(Person.id)).where(Person.demo.is_(True))) or 0
        except SQLAlchemyError:  # the workers' own passes report a database that is not there
            log.exception("could not look for demo people")
            return 0
        if count:
            log.warning(
                "demo people on the roster: their SMS are failed, not texted; deactivate them, "
                "or start from a new database",
                extra={"demo_people": count, "gateways": self.texting},
            )
        return count

    def stop(self) -> None:
        """Stop after the pass under way; the sends in flight finish."""
        super().stop()
        self._pool.shutdown(wait=True, cancel_futures=False)

    def step(self) -> Pass:
        """Send what is due; idle when nothing was, rest a little while webhooks queue."""
        started = time.perf_counter()
        if self.run_once() == 0:
            return Pass.IDLE
        if self._idle_for > 0:  # every row waits for a slot or a Retry-After: rest till then
            self.rest(min(self._idle_for, 5.0))
            return Pass.AGAIN
        if self.signals.intake_busy():  # storing comes before sending: leave the webhooks the CPU
            self.rest(3.0 * (time.perf_counter() - started))
        return Pass.AGAIN

    def urgent_only(self) -> bool:
        """Tell whether to send only what officers must read now (forwards, escalations, notices).

        While alerts wait to be processed, replies and check-ins leave the CPU to the processing.
        """
        return self.signals.backlog() > URGENT_BACKLOG

    # -- one pass ----------------------------------------------------------------------------
    def claim(self, limit: int = 64) -> tuple[str, list[Outgoing]]:
        """Take up to `limit` due rows (or rows whose sender died mid-send) for this dispatcher."""
        now = self.clock()
        token = uuid.uuid4().hex
        with self.transaction() as session:
            conn = session.connection()
            locking = conn.dialect.name == "postgresql"
            max_priority = PRIORITY[Purpose.NOTICE] if self.urgent_only() else max(PRIORITY.values())
            params = {"now": now, "limit": limit, "max_priority": max_priority}
            ids = list(conn.execute(_DUE_IDS_SKIP_LOCKED if locking else _DUE_IDS, params).scalars())
            ids += conn.execute(_STALE_IDS_SKIP_LOCKED if locking else _STALE_IDS, params).scalars()
            if not ids:
                return token, []
            claimed = conn.execute(
                _CLAIM, {"ids": ids, "now": now, "token": token, "until": now + self.lease}
            ).all()
            labels = _labels(conn, claimed) if self.labelled else {}
            demo = _demo_rows(conn, claimed) if self.texting else set()
        rows = [
            Outgoing(
                r.id,
                r.recipient or "",
                r.text,
                r.idempotency_key or str(r.id),
                r.attempts,
                r.gateway_index,
                r.gateway_attempts,
                labels.get(r.id, ""),
                r.id in demo,
                r.priority,
            )
            # What officers must read first takes the first slots of a paced gateway.
            for r in sorted(claimed, key=lambda r: (r.priority, r.id))
        ]
        return token, rows

    def run_once(self) -> int:
        """Claim what is due, send it (in parallel), and record each outcome as soon as it is known.

        Outcomes are written in small groups as sends finish, so a row is never left `sending`
        longer than its own send, a delivery receipt finds its provider id, and a crash repeats at
        most the sends in flight. A pass that fails gives back at once whatever it could not record
        (queued again, not `sending` until the lease ends), then raises.
        """
        token, rows = self.claim(self.claim_limit)
        OUTBOX_DEPTH.set(len(rows))
        self._idle_for = 0.0
        if not rows:
            return 0
        self._warm_threads()
        try:
            plan = self._plan(rows)
        except Exception:
            self._release_all(token)
            raise
        finished: list[tuple[Outgoing, Outcome]] = []
        given_back: list[Outgoing] = []
        failure: Exception | None = None
        for row, decision in plan:
            if decision.verdict == Verdict.BUDGET:
                finished.append((row, self._over_budget(row)))
            elif decision.verdict == Verdict.WAIT:
                given_back.append(row)
        futures = {
            self._pool.submit(self._attempt, row, decision.at if self._paced(row) else None): row
            for row, decision in plan
            if decision.verdict == Verdict.SEND
        }
        flushed = time.perf_counter()
        unsent: dict[tuple[str, str], int] = {}
        for future in as_completed(futures):
            row, outcome = futures[future], future.result()
            name = self._gateway_of(row).name
            if name in self.pacer.budgets and (outcome is None or outcome.sent_at is None):
                unsent[(name, self._day)] = unsent.get((name, self._day), 0) + 1
            if outcome is None:
                given_back.append(row)
                continue
            finished.append((row, outcome))
            if len(finished) >= 16 or time.perf_counter() - flushed > 0.05:
                failure = self._record_keeping(token, finished, failure)
                flushed = time.perf_counter()
        if finished:
            failure = self._record_keeping(token, finished, failure)
        if finished and failure is not None:  # once more, all that is left: the fault may be gone
            failure = self._record_keeping(token, finished, None)
        if given_back or failure is not None:
            self._release(token, [row.id for row in given_back] if failure is None else None)
        if unsent:
            self._give_back_budget(unsent)
        if failure is not None:
            raise failure
        if given_back and not futures and not finished:
            waits = [d.at for _, d in plan if d.verdict == Verdict.WAIT]
            self._idle_for = max(0.01, min(waits) - time.time()) if waits else 0.0
        return len(rows)

    def _warm_threads(self) -> None:
        """Ready every send thread for the paced gateways before the first slots are reserved.

        A cold thread builds its SDK client (and the SDK imports its message API) in more than LATE:
        warmed only when its slot came, it would come late and give its row back for the next pass.
        """
        if self._threads_warm:
            return
        self._threads_warm = True
        paced = [gateway for gateway in self.gateways if self.pacer.paced(gateway.name)]
        if not paced:
            return
        # Every thread waits for the others, so each of them (not one thread, N times) is warmed.
        ready = threading.Barrier(self.concurrency)

        def warm() -> None:
            for gateway in paced:
                gateway.warm()
            ready.wait(timeout=5.0)

        for future in [self._pool.submit(warm) for _ in range(self.concurrency)]:
            try:
                future.result()
            except Exception:  # a send reports what is wrong with a gateway; this only saves time
                log.warning("could not ready a send thread", exc_info=True)

    def _record_keeping(
        self, token: str, finished: list[tuple[Outgoing, Outcome]], failure: Exception | None
    ) -> Exception | None:
        """Record `finished` (emptying it) unless a write of this pass already failed; the failure."""
        if failure is not None:
            return failure
        try:
            self._record(token, finished)
        except SQLAlchemyError as exc:
            log.warning("could not record sends; trying again at the end of the pass: %s", type(exc).__name__)
            return exc
        finished.clear()
        return None

    def _release(self, token: str, ids: list[int] | None) -> None:
        """Put claimed rows back in the queue untouched (`ids` None: all this pass still holds)."""
        try:
            with self.transaction() as session:
                if ids is None:
                    session.connection().execute(_RELEASE_ALL, {"token": token})
                elif ids:
                    session.connection().execute(_RELEASE, {"ids": ids, "token": token})
        except SQLAlchemyError:  # the lease gives them back later
            log.exception("could not give back claimed rows", extra={"rows": len(ids or [])})

    def _release_all(self, token: str) -> None:
        self._release(token, None)

    def _gateway_of(self, row: Outgoing) -> Gateway:
        return self.gateways[min(row.gateway_index, len(self.gateways) - 1)]

    def _paced(self, row: Outgoing) -> bool:
        return self.pacer.paced(self._gateway_of(row).name)

    def _plan(self, rows: list[Outgoing]) -> list[tuple[Outgoing, Decision]]:
        """Ask the pacer, gateway by gateway, when each claimed row may go (rows in priority order)."""
        by_gateway: dict[str, list[Outgoing]] = {}
        for row in rows:
            by_gateway.setdefault(self._gateway_of(row).name, []).append(row)
        decided: dict[int, Decision] = {}
        self._day = ""
        for name, group in by_gateway.items():
            priorities = [row.priority for row in group]
            if self.pacer.paced(name):
                with self.transaction() as session:
                    reservation = self.pacer.reserve(session=session, gateway=name, priorities=priorities)
                    if reservation.notice_due:
                        self._notify_admins(session, name, reservation.day, reservation.spent)
            else:
                reservation = self.pacer.reserve(session=None, gateway=name, priorities=priorities)
            self._day = reservation.day
            for row, decision in zip(group, reservation.decisions, strict=True):
                decided[row.id] = decision
                if decision.verdict == Verdict.WAIT:
                    SEND_DEFERRED.labels(name, "rate").inc()
        return [(row, decided[row.id]) for row in rows]

    def _notify_admins(self, session: Session, gateway: str, day: str, spent: int) -> None:
        """Queue ONE notice per admin, gateway and day: most of the day's budget is spent."""
        budget = self.pacer.budgets[gateway]
        admins = session.execute(
            select(Person.id, Person.phone, Person.language).where(
                Person.role == Role.ADMIN, Person.active.is_(True), Person.opted_out.is_(False)
            )
        ).all()
        text = BUDGET_NOTICE.format(
            gateway=gateway, spent=spent, budget=budget, day=day, stop=int(budget * RESERVE_SHARE)
        )
        for admin in admins:
            enqueue(
                session=session,
                recipient=admin.phone,
                text=text,
                purpose=Purpose.NOTICE,
                key=f"budget:{gateway}:{day}:{admin.id}",
                person_id=admin.id,
                language=admin.language,
            )
        log.warning(
            "daily SMS budget mostly spent",
            extra={"gateway": gateway, "spent": spent, "budget": budget, "admins": len(admins)},
        )
        self.signals.outbox_ready()

    def _give_back_budget(self, unsent: dict[tuple[str, str], int]) -> None:
        """Return budget reserved for SMS that were not sent (failed, or given back unsent)."""
        try:
            with self.transaction() as session:
                for (gateway, day), count in unsent.items():
                    self.pacer.give_back(session=session, gateway=gateway, day=day, count=count)
        except SQLAlchemyError:  # the count stays a little high: it errs towards spending less
            log.exception("could not give back unused budget")

    def _over_budget(self, row: Outgoing) -> Outcome:
        """The next gateway for a row its gateway's spent budget stops, or `failed` saying why."""
        index = min(row.gateway_index, len(self.gateways) - 1)
        name = self.gateways[index].name
        budget = self.pacer.budgets[name]
        SUPPRESSED.labels("budget").inc()
        why = (
            f"{name}: not sent: the daily SMS budget ({budget}, KENGELE_DAILY_SMS_BUDGET) is spent "
            f"for {PURPOSE_OF_PRIORITY.get(row.priority, 'this purpose')}; forwards and escalations go on"
        )
        log.warning("send stopped: daily budget", extra={"message_id": row.id, "gateway": name})
        if index + 1 < len(self.gateways):
            return Outcome(
                MessageStatus.QUEUED, row.attempts, index + 1, 0, next_attempt_at=self.clock(), error=why
            )
        return Outcome(MessageStatus.FAILED, row.attempts, index, row.gateway_attempts, error=why)

    def _record(self, token: str, finished: list[tuple[Outgoing, Outcome]]) -> None:
        params = [
            {f"b_{k}": v for k, v in asdict(outcome).items()} | {"b_id": row.id, "b_token": token}
            for row, outcome in finished
        ]
        sent: list[tuple[str | None, str | None]] = [
            (o.provider, o.provider_message_id) for _, o in finished if o.provider_message_id
        ]
        try:
            with self.transaction() as session:
                session.connection().execute(_RECORD, params)
                if sent:
                    adopt_early_receipts(session=session, sent=sent)
        except IntegrityError:  # a provider id seen before: record each alone rather than send again
            for one in params:
                self._record_alone(one)

    def _record_alone(self, params: dict[str, Any]) -> None:
        try:
            with self.transaction() as session:
                session.connection().execute(_RECORD, params)
        except IntegrityError:
            log.error(
                "a provider answered with a message id it gave before", extra={"message_id": params["b_id"]}
            )
            reused = (
                f"{params['b_provider']} answered with a reused message id {params['b_provider_message_id']}"
            )
            with self.transaction() as session:
                session.connection().execute(
                    _RECORD, params | {"b_provider_message_id": None, "b_error": reused}
                )

    def _attempt(self, row: Outgoing, slot: float | None = None) -> Outcome | None:
        """Send one row through its current gateway at its slot; what happened (None: not tried)."""
        index = min(row.gateway_index, len(self.gateways) - 1)
        gateway = self.gateways[index]
        if row.demo and gateway.reaches_phones:  # before any slot: it is not sent, so never late
            OUTBOUND.labels(gateway.name, "demo").inc()
            log.warning("send refused: a demo person", extra={"message_id": row.id, "gateway": gateway.name})
            error = f"{gateway.name}: {NOT_FOR_DEMO}"
            return Outcome(MessageStatus.FAILED, row.attempts, index, row.gateway_attempts, error=error)
        if slot is not None:
            gateway.warm()  # what takes time once per thread is done before the slot, not in it
            wait = slot - time.time()
            if wait > 0:
                time.sleep(wait)
            # A thread that comes late would crowd its send into the next slot's second.
            if time.time() > slot + LATE:
                SEND_DEFERRED.labels(gateway.name, "late").inc()
                return None
        if self.pacer.paused_until(gateway.name) > time.time():  # a Retry-After came meanwhile
            SEND_DEFERRED.labels(gateway.name, "paused").inc()
            return None
        try:
            result = gateway.send(to=row.recipient, text=row.text, idempotency_key=row.key, label=row.label)
        except SendError as exc:
            OUTBOUND.labels(gateway.name, "retryable" if exc.retryable else "permanent").inc()
            if exc.retry_after is not None:
                self._pause(gateway.name, exc.retry_after)
            outcome = self._after_failure(row, index, exc)
            log.warning(
                "send failed",
                extra={
                    "message_id": row.id,
                    "gateway": gateway.name,
                    "error": exc.reason,
                    "next": outcome.status,
                },
            )
            return outcome
        except Exception as exc:
            OUTBOUND.labels(gateway.name, "crash").inc()
            log.exception("gateway raised", extra={"message_id": row.id, "gateway": gateway.name})
            crash = SendError(f"{gateway.name} crashed: {exc!r}", retryable=True)
            return self._after_failure(row, index, crash)
        OUTBOUND.labels(gateway.name, "sent").inc()
        return Outcome(
            status=MessageStatus.DELIVERED
            if result.status == DeliveryStatus.DELIVERED
            else MessageStatus.SENT,
            attempts=row.attempts + 1,
            gateway_index=index,
            gateway_attempts=row.gateway_attempts,
            provider=gateway.name,
            provider_message_id=result.provider_message_id,
            sent_at=self.clock(),
        )

    def _pause(self, gateway: str, seconds: float) -> None:
        """Send nothing through `gateway` for `seconds`, here and (shared row) in every replica."""
        log.warning("gateway asked us to wait", extra={"gateway": gateway, "retry_after": seconds})
        try:
            with self.transaction() as session:
                self.pacer.pause(session=session, gateway=gateway, seconds=seconds)
        except SQLAlchemyError:  # this process still waits: the pause is kept in memory first
            log.exception("could not share a gateway's pause", extra={"gateway": gateway})

    def _after_failure(self, row: Outgoing, index: int, exc: SendError) -> Outcome:
        attempts = row.attempts + 1
        name = self.gateways[index].name
        tried = f"{name}: {exc.reason}"
        last = index + 1 >= len(self.gateways)
        if not exc.retryable and (exc.recipient or last):
            return Outcome(
                MessageStatus.FAILED, attempts, index, row.gateway_attempts + 1, provider=name, error=tried
            )
        if not exc.retryable:  # this gateway refuses it (account, sender id): the next one may not
            return Outcome(
                MessageStatus.QUEUED, attempts, index + 1, 0, next_attempt_at=self.clock(), error=tried
            )
        gateway_attempts = row.gateway_attempts + 1
        if gateway_attempts < self.policy.max_attempts:
            later = self.clock() + max(
                self.policy.delay(gateway_attempts), timedelta(seconds=exc.retry_after or 0.0)
            )
            return Outcome(
                MessageStatus.QUEUED, attempts, index, gateway_attempts, next_attempt_at=later, error=tried
            )
        if not last:  # fail over at once to the next gateway
            return Outcome(
                MessageStatus.QUEUED, attempts, index + 1, 0, next_attempt_at=self.clock(), error=tried
            )
        return Outcome(MessageStatus.FAILED, attempts, index, gateway_attempts, provider=name, error=tried)


def record_delivery(*, session: Session, report: DeliveryReport, gateways: int = 1) -> Message | None:
    """Store a delivery receipt and move its message forward (never backward).

    A receipt saying the SMS never arrived sends it again through the next gateway of
    KENGELE_GATEWAY, when there is one; after the last, the message stays `failed` (and a failed
    forward is handed on to the next officer by the escalator).
    """
    message = session.scalar(
        select(Message).where(
            Message.direction == Direction.OUTBOUND,
            Message.provider == report.provider,
            Message.provider_message_id == report.provider_message_id,
        )
    )
    session.add(
        DeliveryEvent(
            message_id=message.id if message else None,
            provider=report.provider,
            provider_message_id=report.provider_message_id,
            status=report.status,
            provider_status=report.provider_status,
            error=report.error,
            raw=json.dumps(report.raw, ensure_ascii=False),
        )
    )
    DELIVERY.labels(report.provider, report.status).inc()
    if message is not None:
        if (
            report.status == DeliveryStatus.FAILED
            and message.status != MessageStatus.DELIVERED
            and message.gateway_index + 1 < gateways
            and message.text  # one that retention emptied is history: never sent again, blank
        ):
            message.status = MessageStatus.QUEUED
            message.error = f"{report.provider}: {report.error or report.provider_status}"
            message.gateway_index += 1
            message.gateway_attempts = 0
            message.next_attempt_at = utcnow()
            message.provider_message_id = None  # the next gateway's id; this receipt stays in the history
            return message
        _apply(message, report.status, report.error)
    return message


def receive_receipt(*, factory: sessionmaker[Session], report: DeliveryReport, gateways: int) -> bool:
    """Record a delivery receipt in its own transaction; True when its SMS is queued again to send now."""
    with transaction(factory) as session:
        message = record_delivery(session=session, report=report, gateways=gateways)
        return message is not None and message.status == MessageStatus.QUEUED


def adopt_early_receipts(*, session: Session, sent: list[tuple[str | None, str | None]]) -> None:
    """Link receipts that arrived before their send was recorded, and apply them."""
    ids = [pmid for _, pmid in sent if pmid]
    orphans = session.scalars(_ORPHANS, {"ids": ids}).all()
    for event in orphans:
        message = session.scalar(
            _BY_PROVIDER_ID, {"provider": event.provider, "pmid": event.provider_message_id}
        )
        if message is not None:
            event.message_id = message.id
            _apply(message, event.status, event.error)


def _apply(message: Message, reported: str, error: str | None) -> None:
    """Move a message to the status a receipt reports (DeliveryStatus.UNKNOWN moves nothing)."""
    if reported not in _RANK:
        return
    status = MessageStatus(reported)
    if status == MessageStatus.FAILED or _RANK[status] > _RANK.get(message.status, 0):
        if message.status != MessageStatus.FAILED or status == MessageStatus.FAILED:
            message.status = status
        if status == MessageStatus.DELIVERED:
            message.delivered_at = utcnow()
        if error:
            message.error = error


_ORPHANS = select(DeliveryEvent).where(
    DeliveryEvent.message_id.is_(None),
    DeliveryEvent.provider_message_id.in_(bindparam("ids", expanding=True)),
)
_BY_PROVIDER_ID = select(Message).where(
    Message.direction == Direction.OUTBOUND,
    Message.provider == bindparam("provider"),
    Message.provider_message_id == bindparam("pmid"),
)
