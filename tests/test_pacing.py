"""Outbound pacing, daily budgets, Retry-After and failed passes, against fake providers on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.db import transaction
from app.enums import Purpose
from app.models import Message, Person
from app.services.outbox import enqueue
from app.services.runtime import Runtime
from gateways.africastalking import AfricasTalkingGateway
from gateways.base import SendError, retry_after_seconds
from gateways.twilio import TwilioGateway
from tests.fakes import FakeProvider
from tests.helpers import wait_for

pytestmark = pytest.mark.slow  # timed: sends per second: run alone (make test)


def phone(i: int) -> str:
    return f"+2438100{i:05d}"


def queue(runtime: Runtime, purpose: Purpose, keys: Sequence[str]) -> None:
    with transaction(runtime.factory) as session:
        for key in keys:
            assert enqueue(
                session=session,
                recipient=phone(len(key) * 97 + sum(map(ord, key))),
                text=key,
                purpose=purpose,
                key=key,
            )


def statuses(runtime: Runtime) -> dict[str, str]:
    with runtime.factory() as session:
        rows = session.scalars(select(Message).where(Message.direction == "outbound"))
        return {m.idempotency_key or "": m.status for m in rows}


def max_in_one_second(times: Sequence[float]) -> int:
    """The most requests any one-second window [t, t + 1) holds."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def bodies(fake: FakeProvider) -> list[str]:
    return [(r.form.get("Body") or r.form.get("message") or [""])[0] for r in fake.requests]


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for runtime in started:
        runtime.stop()


def start(runtimes: list[Runtime], settings: Settings) -> Runtime:
    runtime = Runtime(settings)
    runtimes.append(runtime)
    runtime.start(intake=False, processor=False, scheduler=False)  # the dispatcher alone
    return runtime


# -- settings ----------------------------------------------------------------------------------
def test_rates_and_budgets_are_read_per_gateway(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(gateway="twilio,africastalking,console", twilio_account_sid="AC1")
    assert settings.send_rates == {"twilio": 1.0, "africastalking": 10.0, "console": None}
    assert settings.sms_budgets == {"twilio": None, "africastalking": None, "console": None}
    settings = make_settings(
        gateway="twilio,africastalking,console", send_rate="20, twilio=2", daily_sms_budget="twilio=500,300"
    )
    assert settings.send_rates == {"twilio": 2.0, "africastalking": 20.0, "console": 20.0}
    assert settings.sms_budgets == {"twilio": 500, "africastalking": 300, "console": 300}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("send_rate", "twilio=fast", "KENGELE_SEND_RATE: 'twilio=fast' is not SMS per second"),
        ("send_rate", "twillio=1", "KENGELE_SEND_RATE: unknown gateway 'twillio'"),
        ("send_rate", "twilio=0", "KENGELE_SEND_RATE: twilio: must be more than 0"),
        ("send_rate", "inf", "KENGELE_SEND_RATE: 'inf' is not SMS per second"),
        ("send_rate", "twilio=1,twilio=2", "KENGELE_SEND_RATE: twilio is given twice"),
        ("daily_sms_budget", "500.5", "KENGELE_DAILY_SMS_BUDGET: '500.5' is not a whole number"),
        ("daily_sms_budget", "twilio=0", "KENGELE_DAILY_SMS_BUDGET: twilio: must be at least 1"),
    ],
)
def test_a_bad_rate_or_budget_is_refused_naming_the_setting(name: str, value: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **{name: value})  # type: ignore[call-arg]
    assert says in str(caught.value)


def test_the_command_line_refuses_a_bad_rate_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from app.cli import main

    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("KENGELE_SEND_RATE", "twilio=lots")
    monkeypatch.setenv("KENGELE_DATABASE_URL", f"sqlite:///{tmp_path}/k.db")
    assert main(["db", "upgrade"]) == 2
    assert "KENGELE_SEND_RATE: 'twilio=lots' is not SMS per second" in capsys.readouterr().err


# -- Retry-After -------------------------------------------------------------------------------
def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert retry_after_seconds("86400") == 600.0  # capped: a typo must not stop alerts for a day
    for bad in (None, "", "soon", "nan"):
        assert retry_after_seconds(bad) is None


@pytest.mark.parametrize("how", ["seconds", "date"])
def test_both_sdks_hand_back_a_429s_retry_after(
    twilio_fake: FakeProvider, at_fake: FakeProvider, how: str
) -> None:
    value = (
        "3" if how == "seconds" else format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    )
    twilio = TwilioGateway(
        account_sid="AC" + "1" * 32,
        auth_token="t" * 32,
        sender="+15005550006",
        timeout=1.0,
        status_callback=None,
        api_base=twilio_fake.url,
    )
    at = AfricasTalkingGateway(
        username="kengele", api_key="k" * 20, sender=None, timeout=1.0, api_base=at_fake.url
    )
    for fake, gateway in ((twilio_fake, twilio), (at_fake, at)):
        fake.retry_after = value
        fake.then("429ra", "429", "500")
        errors = []
        for _ in range(3):
            with pytest.raises(SendError) as caught:
                gateway.send(to=phone(1), text="x", idempotency_key="k")
            errors.append(caught.value)
        assert errors[0].retryable and errors[0].retry_after is not None
        assert 1.5 <= errors[0].retry_after <= 3.0, gateway.name
        assert [e.retry_after for e in errors[1:]] == [None, None]  # no header, or not a 429
        assert gateway.send(to=phone(1), text="x", idempotency_key="k").provider_message_id


def test_a_retry_after_pauses_the_whole_gateway(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, runtimes: list[Runtime]
) -> None:
    twilio_fake.retry_after = "1"
    twilio_fake.then("429ra")
    # Paced (slots 0.22 s apart) so that no request is already on its way when the 429 comes back.
    runtime = start(runtimes, providers("twilio", send_max_attempts=5, send_rate="twilio=5"))
    queue(runtime, Purpose.ALERT_FORWARD, [f"f{i}" for i in range(4)])
    wait_for(lambda: set(statuses(runtime).values()) == {"sent"}, timeout=10)
    first, *later = [r.at for r in twilio_fake.requests]
    assert len(later) == 4  # the row refused is sent again, after the others waited too
    assert min(later) - first >= 1.0, f"sent {min(later) - first:.3f} s after a Retry-After of 1 s"


# -- pacing ------------------------------------------------------------------------------------
def test_no_second_holds_more_than_the_rate_with_two_replicas(
    providers: Callable[..., Settings], at_fake: FakeProvider, runtimes: list[Runtime]
) -> None:
    """Two processes' dispatchers (their own engines and pacers) share one rate: 30 SMS at 10/s."""
    settings = providers("africastalking", send_rate="africastalking=10")
    first = start(runtimes, settings)
    start(runtimes, settings)
    queue(first, Purpose.NOTICE, [f"n{i}" for i in range(30)])
    wait_for(lambda: list(statuses(first).values()).count("sent") == 30, timeout=15)
    times = [r.at for r in at_fake.requests]
    assert len(times) == 30
    assert max_in_one_second(times) <= 10
    assert times[-1] - times[0] < 4.5  # paced, not crawling: 29 gaps of 0.11 s, and a little


def test_twilio_is_paced_at_its_own_rate(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, runtimes: list[Runtime]
) -> None:
    runtime = start(runtimes, providers("twilio", send_rate="twilio=2"))
    queue(runtime, Purpose.REPLY, [f"r{i}" for i in range(6)])
    wait_for(lambda: list(statuses(runtime).values()).count("sent") == 6, timeout=10)
    assert max_in_one_second([r.at for r in twilio_fake.requests]) <= 2


def test_forwards_queued_after_check_ins_go_first(
    providers: Callable[..., Settings], at_fake: FakeProvider, runtimes: list[Runtime]
) -> None:
    settings = providers("africastalking", send_rate="africastalking=10")
    runtime = Runtime(settings)
    runtimes.append(runtime)
    queue(runtime, Purpose.CHECKIN, [f"c{i}" for i in range(20)])
    queue(runtime, Purpose.ALERT_FORWARD, [f"f{i}" for i in range(3)])
    runtime.start(intake=False, processor=False, scheduler=False)
    wait_for(lambda: len(at_fake.requests) >= 6, timeout=10)
    queue(runtime, Purpose.ESCALATION, [f"e{i}" for i in range(3)])  # while check-ins are being paced
    wait_for(lambda: list(statuses(runtime).values()).count("sent") == 26, timeout=15)
    order = bodies(at_fake)
    assert order[:3] == ["f0", "f1", "f2"]
    last_escalation = max(order.index(f"e{i}") for i in range(3))
    # At most one pass's worth (10 at 10/s) of check-ins claimed before the escalations came.
    assert last_escalation <= 6 + 10 + 3, order
    assert sum(1 for key in order[last_escalation:] if key.startswith("c")) >= 3, order
    assert max_in_one_second([r.at for r in at_fake.requests]) <= 10


# -- daily budget ------------------------------------------------------------------------------
def suppressed() -> float:
    return REGISTRY.get_sample_value("kengele_suppressed_total", {"reason": "budget"}) or 0.0


def test_a_spent_budget_stops_check_ins_not_forwards_and_tells_admins_once(
    make_settings: Callable[..., Settings], runtimes: list[Runtime]
) -> None:
    before = suppressed()
    settings = make_settings(daily_sms_budget="console=10")
    runtime = Runtime(settings)
    runtimes.append(runtime)
    with transaction(runtime.factory) as session:
        session.add(Person(name="Admin A", phone="+243990000001", role="admin"))
        session.add(Person(name="Admin Gone", phone="+243990000002", role="admin", active=False))
    queue(runtime, Purpose.CHECKIN, [f"c{i}" for i in range(12)])
    queue(runtime, Purpose.ALERT_FORWARD, [f"f{i}" for i in range(3)])
    while runtime.dispatcher.run_once():
        pass
    final = statuses(runtime)
    assert [final[f"f{i}"] for i in range(3)] == ["sent"] * 3, final
    sent_checkins = sorted(k for k, s in final.items() if k.startswith("c") and s == "sent")
    failed_checkins = sorted(k for k, s in final.items() if k.startswith("c") and s == "failed")
    assert (len(sent_checkins), len(failed_checkins)) == (6, 6)  # replies and check-ins stop at 9 of 10
    notices = {k: s for k, s in final.items() if k.startswith("budget:")}
    assert list(notices.values()) == ["sent"]  # one admin (the active one), within the budget
    with runtime.factory() as session:
        row = session.scalars(select(Message).where(Message.idempotency_key == failed_checkins[0])).one()
        assert row.error is not None and "daily SMS budget (10, KENGELE_DAILY_SMS_BUDGET)" in row.error
        assert "check-ins" in row.error
    assert suppressed() == before + 6

    # Forwards go on past the budget; admins are not told again, by this or another replica.
    other = Runtime(settings)
    runtimes.append(other)
    queue(runtime, Purpose.ESCALATION, ["e1", "e2"])
    queue(runtime, Purpose.REPLY, ["r1"])
    while other.dispatcher.run_once():
        pass
    final = statuses(runtime)
    assert (final["e1"], final["e2"], final["r1"]) == ("sent", "sent", "failed")
    assert len([k for k in final if k.startswith("budget:")]) == 1
    assert len(final) == 3 + 12 + 1 + 3  # every SMS accounted for: sent or failed with its reason


def test_a_spent_budget_hands_a_check_in_to_the_next_gateway(
    providers: Callable[..., Settings], at_fake: FakeProvider, runtimes: list[Runtime]
) -> None:
    runtime = Runtime(providers("twilio,africastalking", daily_sms_budget="twilio=1"))
    runtimes.append(runtime)
    queue(runtime, Purpose.CHECKIN, ["c1", "c2"])
    while runtime.dispatcher.run_once():
        pass
    with runtime.factory() as session:
        rows = {m.idempotency_key: m for m in session.scalars(select(Message))}
    assert {(m.status, m.provider) for m in rows.values()} == {("sent", "africastalking")}
    assert len(at_fake.requests) == 2


# -- a failed pass gives back its claims at once -----------------------------------------------
def fail(times: int) -> Callable[..., None]:
    calls = {"n": 0}

    def broken(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] <= times:
            raise OperationalError("UPDATE messages", {}, Exception("database is gone"))

    return broken


def test_a_recording_that_fails_once_is_done_again_in_the_same_pass(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, runtimes: list[Runtime]
) -> None:
    runtime = Runtime(settings)
    runtimes.append(runtime)
    queue(runtime, Purpose.REPLY, [f"r{i}" for i in range(20)])
    record = runtime.dispatcher._record
    broken = fail(1)

    def once(token: str, finished: list) -> None:  # type: ignore[type-arg]
        broken()
        record(token, finished)

    monkeypatch.setattr(runtime.dispatcher, "_record", once)
    assert runtime.dispatcher.run_once() == 20
    assert set(statuses(runtime).values()) == {"sent"}


def test_a_pass_that_cannot_record_gives_its_rows_back_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, runtimes: list[Runtime]
) -> None:
    runtime = Runtime(settings)
    runtimes.append(runtime)
    queue(runtime, Purpose.REPLY, [f"r{i}" for i in range(20)])
    monkeypatch.setattr(runtime.dispatcher, "_record", fail(100))
    with pytest.raises(OperationalError):
        runtime.dispatcher.run_once()
    assert set(statuses(runtime).values()) == {"queued"}  # not `sending` for the 120-s lease
    with runtime.factory() as session:
        assert (
            session.scalars(select(Message.claim_token).where(Message.claim_token.is_not(None))).all() == []
        )
    monkeypatch.undo()
    assert runtime.dispatcher.run_once() == 20  # claimable again at once
    assert set(statuses(runtime).values()) == {"sent"}


def test_a_pass_whose_pacing_fails_gives_its_rows_back(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, runtimes: list[Runtime]
) -> None:
    runtime = Runtime(make_settings(send_rate="console=50"))
    runtimes.append(runtime)
    queue(runtime, Purpose.REPLY, ["r1", "r2"])
    monkeypatch.setattr(runtime.dispatcher.pacer, "reserve", fail(1))
    with pytest.raises(OperationalError):
        runtime.dispatcher.run_once()
    assert set(statuses(runtime).values()) == {"queued"}
    monkeypatch.undo()
    assert runtime.dispatcher.run_once() == 2
    assert set(statuses(runtime).values()) == {"sent"}


def test_a_retry_after_is_shared_with_the_other_replicas(settings: Settings, runtimes: list[Runtime]) -> None:
    from app.services.pacing import Pacer, Verdict

    runtime = Runtime(settings)
    runtimes.append(runtime)
    here, there = (Pacer(rates={"console": 10}, budgets={}) for _ in range(2))
    with transaction(runtime.factory) as session:
        until = here.pause(session=session, gateway="console", seconds=3)
    with transaction(runtime.factory) as session:
        (decision,) = there.reserve(session=session, gateway="console", priorities=[0]).decisions
    assert decision.verdict == Verdict.WAIT and decision.at == pytest.approx(until)


def test_a_failed_send_gives_its_budget_back(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, runtimes: list[Runtime]
) -> None:
    from app.models import SendPacing

    twilio_fake.then("500", "500")
    runtime = Runtime(providers("twilio", daily_sms_budget="twilio=10", send_max_attempts=5))
    runtimes.append(runtime)
    queue(runtime, Purpose.ALERT_FORWARD, ["f1"])
    wait_for(lambda: runtime.dispatcher.run_once() == 0 and statuses(runtime)["f1"] == "sent", timeout=10)
    assert len(twilio_fake.requests) == 3
    with runtime.factory() as session:
        assert session.scalars(select(SendPacing.spent)).one() == 1  # three tries, one SMS sent
