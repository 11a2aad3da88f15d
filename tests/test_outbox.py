"""The outbox through the official SDKs against fake providers on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.crypto import keyring_for
from app.db import make_engine, make_sessionmaker, transaction
from app.main import create_app
from app.models import DeliveryEvent, Message
from app.services.outbox import Dispatcher, RetryPolicy, enqueue
from app.services.runtime import Runtime
from app.services.worker import Signals
from gateways.base import Gateway, SendResult
from tests.fakes import FakeProvider
from tests.helpers import signed_headers

PHONE = "+243810000001"


def queue_one(runtime: Runtime, key: str = "k1", text: str = "K1 ATTAQUE Djugu") -> int:
    with transaction(runtime.factory) as session:
        assert enqueue(session=session, recipient=PHONE, text=text, purpose="alert_forward", key=key)
        return session.scalar(select(Message.id).where(Message.idempotency_key == key))  # type: ignore[return-value]


def drain(runtime: Runtime, rounds: int = 50) -> Message:
    """Run dispatcher passes until the one outbound row is final (backoff in tests is a few ms)."""
    import time

    for _ in range(rounds):
        if runtime.dispatcher.run_once() == 0:
            with runtime.factory() as session:
                row = session.scalars(select(Message).where(Message.direction == "outbound")).one()
            if row.status in ("sent", "delivered", "failed"):
                return row
            time.sleep(0.02)
    raise AssertionError("the outbound row never reached a final state")


def test_twilio_success(providers: Callable[..., Settings], twilio_fake: FakeProvider) -> None:
    runtime = Runtime(providers("twilio"))
    queue_one(runtime)
    row = drain(runtime)
    assert (row.status, row.provider, row.attempts) == ("sent", "twilio", 1)
    assert row.provider_message_id and row.provider_message_id.startswith("SM")
    (req,) = twilio_fake.requests
    assert req.path == f"/2010-04-01/Accounts/AC{'1' * 32}/Messages.json"
    assert req.form["To"] == [PHONE] and req.form["Body"] == ["K1 ATTAQUE Djugu"]
    assert req.form["StatusCallback"] == ["http://testserver/webhooks/twilio/status"]
    runtime.stop()


def test_africastalking_success(providers: Callable[..., Settings], at_fake: FakeProvider) -> None:
    runtime = Runtime(providers("africastalking"))
    queue_one(runtime)
    row = drain(runtime)
    assert (row.status, row.provider) == ("sent", "africastalking")
    assert row.provider_message_id and row.provider_message_id.startswith("ATXid_")
    (req,) = at_fake.requests
    assert req.path == "/version1/messaging"
    assert req.headers["apiKey"] == "at-key-0123456789"
    assert (
        req.form["to"] == [PHONE] and req.form["from"] == ["KENGELE"] and req.form["username"] == ["kengele"]
    )
    runtime.stop()


@pytest.mark.parametrize("failure", ["500", "timeout", "429", "401"])
def test_retryable_error_is_retried_then_fails_over(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, at_fake: FakeProvider, failure: str
) -> None:
    twilio_fake.then(failure, failure)  # both tries on Twilio fail (send_max_attempts=2)
    runtime = Runtime(providers("twilio,africastalking"))
    queue_one(runtime)
    row = drain(runtime)
    assert len(twilio_fake.requests) == 2
    assert len(at_fake.requests) == 1
    assert (row.status, row.provider, row.attempts, row.gateway_index) == ("sent", "africastalking", 3, 1)
    runtime.stop()


def test_retry_on_same_gateway_succeeds(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, at_fake: FakeProvider
) -> None:
    twilio_fake.then("500")
    runtime = Runtime(providers("twilio,africastalking"))
    queue_one(runtime)
    row = drain(runtime)
    assert (row.status, row.provider, row.attempts) == ("sent", "twilio", 2)
    assert len(at_fake.requests) == 0
    runtime.stop()


def test_permanent_error_is_not_retried(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, at_fake: FakeProvider
) -> None:
    twilio_fake.then("400")
    runtime = Runtime(providers("twilio,africastalking"))
    queue_one(runtime)
    row = drain(runtime)
    assert row.status == "failed" and row.attempts == 1
    assert "21211" in (row.error or "") and "twilio" in (row.error or "")
    assert len(twilio_fake.requests) == 1 and len(at_fake.requests) == 0
    runtime.stop()


def test_account_refusal_fails_over_at_once(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, at_fake: FakeProvider
) -> None:
    twilio_fake.then("400geo")  # the account may not send to this country: another gateway may
    runtime = Runtime(providers("twilio,africastalking"))
    queue_one(runtime)
    row = drain(runtime)
    assert (row.status, row.provider, row.attempts) == ("sent", "africastalking", 2)
    assert len(twilio_fake.requests) == 1 and len(at_fake.requests) == 1
    runtime.stop()


def test_at_json_with_charset_is_read(providers: Callable[..., Settings], at_fake: FakeProvider) -> None:
    at_fake.then("ok_charset")
    runtime = Runtime(providers("africastalking"))
    queue_one(runtime)
    row = drain(runtime)
    assert row.status == "sent" and row.attempts == 1 and len(at_fake.requests) == 1
    assert row.provider_message_id and row.provider_message_id.startswith("ATXid_")
    runtime.stop()


def test_receipt_before_the_send_is_recorded_is_kept_and_applied(settings: Settings) -> None:
    from app.services.outbox import record_delivery
    from gateways.base import DeliveryReport

    runtime = Runtime(settings)
    with transaction(runtime.factory) as session:  # the provider's callback wins the race
        record_delivery(
            session=session, report=DeliveryReport("console", "console-k1", "delivered", "x", None)
        )
    queue_one(runtime, key="k1")
    row = drain(runtime)
    with runtime.factory() as session:
        row = session.get(Message, row.id)
        event = session.scalars(select(DeliveryEvent)).one()
    assert row is not None and row.status == "delivered" and event.message_id == row.id
    runtime.stop()


def test_at_invalid_number_is_permanent(providers: Callable[..., Settings], at_fake: FakeProvider) -> None:
    at_fake.then("invalid_number")
    runtime = Runtime(providers("africastalking"))
    queue_one(runtime)
    row = drain(runtime)
    assert row.status == "failed" and "InvalidPhoneNumber" in (row.error or "")
    assert len(at_fake.requests) == 1
    runtime.stop()


def test_every_gateway_failing_ends_failed_with_reason(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, at_fake: FakeProvider
) -> None:
    twilio_fake.then("500", "500")
    at_fake.then("500", "500")
    runtime = Runtime(providers("twilio,africastalking"))
    queue_one(runtime)
    row = drain(runtime)
    assert row.status == "failed" and row.attempts == 4
    assert (row.error or "").startswith("africastalking:")
    runtime.stop()


def test_idempotency_key_queues_once(settings: Settings) -> None:
    runtime = Runtime(settings)
    queue_one(runtime, key="same")
    with transaction(runtime.factory) as session:
        assert not enqueue(session=session, recipient=PHONE, text="again", purpose="reply", key="same")
    with runtime.factory() as session:
        assert len(session.scalars(select(Message)).all()) == 1
    runtime.stop()


class CountingGateway(Gateway):
    name = "console"

    @classmethod
    def verifier(cls, settings: object) -> None:
        return None

    @classmethod
    def from_settings(cls, settings: object) -> CountingGateway:
        return cls()

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.lock = threading.Lock()

    def send(self, *, to: str, text: str, idempotency_key: str, label: str = "") -> SendResult:
        import time

        time.sleep(0.002)
        with self.lock:
            self.sent.append(idempotency_key)
        return SendResult(provider_message_id=f"c-{idempotency_key}")


def test_two_dispatchers_never_send_a_row_twice(settings: Settings) -> None:
    engine = make_engine(settings.database_url, keyring=keyring_for(settings))
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        for i in range(200):
            enqueue(session=session, recipient=PHONE, text=f"m{i}", purpose="notice", key=f"n{i}")
    gateway = CountingGateway()
    dispatchers = [
        Dispatcher(
            factory=make_sessionmaker(make_engine(settings.database_url, keyring=keyring_for(settings))),
            gateways=[gateway],
            policy=RetryPolicy(1, 0.01, 0.01),
            signals=Signals(),
            concurrency=4,
        )
        for _ in range(3)
    ]

    def work(d: Dispatcher) -> None:
        for _ in range(200):
            d.run_once()

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(gateway.sent) == sorted(f"n{i}" for i in range(200))
    with factory() as session:
        assert {m.status for m in session.scalars(select(Message))} == {"sent"}
    for d in dispatchers:
        d.stop()
    engine.dispose()


def test_backoff_grows_and_is_jittered() -> None:
    policy = RetryPolicy(5, 2.0, 300.0)
    delays = [[policy.delay(a).total_seconds() for _ in range(200)] for a in (1, 2, 3, 4)]
    for attempt, ds in enumerate(delays, start=1):
        expected = 2.0 * 2 ** (attempt - 1)
        assert min(ds) >= 0.5 * expected and max(ds) < 1.5 * expected
        assert len(set(ds)) > 100  # jitter: not all the same
    assert RetryPolicy(5, 2.0, 10.0).delay(10).total_seconds() < 15.0


def test_stale_sending_row_is_taken_back(settings: Settings) -> None:
    """A dispatcher that died mid-send leaves `sending` behind; after its lease another sends it."""
    from datetime import timedelta

    from app.db import utcnow

    runtime = Runtime(settings)
    message_id = queue_one(runtime)
    with transaction(runtime.factory) as session:
        row = session.get(Message, message_id)
        assert row is not None
        row.status, row.claim_token, row.claimed_until = "sending", "dead", utcnow() - timedelta(seconds=1)
    row = drain(runtime)
    assert row.status == "sent"
    runtime.stop()


def test_delivery_receipts_update_the_row(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, db_url: str
) -> None:
    settings = providers("twilio", at_webhook_secret="sec")
    with TestClient(create_app(settings, dispatcher=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        queue_one(runtime, key="a")
        queue_one(runtime, key="b")
        runtime.dispatcher.run_once()
        with runtime.factory() as session:
            rows = {m.idempotency_key: m for m in session.scalars(select(Message))}
        sid_a = rows["a"].provider_message_id
        url = "http://testserver/webhooks/twilio/status"
        for status in ("sent", "delivered", "sent"):  # a late "sent" must not move it back
            form = {"MessageSid": sid_a, "MessageStatus": status, "AccountSid": "AC1", "To": PHONE}
            r = client.post("/webhooks/twilio/status", data=form, headers=signed_headers(form, url))
            assert r.status_code == 204
        form = {
            "MessageSid": rows["b"].provider_message_id,
            "MessageStatus": "undelivered",
            "ErrorCode": "30003",
        }
        r = client.post("/webhooks/twilio/status", data=form, headers=signed_headers(form, url))
        assert r.status_code == 204
        bad = client.post("/webhooks/twilio/status", data=form, headers=signed_headers(form, url, "x" * 32))
        assert bad.status_code == 403
        with runtime.factory() as session:
            rows = {m.idempotency_key: m for m in session.scalars(select(Message))}
            assert rows["a"].status == "delivered" and rows["a"].delivered_at is not None
            assert rows["b"].status == "failed" and rows["b"].error == "twilio error 30003"
            assert len(session.scalars(select(DeliveryEvent)).all()) == 4


def test_at_delivery_report(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(at_webhook_secret="sec")
    with TestClient(create_app(settings, dispatcher=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        message_id = queue_one(runtime)
        with transaction(runtime.factory) as session:
            row = session.get(Message, message_id)
            assert row is not None
            row.status, row.provider, row.provider_message_id = "sent", "africastalking", "ATXid_9"
        form = {"id": "ATXid_9", "status": "Failed", "failureReason": "UserIsInactive", "phoneNumber": PHONE}
        assert client.post("/webhooks/africastalking/sec/delivery", data=form).status_code == 200
        assert (
            client.post("/webhooks/africastalking/sec/delivery", data={"status": "Failed"}).status_code == 422
        )
        with runtime.factory() as session:
            row = session.get(Message, message_id)
            assert row is not None and row.status == "failed"
            assert row.error == "africastalking Failed: UserIsInactive"


def test_the_console_line_says_who_each_sms_is_for(settings: Settings) -> None:
    """Numbers are masked alike in the log (+243*******01): the line names the officer, not the villager."""
    import io
    import logging

    from app.logs import TextFormatter
    from app.models import Person

    runtime = Runtime(settings)
    with transaction(runtime.factory) as session:
        officer = Person(
            name="Capt. Alain Dufour", phone="+243810009001", role="officer", level=1, area="Djugu"
        )
        villager = Person(name="Jeanne Mave", phone="+243810001001", role="focal_point")
        session.add_all([officer, villager])
        session.flush()
        enqueue(
            session=session,
            recipient=officer.phone,
            text="K1 ATTAQUE Fataki",
            purpose="alert_forward",
            key="f",
            person_id=officer.id,
        )
        enqueue(
            session=session,
            recipient=villager.phone,
            text="RAS?",
            purpose="checkin",
            key="c",
            person_id=villager.id,
        )
        enqueue(session=session, recipient="+243820000001", text="Merci", purpose="reply", key="r")
        villager_id = villager.id
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    console = logging.getLogger("kengele.console")
    console.addHandler(handler)
    level = console.level
    console.setLevel(logging.INFO)
    try:
        assert runtime.dispatcher.run_once() == 3
    finally:
        console.removeHandler(handler)
        console.setLevel(level)
    runtime.stop()
    lines = sorted(out.getvalue().splitlines())
    line = "INFO    kengele.console: console SMS to +243*******01"
    assert lines == sorted(
        [
            f"{line} (officer Capt. Alain Dufour, level 1, Djugu; alert_forward): K1 ATTAQUE Fataki",
            f"{line} (focal point #{villager_id}; checkin): RAS?",
            f"{line} (not on the roster; reply): Merci",
        ]
    )


def test_an_sms_for_a_demo_person_is_never_handed_to_a_gateway_that_texts_phones(
    providers: Callable[..., Settings], twilio_fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed with its reason and counted; the console (first in line) still shows it; others are sent."""
    from prometheus_client import REGISTRY

    from app.models import Person

    def refused() -> float:
        labels = {"gateway": "twilio", "result": "demo"}
        return REGISTRY.get_sample_value("kengele_outbound_attempts_total", labels) or 0.0

    before = refused()
    settings = providers("twilio,console")
    runtime = Runtime(settings)
    with transaction(runtime.factory) as session:
        demo = Person(name="Jeanne Mave", phone="+243810001001", role="focal_point", demo=True)
        real = Person(name="Real Officer", phone="+243990000001", role="officer", level=1)
        session.add_all([demo, real])
        session.flush()
        demo_id = demo.id
        for person, key in ((demo, "d"), (real, "r")):
            enqueue(
                session=session,
                recipient=person.phone,
                text="RAS?",
                purpose="checkin",
                key=key,
                person_id=person.id,
            )
    with caplog.at_level("WARNING", logger="kengele.outbox"):
        assert runtime.dispatcher.warn_of_demo_people() == 1
    assert "demo people on the roster" in caplog.text
    assert runtime.dispatcher.run_once() == 2
    with runtime.factory() as session:
        rows = {
            m.idempotency_key: m
            for m in session.scalars(select(Message).where(Message.direction == "outbound"))
        }
    assert (rows["d"].status, rows["d"].attempts, rows["d"].provider) == ("failed", 0, None)
    assert (
        rows["d"].error
        == "twilio: not sent: the recipient is a demo person (kengele demo load), whose number is invented"
    )
    assert (rows["r"].status, rows["r"].provider) == ("sent", "twilio")
    assert [r.form["To"] for r in twilio_fake.requests] == [["+243990000001"]]
    assert refused() == before + 1
    runtime.stop()

    # The console shows a person what it sends: first in line, it gets the demo's SMS as always.
    runtime = Runtime(providers("console,twilio"))
    with transaction(runtime.factory) as session:
        enqueue(
            session=session,
            recipient="+243810001001",
            text="RAS?",
            purpose="checkin",
            key="d2",
            person_id=demo_id,
        )
    assert runtime.dispatcher.run_once() == 1
    with runtime.factory() as session:
        row = session.scalars(select(Message).where(Message.idempotency_key == "d2")).one()
    assert (row.status, row.provider) == ("sent", "console")
    runtime.stop()


def test_the_server_warns_at_start_of_demo_people_and_a_texting_gateway(
    providers: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    from app.models import Person

    settings = providers("twilio")
    runtime = Runtime(settings)
    with transaction(runtime.factory) as session:
        session.add(Person(name="Jeanne Mave", phone="+243810001001", role="focal_point", demo=True))
    runtime.stop()
    with caplog.at_level("WARNING", logger="kengele.outbox"), TestClient(create_app(settings)):
        pass
    (record,) = [r for r in caplog.records if r.getMessage().startswith("demo people on the roster")]
    assert record.levelname == "WARNING" and record.demo_people == 1 and record.gateways == ["twilio"]  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level("WARNING", logger="kengele.outbox"), TestClient(create_app(providers("console"))):
        pass
    assert "demo people" not in caplog.text  # the console texts nobody
