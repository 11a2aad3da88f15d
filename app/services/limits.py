"""Cost control: how many replies a sender gets, which countries get any, how far one sender floods officers.

Every count is read from the database, never from process memory, so the bounds hold with several
replicas on one PostgreSQL: a transaction-scoped advisory lock per sender (taken before counting)
makes "count, then queue one more" atomic across processes. SQLite deployments run one process.

The windows slide: "at most 5 in any 3600 seconds", counted back from now. A fixed window (the clock
hour) would allow twice the limit across its edge, and counting from the database costs the same
either way.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from app.crypto import keyring_of
from app.db import per_transaction
from app.enums import PersonStatus, Purpose
from app.metrics import SUPPRESSED
from app.models import Alert, Message, Person, Place
from app.phones import country

log = logging.getLogger("kengele.limits")

SENDER_LOCK = 0x4B454E53  # "KENS": the advisory lock class of one sender's replies and forwards
_LIMIT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
COUNTRIES_EVERY = 300.0  # seconds between reads of the roster's and the gazetteer's countries


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` events in any `seconds` seconds."""

    count: int
    seconds: int

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}"


def parse_limit(value: str, *, setting: str) -> Limit:
    """Read `COUNT/SECONDS` (e.g. `5/3600`); the error names the setting and the value."""
    match = _LIMIT.fullmatch(value)
    if match is None:
        raise ValueError(f"{setting}: {value!r} is not COUNT/SECONDS")
    count, seconds = int(match[1]), int(match[2])
    if seconds < 1:
        raise ValueError(f"{setting}: {value!r} has a window of 0 seconds; SECONDS must be 1 or more")
    return Limit(count, seconds)


def parse_countries(value: str, *, setting: str) -> frozenset[str]:
    """Read comma-separated ISO alpha-2 codes; an unknown code is refused by name."""
    codes = [part.strip().upper() for part in value.split(",") if part.strip()]
    for code in codes:
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{setting}: {code!r} is not an ISO country code phonenumbers knows")
    return frozenset(codes)


class Reason:
    """Why a message was not sent (the `reason` label of kengele_suppressed_total)."""

    REPLY_LIMIT = "reply_limit"
    REPLY_COUNTRY = "reply_country"
    FLOOD_FORWARD = "flood_forward"


def suppressed(reason: str) -> None:
    """Count one message not sent, by reason (never by number)."""
    SUPPRESSED.labels(reason).inc()


# -- one sender at a time -----------------------------------------------------------------------
def lock_senders(session: Session, phones: Iterable[str]) -> None:
    """Hold each sender's advisory lock until the transaction ends (PostgreSQL; SQLite has one writer).

    Locks are taken in one sorted order, so two replicas with the same senders in their batches
    wait for each other rather than deadlock.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    keyring = keyring_of(session)
    keys = sorted({_lock_key(keyring.index(phone)) for phone in phones})
    if keys:  # one round trip for the batch, locking in the subquery's order
        connection.execute(_LOCK, {"cls": SENDER_LOCK, "keys": keys})


_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(:cls, k))"
    " FROM (SELECT unnest(CAST(:keys AS integer[])) AS k ORDER BY k) AS s"
)


def _lock_key(index: str) -> int:
    """A signed 32-bit number per blind index: pg_locks shows no hash anyone could compute from a number.

    Collisions only make two senders wait for each other.
    """
    value = int.from_bytes(hashlib.sha256(index.encode()).digest()[:4], "big")
    return value - 2**32 if value >= 2**31 else value


# -- counts -------------------------------------------------------------------------------------
# A batch's senders are counted once, in one grouped query per count, when their locks are taken
# (`tally`); each reply queued or incident opened in the same transaction then adds one to its
# sender's count. A sender held by lock_senders changes no other way until the commit, so the count
# is the database's: one round trip per batch rather than one per message (on PostgreSQL, a
# report's dearest cost). The batch's counts start at its first message's clock; the milliseconds
# its later messages' windows move on can only keep a row in the window, never leave one out.
_TALLY = "kengele.tally"  # per transaction: its Tally (empty until `tally` fills it)


@dataclass(slots=True)
class Tally:
    """Per sender locked in this transaction: replies queued and incidents opened, within their windows."""

    replies: dict[str, int]
    opened: dict[str, int]


def tally(session: Session, phones: Iterable[str], *, now: datetime, limits: Limits) -> None:
    """Count these (locked) senders' replies and openings in two queries, kept for this transaction.

    A sender counted already in this transaction keeps its count (and what was added to it).
    """
    kept = _tallied(session)
    indexes = {phone: keyring_of(session).indexes(phone) for phone in set(phones)}
    with session.no_autoflush:  # the batch's own rows come after: counted as they are added
        for counts, limit, query in (
            (kept.replies, limits.reply, _REPLIES_BY),
            (kept.opened, limits.flood, _OPENED_BY),
        ):
            owner = {index: phone for phone in indexes.keys() - counts.keys() for index in indexes[phone]}
            if limit is None or not owner:
                continue
            counts.update(dict.fromkeys(owner.values(), 0))
            params = {"indexes": list(owner), "since": now - limit.window}
            for index, n in session.execute(query, params):
                if index in owner:
                    counts[owner[index]] += int(n)


def _tallied(session: Session) -> Tally:
    return per_transaction(session, _TALLY, lambda: Tally({}, {}))


def count_reply(session: Session, phone: str) -> None:
    """One more reply queued to `phone` in this transaction."""
    kept = _tallied(session)
    if phone in kept.replies:
        kept.replies[phone] += 1


def count_opening(session: Session, phone: str) -> None:
    """One more incident opened by `phone`'s report in this transaction."""
    kept = _tallied(session)
    if phone in kept.opened:
        kept.opened[phone] += 1


def replies_since(session: Session, *, phone: str, since: datetime) -> int:
    """How many replies were queued to this number since `since` (any key's blind index of it)."""
    kept = _tallied(session)
    if phone in kept.replies:
        return kept.replies[phone]
    indexes = keyring_of(session).indexes(phone)
    return int(session.scalar(_REPLIES, {"indexes": indexes, "since": since}) or 0)


# Only outbound rows have a purpose: no `direction` term, which PostgreSQL, short of statistics,
# would meet with a walk of every outbound row's index entry (a BitmapAnd) for each reply.
_REPLIED = (
    Message.recipient_index.in_(bindparam("indexes", expanding=True)),
    Message.created_at > bindparam("since"),
    Message.purpose == Purpose.REPLY,
)
_REPLIES = select(func.count()).where(*_REPLIED)
_REPLIES_BY = select(Message.recipient_index, func.count()).where(*_REPLIED).group_by(Message.recipient_index)


def opened_since(session: Session, *, phone: str, since: datetime) -> int:
    """How many incidents this number's reports opened since `since` (processing time)."""
    kept = _tallied(session)
    if phone in kept.opened:
        return kept.opened[phone]
    indexes = keyring_of(session).indexes(phone)
    return int(session.scalar(_OPENED, {"indexes": indexes, "since": since}) or 0)


_OPENINGS = (
    Alert.sender_index.in_(bindparam("indexes", expanding=True)),
    Alert.opened.is_(True),
    Alert.created_at > bindparam("since"),
)
_OPENED = select(func.count()).where(*_OPENINGS)
_OPENED_BY = select(Alert.sender_index, func.count()).where(*_OPENINGS).group_by(Alert.sender_index)


def vouched_for(person: Person | None) -> bool:
    """Whether a sender is an approved, active roster entry (someone the network knows)."""
    return person is not None and person.active and person.status == PersonStatus.APPROVED


# -- which countries get replies ----------------------------------------------------------------
class ReplyCountries:
    """The countries replies may go to: as configured, else the region, the roster's and the gazetteer's.

    The derived set is read again every few minutes, so a roster import or a gazetteer load widens
    it without a restart.
    """

    def __init__(
        self, *, configured: frozenset[str] | None, region: str, every: float = COUNTRIES_EVERY
    ) -> None:
        self.configured = configured
        self.region = region
        self.every = every
        self._derived: frozenset[str] | None = None
        self._read_at = 0.0

    def allowed(self, session: Session) -> frozenset[str]:
        """The countries replies may go to now."""
        if self.configured is not None:
            return self.configured
        if self._derived is None or time.monotonic() - self._read_at > self.every:
            self._derived = self._derive(session)
            self._read_at = time.monotonic()
        return self._derived

    def _derive(self, session: Session) -> frozenset[str]:
        with session.no_autoflush:
            places = {c.upper() for c in session.scalars(select(Place.country).distinct()) if c}
            roster = {country(phone) for phone in session.scalars(select(Person.phone))}
        return frozenset({self.region, *places, *(c for c in roster if c)})

    def covers(self, session: Session, phone: str) -> bool:
        """Whether a number belongs to a country replies may go to."""
        return country(phone) in self.allowed(session)


@dataclass(frozen=True, slots=True)
class Limits:
    """The cost bounds one process applies (built from the settings)."""

    reply: Limit | None = None
    flood: Limit | None = None
    countries: ReplyCountries | None = None
