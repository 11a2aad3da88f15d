"""What a flood costs: the SMS Kengele queues for the flood table of tests/faults/test_floods.py.

    python bench/floods.py [DATABASE_URL_PREFIX]

Runs each row (a sender, a burst of messages through the signed Twilio webhook) on a fresh SQLite
database and prints the replies to the flooding sender and the forwards and notices to officers.
It uses only what every version of Kengele has (the app, its settings, the webhook), so the same
file measures a checkout before cost control existed: run it with that checkout on PYTHONPATH.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from twilio.request_validator import RequestValidator

from app.config import Settings
from app.crypto import Keyring, attach
from app.db import transaction, upgrade
from app.main import create_app
from app.models import Incident, Message, Person
from app.services import gazetteer
from app.services.runtime import Runtime

TOKEN = "twilio-bench-token-abcdef0123456789"
SECRET = "bench-secret-key-0123456789abcdefghijklmnopqrstuv"
OFFICERS = ("+243990000101", "+243990000102")
FOCAL = "+243810000555"
PLACES = [f"Mbuluku{chr(ord('a') + i)}" for i in range(25)]
ALERTS = [f"A{1 + (i % 25) % 9} {PLACES[i % 25]}" for i in range(60)]
TABLE = [
    ("foreign unregistered, 60 alerts", "+4915112345678", ALERTS),
    ("local unregistered, 60 alerts", "+243820000777", ALERTS),
    ("registered focal point, 60 alerts", FOCAL, ALERTS),
    ("local, 30 empty messages", "+243820000778", ["", " ", "."] * 10),
]


def settings_for(url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        database_url=url,
        secret_key=SECRET,
        gateway="console",
        at_webhook_secret="bench-at-secret-0123456789abcdef",
        public_url="http://testserver",
        twilio_auth_token=TOKEN,
        twilio_account_sid="AC1",
        log_level="WARNING",
        log_format="text",
        dispatch_poll=0.05,
    )


def prepare(settings: Settings, folder: Path) -> None:
    csv = folder / "places.csv"
    rows = [
        f"{n},{1.0 + 0.3 * i:.1f},{30.0 + 0.3 * (i % 5):.1f},Ituri,Djugu,CD" for i, n in enumerate(PLACES)
    ]
    csv.write_text("name,lat,lon,admin1,admin2,country\n" + "\n".join(rows) + "\n", encoding="utf-8")
    runtime = Runtime(settings)
    try:
        gazetteer.store(runtime.engine, gazetteer.read_csv(csv))
        with transaction(runtime.factory) as session:
            for n, phone in enumerate(OFFICERS, 1):
                session.add(Person(name=f"Officer {n}", phone=phone, role="officer", level=1, area="Ituri"))
            session.add(Person(name="Focal", phone=FOCAL, role="focal_point", language="fr", area="Djugu"))
    finally:
        runtime.stop()


def post_all(client: TestClient, sender: str, texts: list[str]) -> None:
    url = "http://testserver/webhooks/twilio/sms"
    forms = []
    for text in texts:
        sid = "SM" + uuid.uuid4().hex
        forms.append({"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC1", "From": sender, "Body": text})

    def post(part: list[dict[str, str]]) -> None:
        for form in part:
            signature = RequestValidator(TOKEN).compute_signature(url, form)
            r = client.post("/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature})
            assert r.status_code == 200, r.text

    threads = [threading.Thread(target=post, args=(forms[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(name: str, sender: str, texts: list[str]) -> tuple[str, int, int, int, int]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/flood.db"
        upgrade(url)
        settings = settings_for(url)
        prepare(settings, Path(folder))
        with TestClient(create_app(settings)) as client:
            post_all(client, sender, texts)
            engine = attach(create_engine(url), Keyring([SECRET]))
            try:
                deadline = time.monotonic() + 60
                done = select(func.count()).where(
                    Message.direction == "inbound", Message.processed_at.is_not(None)
                )
                while True:
                    with engine.connect() as conn:
                        if conn.execute(done).scalar_one() >= len(texts) or time.monotonic() > deadline:
                            break
                    time.sleep(0.1)
                with engine.connect() as conn:
                    rows = conn.execute(select(Message).where(Message.direction == "outbound")).all()
                    incidents = int(conn.execute(select(func.count()).select_from(Incident)).scalar_one())
            finally:
                engine.dispose()
    replies = sum(1 for m in rows if m.purpose == "reply" and m.recipient == sender)
    forwards = sum(1 for m in rows if m.purpose == "alert_forward")
    notices = sum(1 for m in rows if (m.idempotency_key or "").startswith("flood:"))
    return name, replies, forwards, notices, incidents


def main() -> None:
    head = ("replies", "forwards", "notices", "incidents")
    print(f"{'flood (2 officers of the area)':36} " + " ".join(f"{h:>9}" for h in head))
    for name, sender, texts in TABLE:
        name, replies, forwards, notices, incidents = measure(name, sender, texts)
        print(f"{name:36} " + " ".join(f"{n:9}" for n in (replies, forwards, notices, incidents)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
