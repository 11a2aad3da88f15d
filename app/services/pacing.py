"""Outbound pacing and daily budgets per gateway, shared by every dispatcher through the database.

Where the state lives: one `send_pacing` row per gateway holds its next free send slot (epoch
seconds) and the SMS reserved today. A dispatcher pass locks that row (SELECT ... FOR UPDATE on
PostgreSQL; SQLite's single writer does the same), reserves slots `1.15 / rate` seconds apart for
the rows it claimed, and commits. Every thread of every replica draws from the same row, so the
rate holds for all of them together, whatever their number; a per-replica share would need each
replica to know how many others run, and would waste the share of an idle one.

Slots are reserved in priority order and only up to HORIZON ahead; a row that gets none goes back
to the queue untouched, so the next pass (a forward queued meanwhile is claimed before any
check-in) decides again. The 15 % added to the spacing keeps a late thread or a slow request from
putting `rate + 1` requests into one second at the provider's end.

The budget: forwards and escalations are never stopped by it (an officer must learn of an attack
whatever it costs); replies and check-ins stop at RESERVE_SHARE of it, so the last tenth is kept
for forwards, escalations, notices and updates, which stop at the budget itself. Admins are told
once per gateway and day, when NOTICE_SHARE is reached (the notice goes within the budget).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from app.db import insert_ignoring_conflicts
from app.models import SendPacing

# Seconds ahead a pass reserves slots: no further, so a forward queued meanwhile waits at most this.
HORIZON = 1.0
# Added to the spacing of slots: `rate` sends span at least 1.15 s, so a request that reaches the
# provider up to 150 ms later than its slot (a busy CPU, a slow connect) still leaves every
# second with at most `rate` requests. Measured on a loaded 2-core machine: 0.1 was not enough.
MARGIN = 0.15
# A send that would start later than its slot by more than this is given back, not crowded in.
LATE = 0.03
# Share of the daily budget after which only forwards and escalations are sent.
RESERVE_SHARE = 0.9
# Share of the daily budget at which admins are told (once per gateway and day).
NOTICE_SHARE = 0.8

_T = cast(Table, SendPacing.__table__)


class Verdict(StrEnum):
    """What the pacer says of one claimed row."""

    SEND = "send"  # at its slot
    WAIT = "wait"  # no slot within HORIZON (or the gateway is paused): back to the queue
    BUDGET = "budget"  # the gateway's daily budget is spent for its purpose


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    at: float  # SEND: the slot (epoch seconds); WAIT: when a slot may be free


@dataclass(frozen=True, slots=True)
class Reservation:
    """The pacer's answer for the rows of one gateway, in the order they were asked for."""

    decisions: list[Decision]
    day: str
    spent: int  # reserved today, after this reservation
    notice_due: bool  # the notice share was reached and admins were not told today


class Pacer:
    """Reserves send slots and budget for each gateway in the shared `send_pacing` rows."""

    def __init__(
        self,
        *,
        rates: Mapping[str, float | None],
        budgets: Mapping[str, int | None],
        timezone: str = "UTC",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rates = {name: rate for name, rate in rates.items() if rate}
        self.budgets = {name: budget for name, budget in budgets.items() if budget}
        self.tz = ZoneInfo(timezone)
        self.clock = clock
        # Pauses this process knows of (a 429's Retry-After), seen by every thread at once; the
        # shared row holds them for the other replicas.
        self._paused: dict[str, float] = {}
        self._lock = threading.Lock()

    def paced(self, gateway: str) -> bool:
        """Tell whether sends through `gateway` need slots or budget from the database."""
        return gateway in self.rates or gateway in self.budgets

    def spacing(self, gateway: str) -> float:
        """Seconds between two slots of `gateway` (0: not paced)."""
        rate = self.rates.get(gateway)
        return (1.0 + MARGIN) / rate if rate else 0.0

    def claim_limit(self, gateway: str, default: int) -> int:
        """How many rows a pass should claim for `gateway`: what its rate can send within HORIZON."""
        rate = self.rates.get(gateway)
        return default if not rate else max(1, min(default, math.ceil(rate * HORIZON)))

    def paused_until(self, gateway: str) -> float:
        """The time until which this process knows `gateway` asked for no sends (0: none)."""
        with self._lock:
            return self._paused.get(gateway, 0.0)

    def day(self, now: float) -> str:
        """The local day (KENGELE_TIMEZONE) a budget counts, as YYYY-MM-DD."""
        return datetime.fromtimestamp(now, self.tz).date().isoformat()

    def reserve(self, *, session: Session | None, gateway: str, priorities: Sequence[int]) -> Reservation:
        """Decide, in order, for rows of `gateway` (their outbox PRIORITY) when each may go."""
        now = self.clock()
        day = self.day(now)
        if session is None or not self.paced(gateway):
            paused = self.paused_until(gateway)
            verdict = Decision(Verdict.WAIT, paused) if paused > now else Decision(Verdict.SEND, now)
            return Reservation([verdict] * len(priorities), day, 0, False)
        conn = session.connection()
        conn.execute(
            insert_ignoring_conflicts(conn.dialect.name, _T),
            {"gateway": gateway, "next_at": 0.0, "day": day, "spent": 0, "noticed": ""},
        )
        row = conn.execute(select(_T).where(_T.c.gateway == gateway).with_for_update()).one()
        spent = row.spent if row.day == day else 0
        budget = self.budgets.get(gateway)
        # Priority 0 (forwards, escalations): never stopped; 1 (notices, updates): at the budget;
        # the rest (replies, check-ins): at RESERVE_SHARE of it.
        stops = {1: budget, 2: math.floor(budget * RESERVE_SHARE)} if budget else {}
        spacing = self.spacing(gateway)
        slot = max(row.next_at, now, self.paused_until(gateway))
        decisions: list[Decision] = []
        for priority in priorities:
            stop = stops.get(min(priority, 2)) if stops else None
            if stop is not None and spent >= stop:
                decisions.append(Decision(Verdict.BUDGET, now))
            elif slot > now + HORIZON:
                decisions.append(Decision(Verdict.WAIT, slot))
            else:
                decisions.append(Decision(Verdict.SEND, slot))
                slot += spacing
                spent += 1
        notice_due = bool(budget) and spent >= NOTICE_SHARE * (budget or 0) and row.noticed != day
        conn.execute(
            update(_T)
            .where(_T.c.gateway == gateway)
            .values(
                next_at=max(row.next_at, slot if spacing else row.next_at),
                day=day,
                spent=spent,
                noticed=day if notice_due else row.noticed,
            )
        )
        return Reservation(decisions, day, spent, notice_due)

    def give_back(self, *, session: Session, gateway: str, day: str, count: int) -> None:
        """Return `count` of today's budget reserved for SMS that were not sent after all."""
        if count <= 0 or gateway not in self.budgets:
            return
        session.connection().execute(
            update(_T)
            .where(_T.c.gateway == gateway, _T.c.day == day, _T.c.spent >= count)
            .values(spent=_T.c.spent - count)
        )

    def pause(self, *, session: Session | None, gateway: str, seconds: float) -> float:
        """Send nothing more through `gateway` for `seconds` (a Retry-After); when it ends."""
        until = self.clock() + seconds
        with self._lock:
            self._paused[gateway] = max(self._paused.get(gateway, 0.0), until)
        if session is not None and self.paced(gateway):
            conn = session.connection()
            conn.execute(
                insert_ignoring_conflicts(conn.dialect.name, _T),
                {"gateway": gateway, "next_at": 0.0, "day": "", "spent": 0, "noticed": ""},
            )
            conn.execute(
                update(_T).where(_T.c.gateway == gateway, _T.c.next_at < until).values(next_at=until)
            )
        return until
