"""Fake Twilio and Africa's Talking APIs: real HTTP servers on loopback that the official SDKs talk to.

Each fake answers from a script of behaviours, one per request ("ok", "500", "timeout", "400",
"429ra": a 429 with `retry_after` as its Retry-After header, ...), then "ok" when the script runs
out, and records every request it received with the time it arrived and how it was answered.
`fail_for(seconds, how)` answers every request with one behaviour for a while (an outage),
whatever the script says; outages given one after another follow each other.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

TIMEOUT_SLEEP = 3.0  # longer than the send timeout the tests configure


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    at: float = field(default_factory=time.time)  # time.time() on arrival (before the body is read)
    answered: str = ""  # the behaviour that answered it ("ok", "500", "timeout", "429ra", ...)
    sid: str | None = None  # the message id answered to it (None: no id given)


@dataclass
class FakeProvider:
    name: str
    script: deque[str] = field(default_factory=deque)
    by_recipient: dict[str, deque[str]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    retry_after: str = "1"  # the Retry-After header of a "429ra" answer (seconds or an HTTP date)
    outages: list[tuple[float, str]] = field(default_factory=list)  # (until, how), in order

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def then(self, *behaviours: str) -> FakeProvider:
        self.script.extend(behaviours)
        return self

    def then_for(self, recipient: str, *behaviours: str) -> FakeProvider:
        """Behaviours for requests to one recipient only (whatever else is sent in between)."""
        with self.lock:
            self.by_recipient.setdefault(recipient, deque()).extend(behaviours)
        return self

    def fail_for(self, seconds: float, how: str = "500") -> FakeProvider:
        """Answer every request with `how` for `seconds` after the outages given before, then as scripted."""
        with self.lock:
            begin = max([time.time(), *(until for until, _ in self.outages)])
            self.outages.append((begin + seconds, how))
        return self

    @property
    def outage_over(self) -> float:
        """When the last outage given ends (0: none)."""
        return max((until for until, _ in self.outages), default=0.0)

    def next_behaviour(self, recipient: str = "") -> str:
        with self.lock:
            now = time.time()
            for until, how in self.outages:
                if now < until:
                    return how
            own = self.by_recipient.get(recipient)
            if own:
                return own.popleft()
            return self.script.popleft() if self.script else "ok"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _twilio_answer(
    fake: FakeProvider, form: dict[str, list[str]], behaviour: str
) -> tuple[int, dict[str, Any]]:
    if behaviour == "ok":
        sid = "SM" + uuid.uuid4().hex
        return 201, {
            "sid": sid,
            "status": "queued",
            "to": form.get("To", [""])[0],
            "from": form.get("From", [""])[0],
            "body": form.get("Body", [""])[0],
            "num_segments": "1",
            "error_code": None,
        }
    if behaviour == "400":
        return 400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}
    if behaviour == "400geo":
        return 400, {
            "code": 21408,
            "message": "Permission to send an SMS has not been enabled",
            "status": 400,
        }
    if behaviour == "401":
        return 401, {"code": 20003, "message": "Authenticate", "status": 401}
    if behaviour in ("429", "429ra"):
        return 429, {"code": 20429, "message": "Too Many Requests", "status": 429}
    return 500, {"code": 20500, "message": "Internal Server Error", "status": 500}


def _at_answer(fake: FakeProvider, form: dict[str, list[str]], behaviour: str) -> tuple[int, dict[str, Any]]:
    to = form.get("to", [""])[0]
    if behaviour in ("ok", "ok_charset"):
        return 201, {
            "SMSMessageData": {
                "Message": "Sent to 1/1 Total Cost: KES 0.8000",
                "Recipients": [
                    {
                        "statusCode": 101,
                        "number": to,
                        "status": "Success",
                        "cost": "KES 0.8000",
                        "messageId": "ATXid_" + uuid.uuid4().hex,
                    }
                ],
            }
        }
    if behaviour == "invalid_number":
        return 201, {
            "SMSMessageData": {
                "Message": "Sent to 0/1",
                "Recipients": [
                    {
                        "statusCode": 403,
                        "number": to,
                        "status": "InvalidPhoneNumber",
                        "cost": "0",
                        "messageId": "None",
                    }
                ],
            }
        }
    if behaviour == "401":
        return 401, {"error": "The supplied authentication is invalid"}
    if behaviour in ("429", "429ra"):
        return 429, {"error": "Too many requests"}
    return 500, {"error": "Internal Server Error"}


def _handler(fake: FakeProvider, answer: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            arrived = time.time()  # before the body is read: as close to the provider's clock as can be
            length = int(self.headers.get("content-length") or 0)
            form = parse_qs(self.rfile.read(length).decode("utf-8"), keep_blank_values=True)
            behaviour = fake.next_behaviour((form.get("To") or form.get("to") or [""])[0])
            received = Received(self.path, dict(self.headers.items()), form, arrived, behaviour)
            with fake.lock:
                fake.requests.append(received)
            if behaviour == "timeout":
                time.sleep(TIMEOUT_SLEEP)
                behaviour = "ok"
            status, body = answer(fake, form, behaviour)
            received.sid = body.get("sid")
            data = json.dumps(body).encode()
            ctype = "application/json; charset=utf-8" if behaviour == "ok_charset" else "application/json"
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                if behaviour == "429ra":
                    self.send_header("Retry-After", fake.retry_after)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout)

    return Handler


def start_fake(name: str) -> FakeProvider:
    """Start a fake of `twilio` or `africastalking` on a free loopback port."""
    fake = FakeProvider(name)
    answer = _twilio_answer if name == "twilio" else _at_answer
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake, answer))
    server.daemon_threads = True
    fake.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake
