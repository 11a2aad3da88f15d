"""Scheduled check-ins: everyone asked once per round, STOP honoured, silence flagged and reported."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.db import transaction
from app.main import create_app
from app.models import AuditLog, CheckInRound, Message, Person
from app.services import gazetteer
from app.services.checkins import CheckIns, Scheduler, last_fire_time, parse_schedule, silent_text
from app.services.runtime import Runtime
from app.services.worker import Signals
from tests.conftest import ADMIN_TOKEN
from tests.fakes import FakeProvider
from tests.helpers import phone_is
from tests.server import Server
from tests.test_corpus import CORPUS, load_roster
from tests.test_escalation import sms, told
from tests.test_replicas import provider_env

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JEANNE, DIEUDONNE, AMANI, GRACE, PIERRE = (
    "+243810000001",
    "+243810000002",
    "+243810000003",
    "+243810000004",
    "+243810000005",
)
SAMUEL, JOSEPH, MARIE = "+243810000007", "+243810000009", "+243810000010"
DUFOUR, OKELLO, ADMIN_PHONE = "+243990000001", "+243990000002", "+243990000009"
DAY = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # 08:00 in Lubumbashi
DJUGU = [JEANNE, DIEUDONNE, GRACE, PIERRE, SAMUEL]


def setup(runtime: Runtime) -> Runtime:
    gazetteer.store(runtime.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    load_roster(runtime)
    return runtime


def round_(runtime: Runtime, day: int) -> int:
    return runtime.checkins.fire(runtime.settings.checkin_schedule, DAY + timedelta(days=day))


def asked(runtime: Runtime) -> list[str]:
    return sorted(r for r, _ in told(runtime, "checkin") if r)


@pytest.fixture
def runtime(make_settings: Callable[..., Settings]) -> Runtime:
    return setup(Runtime(make_settings()))


def test_a_round_asks_every_active_focal_point_once_in_their_language(runtime: Runtime) -> None:
    assert round_(runtime, 0) == 9
    by_phone = dict(told(runtime, "checkin"))
    assert sorted(by_phone) == sorted([*DJUGU, AMANI, "+243810000006", "+243810000008", JOSEPH])
    assert MARIE not in by_phone and DUFOUR not in by_phone  # inactive; officers are not asked
    assert by_phone[JEANNE].startswith("Kengele: tout va bien? Repondez RAS.")
    assert by_phone[GRACE].startswith("Kengele check-in: is all well? Reply OK.")
    assert by_phone[AMANI].startswith("Kengele: hali ni shwari? Jibu SALAMA.")
    assert round_(runtime, 0) == 0  # the same round again: nothing more
    with runtime.factory() as session:
        rounds = session.scalars(select(CheckInRound).order_by(CheckInRound.area)).all()
        assert [(r.area, r.sent) for r in rounds] == [("", 1), ("Beni", 3), ("Djugu", 5)]
    assert len(asked(runtime)) == 9


def test_stop_is_honoured_by_the_schedule_and_start_reverses_it(runtime: Runtime) -> None:
    sms(runtime, JEANNE, "STOP", "s1")
    round_(runtime, 0)
    assert JEANNE not in asked(runtime)
    sms(runtime, JEANNE, "REPRENDRE", "s2")
    round_(runtime, 1)
    assert asked(runtime).count(JEANNE) == 1


def test_silent_focal_points_are_flagged_once_and_cleared_by_their_next_message(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings, dispatcher=False, scheduler=False)) as client:
        runtime = setup(client.app.state.runtime)  # type: ignore[attr-defined]
        for day in range(2):  # two rounds: Pierre and Samuel answer neither
            round_(runtime, day)
            for n, phone in enumerate([JEANNE, DIEUDONNE, GRACE]):
                sms(runtime, phone, ["RAS", "ok", "A1 Djugu"][n], f"r{day}{n}")
        assert told(runtime, "notice") == []
        health = client.get("/api/v1/network/health", headers=ADMIN).json()
        djugu = next(a for a in health["areas"] if a["area"] == "Djugu")
        assert (djugu["focal_points"], djugu["asked_last_round"], djugu["answered_last_round"]) == (5, 5, 3)
        round_(runtime, 2)  # two missed in a row: flagged when the third round starts
        notices = told(runtime, "notice")  # Beni's three and Joseph (no area) never answered either
        djugu_notices = [(r, t) for r, t in notices if "Djugu" in t]
        assert sorted(r or "" for r, _ in djugu_notices) == sorted([DUFOUR, ADMIN_PHONE])  # not Okello
        assert sorted(r or "" for r, t in notices if "Beni" in t) == sorted([OKELLO, ADMIN_PHONE])
        assert dict(djugu_notices)[DUFOUR] == (
            "2 point(s) focal(aux) silencieux a Djugu: Pierre Ukelo, Samuel Dhejju. Prenez des nouvelles."
        )
        round_(runtime, 3)
        assert len(told(runtime, "notice")) == len(notices)  # flagged once, notified once
        health = client.get("/api/v1/network/health", headers=ADMIN).json()
        djugu = next(a for a in health["areas"] if a["area"] == "Djugu")
        assert (djugu["silent"], health["silent"]) == (2, 6)
        assert [(s["name"], s["phone"]) for s in djugu["silent_focal_points"]] == [
            ("Pierre Ukelo", PIERRE),
            ("Samuel Dhejju", SAMUEL),
        ]
        viewer = client.get("/api/v1/network/health", headers=viewer_token(runtime)).json()
        djugu = next(a for a in viewer["areas"] if a["area"] == "Djugu")
        assert [s["phone"] for s in djugu["silent_focal_points"]] == ["+243*****0005", "+243*****0007"]
        sms(runtime, PIERRE, "RAS", "back")
        with runtime.factory() as session:
            pierre = session.scalars(select(Person).where(phone_is(PIERRE))).one()
            assert pierre.silent_since is None and pierre.last_seen_at is not None
            actions = session.scalars(select(AuditLog.action).where(AuditLog.entity == "person")).all()
            assert sorted(actions) == ["silent"] * 6 + ["silent_cleared"]
        assert client.get("/api/v1/network/health", headers=ADMIN).json()["silent"] == 5
        assert client.get("/api/v1/network/health").status_code == 401


def viewer_token(runtime: Runtime) -> dict[str, str]:
    from app.auth import hash_token, new_token
    from app.models import ApiToken

    token = new_token()
    with transaction(runtime.factory) as session:
        session.add(ApiToken(name="viewer", role="viewer", token_hash=hash_token(token)))
    return {"Authorization": f"Bearer {token}"}


def test_a_round_fired_by_two_processes_at_once_is_sent_once(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    first = setup(Runtime(settings))
    second = Runtime(settings)
    threads = [threading.Thread(target=round_, args=(rt, 0)) for rt in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(asked(first)) == Counter(dict.fromkeys(asked(first), 1))
    assert len(asked(first)) == 9


def test_schedules_and_notices() -> None:
    assert str(parse_schedule("0 8 * * *")).startswith("cron[")
    assert str(parse_schedule("*/5 * * * * *")).startswith("cron[")
    with pytest.raises(ValueError, match="is not a cron line"):
        parse_schedule("every day")
    with pytest.raises(ValueError, match="is not 'Area=cron line'"):
        CheckIns(
            factory=None,  # type: ignore[arg-type]
            lexicon=None,  # type: ignore[arg-type]
            timezone="UTC",
            schedule="0 8 * * *",
            overrides="Djugu 0 7 * * *",
            signals=Signals(),
        )
    from zoneinfo import ZoneInfo

    now = datetime(2026, 11, 25, 7, 30, tzinfo=UTC)  # 09:30 in Lubumbashi
    tz = ZoneInfo("Africa/Lubumbashi")
    last = last_fire_time(parse_schedule("0 8 * * *", tz), tz, now)
    assert last == datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    names = [f"Focal Point Number {i}" for i in range(30)]
    text = silent_text("{count} silent in {area}: {names}.", "Djugu", names)
    assert text.startswith("30 silent in Djugu: Focal Point Number 0, ") and "+2" in text and len(text) <= 160


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_one_scheduler_leads_and_another_takes_over(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    first, second = Runtime(settings), Runtime(settings)
    schedulers = [
        Scheduler(engine=rt.engine, checkins=rt.checkins, signals=rt.signals, retry=0.1)
        for rt in (first, second)
    ]
    for scheduler in schedulers:
        scheduler.start()
    deadline = time.monotonic() + 5
    while not any(s.leading for s in schedulers) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert [s.leading for s in schedulers].count(True) == 1
    leader = next(s for s in schedulers if s.leading)
    other = next(s for s in schedulers if not s.leading)
    leader.stop()  # the lock goes with its connection
    deadline = time.monotonic() + 5
    while not other.leading and time.monotonic() < deadline:
        time.sleep(0.05)
    assert other.leading
    other.stop()
    first.stop()
    second.stop()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.slow  # two real server processes
def test_two_servers_send_each_round_once_to_each_focal_point(
    db_url: str, tmp_path: Path, make_settings: Callable[..., Settings], twilio_fake: FakeProvider
) -> None:
    setup_rt = setup(Runtime(make_settings()))
    env = provider_env(twilio_fake) | {"KENGELE_CHECKIN_SCHEDULE": "*/2 * * * * *"}
    servers = [Server(db_url, tmp_path, **env).start() for _ in range(2)]
    try:
        time.sleep(7)  # three or four rounds
    finally:
        for server in servers:
            server.stop()
    with setup_rt.factory() as session:
        rounds = session.scalars(select(CheckInRound).where(CheckInRound.area == "Djugu")).all()
        sent = session.scalars(
            select(Message).where(Message.direction == "outbound", Message.status.in_(["sent", "delivered"]))
        ).all()
    assert len(rounds) >= 2
    times = [r.scheduled_for for r in rounds]
    assert len(set(times)) == len(times)
    # "checkin:<area>@<time>:<person>": every round of an area asked each of its focal points once
    per_round = Counter(
        m.idempotency_key.removeprefix("checkin:").rsplit(":", 1)[0]
        for m in sent
        if m.purpose == "checkin" and m.idempotency_key
    )
    sizes = {"Djugu": 5, "Beni": 3, "": 1}
    assert all(count == sizes[key.split("@")[0]] for key, count in per_round.items()), per_round
    assert len(per_round) >= 6
    received = Counter((r.form["To"][0], r.form["Body"][0]) for r in twilio_fake.requests)
    # every SMS (check-ins, and the notices of silence after two rounds) sent exactly once
    assert received == Counter((m.recipient, m.text) for m in sent), "an SMS was sent twice (or lost)"
    setup_rt.stop()


def test_cron_weekdays_count_from_sunday() -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Africa/Lubumbashi")
    saturday = datetime(2026, 11, 21, 12, 0, tzinfo=tz)
    weekdays = parse_schedule("0 8 * * 1-5", tz).get_next_fire_time(None, saturday)
    assert weekdays is not None and weekdays.strftime("%a %H:%M") == "Mon 08:00"
    for line in ("0 8 * * 0", "0 8 * * 7", "0 8 * * sun", "0 0 8 * * 0"):
        fire = parse_schedule(line, tz).get_next_fire_time(None, saturday)
        assert fire is not None and fire.strftime("%a") == "Sun", line
    every_other = parse_schedule("0 8 * * */2", tz).get_next_fire_time(None, saturday)
    assert every_other is not None  # a step is a step, not a weekday


def test_any_message_answers_the_check_in(runtime: Runtime) -> None:
    round_(runtime, 0)
    sms(runtime, PIERRE, "oui tout va bien chez nous", "any")  # not a keyword: still alive
    with runtime.factory() as session:
        from app.models import CheckIn

        answered = session.scalars(select(CheckIn.person_id).where(CheckIn.answered_at.is_not(None))).all()
        pierre = session.scalars(select(Person.id).where(phone_is(PIERRE))).one()
    assert answered == [pierre]
