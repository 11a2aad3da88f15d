"""Scheduled check-ins: every active focal point is asked, on their area's schedule, if all is well.

A round is one area's check-in at one scheduled time. Its key (area @ scheduled time) is a unique
row, each focal point's check-in and SMS carry keys derived from it, so a round fired twice (two
replicas, a restart, a retry) sends each focal point one SMS. One process schedules: with
PostgreSQL the holder of an advisory lock (another replica takes over when it dies), with SQLite
the only process. A focal point who left the last `silent_after` rounds unanswered is flagged
silent when the next round starts; their area's level-1 officers and the admins get one notice.
The flag clears on their next message (app/services/pipeline.py).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Connection, Engine, bindparam, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import insert_ignoring_conflicts, transaction, utcnow
from app.enums import AuditAction, AuditEntity, PersonStatus, Purpose, Role
from app.models import AuditLog, CheckIn, CheckInRound, Message, Person, Place
from app.outage import unavailable
from app.services.areas import normalize_name
from app.services.escalation import area_names
from app.services.incidents import person_area
from app.services.language import language_for
from app.services.outbox import enqueue, outbound_row
from app.services.worker import Pass, Signals, Worker
from keywords.parser import Lexicon
from keywords.sms import fit_one, segments

log = logging.getLogger("kengele.checkins")

WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
LEADER_LOCK = 0x4B454E47  # "KENG": the advisory lock whose holder schedules check-ins
CHUNK = 2000  # focal points per transaction: SQLite's one writer is never held for long
CATCH_UP = timedelta(hours=12)  # a round missed while no process was scheduling is sent late


def parse_schedule(line: str, tz: ZoneInfo | None = None) -> CronTrigger:
    """A cron line in `tz`: `min hour day month weekday` (5 fields), or with seconds first (6)."""
    fields = line.split()
    tz = tz or ZoneInfo("UTC")
    if fields:  # the weekday field: cron counts 0 (and 7) as Sunday, APScheduler 3 as Monday
        fields[-1] = re.sub(r"(?<![/\d])\d+", lambda m: WEEKDAYS[int(m.group()) % 7], fields[-1])
        line = " ".join(fields)
    if len(fields) == 5:
        return CronTrigger.from_crontab(line, timezone=tz)
    if len(fields) == 6:
        names = ("second", "minute", "hour", "day", "month", "day_of_week")
        return CronTrigger(**dict(zip(names, fields, strict=True)), timezone=tz)
    raise ValueError(f"schedule: {line!r} is not a cron line ('0 8 * * *' is every day at 08:00)")


def parse_overrides(spec: str) -> dict[str, str]:
    """`Djugu=0 7 * * *; Beni=30 8 * * mon-fri` -> {normalised area: cron line}."""
    out: dict[str, str] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        area, sep, line = part.partition("=")
        if not sep or not area.strip():
            raise ValueError(f"checkin_schedules: {part.strip()!r} is not 'Area=cron line'")
        parse_schedule(line.strip())
        out[normalize_name(area)] = line.strip()
    return out


@dataclass(frozen=True, slots=True)
class FocalPoint:
    id: int
    name: str
    phone: str
    language: str | None
    area: str


# Active, approved focal points who have not opted out, with the area of their home place.
_FOCAL_POINTS = (
    select(Person.id, Person.name, Person.phone, Person.language, Person.area, Place.admin2, Place.admin1)
    .outerjoin(Place, Place.id == Person.place_id)
    .where(
        Person.role == Role.FOCAL_POINT,
        Person.active.is_(True),
        Person.status == PersonStatus.APPROVED,
        Person.opted_out.is_(False),
        Person.phone_valid.is_(True),
    )
    .order_by(Person.id)
)


def focal_points(session: Session) -> list[FocalPoint]:
    """Who check-ins go to; a focal point's area is their roster area, else their home's."""
    return [
        FocalPoint(
            r.id,
            r.name,
            r.phone,
            r.language,
            person_area(area=r.area, home_admin2=r.admin2, home_admin1=r.admin1),
        )
        for r in session.execute(_FOCAL_POINTS)
    ]


def by_area(people: Iterable[FocalPoint]) -> dict[str, list[FocalPoint]]:
    areas: dict[str, list[FocalPoint]] = defaultdict(list)
    for person in people:
        areas[person.area].append(person)
    return dict(areas)


class CheckIns:
    """Rounds of check-ins and the silence they reveal, written to the outbox."""

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        lexicon: Lexicon,
        timezone: str,
        schedule: str,
        overrides: str = "",
        silent_after: int = 2,
        signals: Signals,
    ) -> None:
        self.factory = factory
        self.lexicon = lexicon
        self.tz = ZoneInfo(timezone)
        self.schedule = schedule
        self.overrides = parse_overrides(overrides)
        parse_schedule(schedule)
        self.silent_after = silent_after
        self.signals = signals

    def schedules(self) -> dict[str, str]:
        """Cron line -> '' (every area without its own) or the normalised area it is for."""
        return {self.schedule: "", **{line: area for area, line in self.overrides.items()}}

    # -- one firing ----------------------------------------------------------------------------
    def fire(self, line: str, scheduled_for: datetime) -> int:
        """The rounds of every area on this schedule line at this time; SMS queued."""
        with self.factory() as session:
            everyone = by_area(focal_points(session))
        queued = 0
        for area, people in sorted(everyone.items()):
            if self.overrides.get(normalize_name(area), self.schedule) == line:
                queued += self.run_round(area, scheduled_for, people)
        return queued

    def run_round(self, area: str, scheduled_for: datetime, people: list[FocalPoint] | None = None) -> int:
        """One area's round, once: silence checked first, then every focal point asked.

        The round row is created once (unique key); its check-ins and SMS are inserted by key in
        chunks, so a second firing, or a firing cut short by a crash and run again, adds nothing
        that is already there. Returns the number of SMS this call queued.
        """
        key = f"{area}@{scheduled_for.astimezone(ZoneInfo('UTC')).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        now = utcnow()
        with transaction(self.factory) as session:
            conn = session.connection()
            insert = insert_ignoring_conflicts(conn.dialect.name, CheckInRound.__table__)
            conn.execute(
                insert,
                {
                    "round_key": key,
                    "area": area,
                    "scheduled_for": scheduled_for,
                    "started_at": now,
                    "sent": 0,
                },
            )
            round_ = session.scalars(select(CheckInRound).where(CheckInRound.round_key == key)).one()
            if round_.finished_at is not None:
                return 0
            round_id = round_.id
        if people is None:
            with self.factory() as session:
                people = by_area(focal_points(session)).get(area, [])
        queued = self._flag_silent(area, key, now)
        for start in range(0, len(people), CHUNK):
            queued += self._send(key, people[start : start + CHUNK], now)
            self.signals.outbox_ready()
        with transaction(self.factory) as session:
            session.execute(
                update(CheckInRound)
                .where(CheckInRound.id == round_id, CheckInRound.finished_at.is_(None))
                .values(finished_at=utcnow(), sent=len(people))
            )
        log.info(
            "check-in round sent", extra={"area": area or "-", "round": key, "focal_points": len(people)}
        )
        return queued

    def _send(self, key: str, people: list[FocalPoint], now: datetime) -> int:
        texts = {
            language: fit_one(grammar.replies["checkin_request"])
            for language, grammar in self.lexicon.grammars.items()
        }
        # Chosen once per roster language, not once per person: a round may ask 100,000 people.
        chosen = {
            given: language_for(lexicon=self.lexicon, roster=given) for given in {p.language for p in people}
        }
        with transaction(self.factory) as session:
            conn = session.connection()
            dialect = conn.dialect.name
            before = session.scalar(_ROUND_SIZE, {"key": key}) or 0
            conn.execute(
                insert_ignoring_conflicts(dialect, CheckIn.__table__),
                [{"person_id": p.id, "round_key": key, "sent_at": now} for p in people],
            )
            added = (session.scalar(_ROUND_SIZE, {"key": key}) or 0) - before
            rows = [
                outbound_row(
                    recipient=p.phone,
                    text=texts[chosen[p.language]],
                    purpose=Purpose.CHECKIN,
                    key=f"checkin:{key}:{p.id}",
                    now=now,
                    person_id=p.id,
                    language=chosen[p.language],
                )
                for p in people
            ]
            # Plain executemany (pipelined by psycopg), no RETURNING: building one huge statement
            # with RETURNING costs more than the inserts. Keys make a second firing add nothing.
            conn.execute(insert_ignoring_conflicts(dialect, Message.__table__), rows)
        return added

    # -- silence -------------------------------------------------------------------------------
    def _flag_silent(self, area: str, key: str, now: datetime) -> int:
        """Flag the area's focal points who left the last rounds unanswered; notify once."""
        with transaction(self.factory) as session:
            rounds = session.scalars(
                select(CheckInRound.round_key)
                .where(CheckInRound.area == area, CheckInRound.round_key != key)
                .order_by(CheckInRound.scheduled_for.desc())
                .limit(self.silent_after)
            ).all()
            if len(rounds) < self.silent_after:
                return 0
            missed = (
                select(CheckIn.person_id)
                .where(CheckIn.round_key.in_(rounds), CheckIn.answered_at.is_(None))
                .group_by(CheckIn.person_id)
                .having(func.count() == len(rounds))
            )
            newly = session.scalars(
                select(Person)
                .where(Person.id.in_(missed), Person.silent_since.is_(None), Person.active.is_(True))
                .order_by(Person.name)
            ).all()
            if not newly:
                return 0
            for person in newly:
                person.silent_since = now
                session.add(
                    AuditLog(
                        actor="checkins",
                        action=AuditAction.SILENT,
                        entity=AuditEntity.PERSON,
                        entity_id=str(person.id),
                        details={"area": area, "missed": list(rounds)},
                        at=now,
                    )
                )
            return self._notify(session, area, key, [p.name for p in newly], now)

    def _notify(self, session: Session, area: str, key: str, names: list[str], now: datetime) -> int:
        """One notice to each level-1 officer covering the area (its province's too) and each admin."""
        areas = area_names(session, area) if area else set()
        recipients = [
            p
            for p in session.scalars(_STAFF)
            if p.role == Role.ADMIN
            or ((p.level or 1) == 1 and (not p.area or normalize_name(p.area) in areas))
        ]
        for person in recipients:
            language = language_for(lexicon=self.lexicon, roster=person.language)
            template = self.lexicon.grammars[language].replies["silent"]
            enqueue(
                session=session,
                recipient=person.phone,
                text=silent_text(template, area or "-", names),
                purpose=Purpose.NOTICE,
                key=f"silent:{key}:{person.id}",
                person_id=person.id,
                language=language,
                now=now,
            )
        return len(recipients)

    # -- catching up ---------------------------------------------------------------------------
    def catch_up(self, now: datetime | None = None) -> int:
        """Send the last round of each schedule if it fell due while nobody was scheduling."""
        now = now or utcnow()
        with self.factory() as session:
            if session.scalar(select(CheckInRound.id).limit(1)) is None:
                return 0  # a network's first round is on schedule, not at install time
        queued = 0
        for line in self.schedules():
            last = last_fire_time(parse_schedule(line, self.tz), self.tz, now)
            if last is not None and now - last <= CATCH_UP:
                queued += self.fire(line, last)
        return queued


def silent_text(template: str, area: str, names: list[str]) -> str:
    """The notice, naming as many silent focal points as one SMS holds (+N for the others)."""

    def render(shown: int) -> str:
        rest = len(names) - shown
        listed = ", ".join(names[:shown]) + (f" +{rest}" if rest else "")
        return template.format(area=area, count=len(names), names=listed)

    shown = 1
    while shown < len(names) and segments(render(shown + 1)) == 1:
        shown += 1
    return fit_one(render(shown))


def last_fire_time(trigger: CronTrigger, tz: ZoneInfo, now: datetime) -> datetime | None:
    """The latest time at or before `now` the trigger fired (within CATCH_UP), if any."""
    for lookback in (timedelta(minutes=1), timedelta(hours=1), CATCH_UP):  # few steps, whatever the period
        fire = trigger.get_next_fire_time(None, (now - lookback).astimezone(tz))
        last = None
        while fire is not None and fire <= now:
            last = fire
            fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
        if last is not None:
            return last
    return None


_STAFF = select(Person).where(
    Person.role.in_((Role.OFFICER, Role.ADMIN)),
    Person.active.is_(True),
    Person.status == PersonStatus.APPROVED,
    Person.opted_out.is_(False),
)


_ROUND_SIZE = select(func.count()).select_from(CheckIn).where(CheckIn.round_key == bindparam("key"))


class Scheduler(Worker):
    """Runs the check-in schedules in one process: the one holding the leader lock (PostgreSQL)."""

    name = "checkins"

    def __init__(self, *, engine: Engine, checkins: CheckIns, signals: Signals, retry: float = 10.0) -> None:
        super().__init__(signals=signals, every=retry)
        self.engine = engine
        self.checkins = checkins
        self._lock_conn: Connection | None = None
        self._scheduler: BackgroundScheduler | None = None

    @property
    def leading(self) -> bool:
        """Tell whether this process runs the schedules now."""
        return self._scheduler is not None

    def stop(self) -> None:
        """Stop the election and give up the lead (another replica takes it)."""
        super().stop()
        self._resign()

    def step(self) -> Pass:
        """Lead if the lock is free; while leading, check that the lock's connection still holds it."""
        try:
            if self._scheduler is None:
                if self._elect():
                    self._lead()
            elif not self._still_leader():
                log.warning("lost the check-in scheduler lock")
                self._resign()
        except Exception:  # start afresh: a lock without schedules, or schedules without the lock, is no lead
            self._resign()
            raise
        return Pass.IDLE

    def _elect(self) -> bool:
        if self.engine.dialect.name != "postgresql":
            return True  # SQLite deployments run one process
        conn = self.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK}).scalar()
            conn.commit()
        except Exception:
            conn.invalidate()
            conn.close()
            raise
        if got:
            self._lock_conn = conn
            return True
        conn.close()
        return False

    def _still_leader(self) -> bool:
        if self._lock_conn is None:
            return True
        self._lock_conn.execute(text("SELECT 1"))
        self._lock_conn.commit()
        return True

    def _lead(self) -> None:
        scheduler = BackgroundScheduler(timezone=self.checkins.tz)
        for line in self.checkins.schedules():
            scheduler.add_job(
                self._fire,
                parse_schedule(line, self.checkins.tz),
                args=[line],
                id=f"checkin:{line}",
                misfire_grace_time=3600,
                coalesce=True,
                max_instances=1,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("leading the check-in schedules", extra={"schedules": list(self.checkins.schedules())})
        self.checkins.catch_up()

    def _fire(self, line: str) -> None:
        job = self._scheduler.get_job(f"checkin:{line}") if self._scheduler else None
        # The time the round was due (not now): a late firing keeps the round's key.
        due = last_fire_time(parse_schedule(line, self.checkins.tz), self.checkins.tz, utcnow())
        if job is None or due is None:
            return
        try:
            self.checkins.fire(line, due)
        except Exception:
            log.exception("check-in round failed", extra={"schedule": line})

    def _resign(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._lock_conn is not None:
            try:
                # A pooled connection outlives this use: unlock, and drop the connection rather
                # than hand a session that may still hold the lock back to the pool.
                self._lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK})
            except Exception as exc:
                # A lost connection (invalidated under the failed check) holds no lock: nothing to release.
                if self._lock_conn.invalidated or unavailable(exc):
                    self.signals.database.failed(where=self.name, exc=exc)
                else:
                    log.exception("releasing the leader lock failed")
            finally:
                self._lock_conn.invalidate()
                self._lock_conn.close()
            self._lock_conn = None
