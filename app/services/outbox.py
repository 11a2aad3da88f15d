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
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import Insert, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import insert_ignoring_conflicts, utcnow
from app.metrics import DELIVERY, OUTBOUND, OUTBOX_DEPTH
from app.models import DeliveryEvent, Message
from gateways.base import DeliveryReport, Gateway, SendError

log = logging.getLogger("kengele.outbox")

PURPOSES = ("alert_forward", "escalation", "checkin", "reply", "update", "notice")
# Our statuses in the order a message moves through them; a late receipt never moves one back.
_RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "failed": 4}


def enqueue(
    *,
    session: Session,
    recipient: str,
    text: str,
    purpose: str,
    key: str,
    incident_id: int | None = None,
    person_id: int | None = None,
    in_reply_to: int | None = None,
    language: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Queue one SMS in the caller's transaction; a second enqueue with the same key does nothing."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    now = now or utcnow()
    values = {
        "direction": "outbound",
        "recipient": recipient,
        "text": text,
        "purpose": purpose,
        "status": "queued",
        "idempotency_key": key,
        "incident_id": incident_id,
        "person_id": person_id,
        "in_reply_to": in_reply_to,
        "language": language,
        "created_at": now,
        "next_attempt_at": now,
        "phone_valid": True,
        "attempts": 0,
        "gateway_index": 0,
        "gateway_attempts": 0,
    }
    connection = session.connection()
    return connection.execute(_enqueue_statement(connection.dialect.name), values).scalar() is not None


@lru_cache(maxsize=4)
def _enqueue_statement(dialect_name: str) -> Insert:
    table = Message.__table__
    return insert_ignoring_conflicts(dialect_name, table).returning(table.c.id)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int  # per gateway
    base: float  # seconds
    cap: float

    def delay(self, attempt: int) -> timedelta:
        """Exponential backoff with jitter: base * 2^(attempt-1), capped, times a factor in [0.5, 1.5)."""
        raw = min(self.cap, self.base * (2 ** max(attempt - 1, 0)))
        return timedelta(seconds=raw * (0.5 + random.random()))


class Dispatcher:
    """Claims due outbound rows and sends each through the gateways, in order."""

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        gateways: Sequence[Gateway],
        policy: RetryPolicy,
        concurrency: int = 4,
        lease: float = 120.0,
        poll: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if not gateways:
            raise ValueError("the dispatcher needs at least one gateway")
        self.factory = factory
        self.gateways = list(gateways)
        self.policy = policy
        self.concurrency = concurrency
        self.lease = timedelta(seconds=lease)
        self.poll = poll
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kengele-send")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kengele-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._pool.shutdown(wait=True, cancel_futures=False)

    def notify(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except Exception:
                log.exception("dispatcher pass failed")
                sent = 0
            if sent == 0:
                self._wake.wait(self.poll)
                self._wake.clear()

    # -- one pass ----------------------------------------------------------------------------
    def claim(self, limit: int = 64) -> tuple[str, list[Message]]:
        """Take up to `limit` due rows (or rows whose sender died mid-send) for this dispatcher."""
        now = self.clock()
        token = uuid.uuid4().hex
        due = or_(
            and_(Message.status == "queued", Message.next_attempt_at <= now),
            and_(Message.status == "sending", Message.claimed_until < now),
        )
        with self.factory() as session, session.begin():
            query = (
                select(Message.id)
                .where(Message.direction == "outbound", due)
                .order_by(Message.next_attempt_at)
                .limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if not ids:
                return token, []
            session.execute(
                update(Message)
                .where(Message.id.in_(ids), Message.direction == "outbound", due)
                .values(status="sending", claim_token=token, claimed_until=now + self.lease)
                .execution_options(synchronize_session=False)
            )
            rows = list(
                session.scalars(select(Message).where(Message.claim_token == token).order_by(Message.id))
            )
        return token, rows

    def run_once(self) -> int:
        """Claim what is due, send it (in parallel), record every outcome in one transaction."""
        token, rows = self.claim()
        OUTBOX_DEPTH.set(len(rows))
        if not rows:
            return 0
        outcomes = list(self._pool.map(self._attempt, rows))
        with self.factory() as session, session.begin():
            for row, values in zip(rows, outcomes, strict=True):
                session.execute(
                    update(Message)
                    .where(Message.id == row.id, Message.claim_token == token)
                    .values(**values, claim_token=None, claimed_until=None)
                    .execution_options(synchronize_session=False)
                )
        return len(rows)

    def _attempt(self, row: Message) -> dict[str, object]:
        """Send one row through its current gateway; the column values that record what happened."""
        index = min(row.gateway_index, len(self.gateways) - 1)
        gateway = self.gateways[index]
        key = row.idempotency_key or str(row.id)
        try:
            result = gateway.send(to=row.recipient or "", text=row.text, idempotency_key=key)
        except SendError as exc:
            OUTBOUND.labels(gateway.name, "retryable" if exc.retryable else "permanent").inc()
            values = self._after_failure(row, index, exc)
            log.warning(
                "send failed",
                extra={
                    "message_id": row.id,
                    "gateway": gateway.name,
                    "error": exc.reason,
                    "next": values["status"],
                },
            )
            return values
        except Exception as exc:
            OUTBOUND.labels(gateway.name, "crash").inc()
            log.exception("gateway raised", extra={"message_id": row.id, "gateway": gateway.name})
            return self._after_failure(
                row, index, SendError(f"{gateway.name} crashed: {exc!r}", retryable=True)
            )
        OUTBOUND.labels(gateway.name, "sent").inc()
        return {
            "status": result.status if result.status in ("sent", "delivered") else "sent",
            "provider": gateway.name,
            "provider_message_id": result.provider_message_id,
            "sent_at": self.clock(),
            "attempts": row.attempts + 1,
            "gateway_index": index,
            "error": None,
        }

    def _after_failure(self, row: Message, index: int, exc: SendError) -> dict[str, object]:
        attempts = row.attempts + 1
        tried = f"{self.gateways[index].name}: {exc.reason}"
        if not exc.retryable:
            return {
                "status": "failed",
                "attempts": attempts,
                "error": tried,
                "provider": self.gateways[index].name,
            }
        gateway_attempts = row.gateway_attempts + 1
        if gateway_attempts < self.policy.max_attempts:
            return {
                "status": "queued",
                "attempts": attempts,
                "gateway_attempts": gateway_attempts,
                "next_attempt_at": self.clock() + self.policy.delay(gateway_attempts),
                "error": tried,
            }
        if index + 1 < len(self.gateways):  # fail over at once to the next gateway
            return {
                "status": "queued",
                "attempts": attempts,
                "gateway_index": index + 1,
                "gateway_attempts": 0,
                "next_attempt_at": self.clock(),
                "error": tried,
            }
        return {
            "status": "failed",
            "attempts": attempts,
            "error": tried,
            "provider": self.gateways[index].name,
        }


def record_delivery(*, session: Session, report: DeliveryReport) -> Message | None:
    """Store a delivery receipt and move its message forward (never backward)."""
    message = session.scalar(
        select(Message).where(
            Message.direction == "outbound",
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
    if message is None or report.status not in _RANK:
        return message
    if report.status == "failed" or _RANK[report.status] > _RANK.get(message.status, 0):
        if message.status != "failed" or report.status == "failed":
            message.status = report.status
        if report.status == "delivered":
            message.delivered_at = utcnow()
        if report.error:
            message.error = report.error
    return message
