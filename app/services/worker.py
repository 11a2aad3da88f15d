"""The one shape of a background loop, and the signals the loops of a process give each other.

A worker is one named thread that runs one pass at a time. A pass that raises is logged with the
worker's name and followed by a pause that doubles with each failure in a row (up to
BACKOFF_CAP), so a database outage neither kills the thread nor floods the log, and a recovered
database is used again within seconds. Each pass opens its own sessions from the worker's
`factory`: never a request's, never one kept from pass to pass.

The workers of one process talk only through one `Signals`, made first and handed to each at
construction (see app/services/runtime.py): the intake's load, the processing backlog, the stored
messages handed to the processor and the dispatcher's wake-up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from sqlalchemy.orm import Session, sessionmaker

from app import db
from app.outage import Outage, unavailable

log = logging.getLogger("kengele.worker")

# The longest pause after failed passes (unless a worker's own period is longer).
BACKOFF_CAP = 10.0
# Webhooks per commit (moving average) from which intake is a burst and comes first. A steady
# stream waits for our own processing transactions and makes batches of a few: not a burst.
BURST_BATCH = 8.0
# A burst is over once the intake has not committed for this long (seconds).
BURST_QUIET = 0.05


@dataclass(eq=False, slots=True)
class Signals:
    """What the workers of one process tell each other; made once, given to each at construction.

    Each load value has one writer and is read without a lock: a reader may see it a moment late,
    which a load signal can afford, and the hot paths pay nothing for it.
    """

    # intake -> processor: ids of fresh messages this process claimed (None: the processor stops)
    stored: queue.SimpleQueue[int | None] = field(default_factory=queue.SimpleQueue)
    # anyone who committed outbound rows -> dispatcher: look now rather than at the next poll
    outbox: threading.Event = field(default_factory=threading.Event)
    # written by the processor: messages taken from `stored` and not yet processed
    in_hand: int = 0
    # written by the intake: when it last committed (monotonic), and webhooks per commit (average)
    last_commit: float = 0.0
    batch_average: float = 1.0
    # everyone who meets the database away -> the log: one warning per outage, not one per request
    database: Outage = field(default_factory=Outage)

    def intake_committed(self, batch: int) -> None:
        """Note an intake commit of `batch` webhooks."""
        self.last_commit = time.monotonic()
        self.batch_average = 0.8 * self.batch_average + 0.2 * batch

    def intake_busy(self) -> bool:
        """Tell whether webhooks queue up: batches of many were committed in the last 50 ms.

        A steady trickle (one webhook per commit, however many a second) is not busy: processing
        and sending then run at full speed, so an alert reaches its officer in well under a second.
        Only a burst that makes webhooks wait for each other's commits sends them to the back.
        """
        return time.monotonic() - self.last_commit < BURST_QUIET and self.batch_average >= BURST_BATCH

    def backlog(self) -> int:
        """Count the messages stored and waiting for this process's processor (a moment's estimate)."""
        return self.stored.qsize() + self.in_hand

    def outbox_ready(self) -> None:
        """Wake the dispatcher: outbound rows were committed."""
        self.outbox.set()


class Pass(StrEnum):
    """What a worker's loop does after a pass."""

    AGAIN = "again"  # work may be waiting: the next pass at once
    IDLE = "idle"  # nothing was due: wait for notify() or `every` seconds
    DONE = "done"  # the stop sentinel came through the worker's queue


class Worker(ABC):
    """A named background thread that runs `step` one pass at a time; subclasses write the pass."""

    name: ClassVar[str]
    # Stop only at the sentinel of the worker's queue, never between two passes: the callers of
    # a queue-fed worker wait on every item they queued before the stop (the intake writer).
    drain: ClassVar[bool] = False
    # How long stop() waits for the pass under way.
    join_timeout: ClassVar[float] = 15.0
    # The longest pause after failed passes in a row.
    backoff_cap: ClassVar[float] = BACKOFF_CAP

    def __init__(
        self,
        *,
        signals: Signals,
        every: float,
        factory: sessionmaker[Session] | None = None,
        retry: float | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        self.signals = signals
        self.factory = factory
        # The idle wait after a pass that found nothing due (a queue-fed worker: its wait for an item).
        self.every = every
        # The pause after a first failed pass; it doubles with each further failure in a row.
        self.retry = every if retry is None else retry
        self._wake = wake if wake is not None else threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what a subclass writes ----------------------------------------------------------------
    @abstractmethod
    def step(self) -> Pass:
        """Run one pass; say what the loop does next."""

    def prepare(self) -> None:  # noqa: B027  (optional hook: most workers need none)
        """Run once in the worker's thread, before the first pass."""

    def interrupt(self) -> None:  # noqa: B027  (optional hook)
        """Wake the thread from a wait of its own when stopping (a queue-fed worker's sentinel)."""

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker's thread."""
        self._thread = threading.Thread(target=self._run, name=f"kengele-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the pass under way, and wait for it a while."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self.interrupt()
            self._thread.join(timeout=self.join_timeout)

    @property
    def alive(self) -> bool:
        """Tell whether the thread was started and still runs."""
        return self._thread is not None and self._thread.is_alive()

    def notify(self) -> None:
        """Start the next pass now rather than at the end of the idle wait."""
        self._wake.set()

    def transaction(self) -> AbstractContextManager[Session]:
        """Open a session and transaction of the worker's own: committed, or rolled back on error."""
        if self.factory is None:
            raise TypeError(f"the {self.name} worker has no sessionmaker")
        return db.transaction(self.factory)

    def rest(self, seconds: float) -> None:
        """Pause the thread (a notify() does not end the rest; a stop() does)."""
        self._stop.wait(seconds)

    def _run(self) -> None:
        try:
            self.prepare()
        except Exception:
            log.exception("%s failed to prepare", self.name, extra={"worker": self.name})
        failures = 0
        while self.drain or not self._stop.is_set():
            try:
                after = self.step()
            except Exception as exc:
                failures += 1
                if unavailable(exc):  # the outage's one warning says it; a traceback per pass would not
                    self.signals.database.failed(where=self.name, exc=exc)
                else:
                    log.exception(
                        "%s pass failed", self.name, extra={"worker": self.name, "failures": failures}
                    )
                # A notify() ends the pause: work committed meanwhile means the database is back.
                self._wake.wait(backoff(self.retry, failures, cap=self.backoff_cap))
                self._wake.clear()
                continue
            if failures:
                self.signals.database.succeeded()
            failures = 0
            if after is Pass.DONE:
                return
            if after is Pass.IDLE:
                self._wake.wait(self.every)
                self._wake.clear()


def backoff(first: float, failures: int, *, cap: float = BACKOFF_CAP) -> float:
    """Seconds to pause after `failures` failed passes in a row: doubling from `first`, bounded."""
    return min(max(first, cap), first * 2 ** min(failures - 1, 16))
