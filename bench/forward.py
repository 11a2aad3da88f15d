"""Alert to officer: time from an inbound webhook to the forward being handed to the gateway.

The real `kengele serve` (SQLite) sends through the official Twilio SDK to a fake Twilio API in
this process (a real HTTP server on loopback) that notes when each forward arrives. Alerts are
posted to the Africa's Talking webhook on a fixed schedule (open loop: each latency is measured
from the scheduled time, so a slow server cannot hide its queue). One alert in `new_every` is
about a village nobody reported yet (a new incident, one forward to the duty officer); the others
are more villagers reporting the attacks of the last seconds (reports joining an incident), as
when ten villagers report one attack. Latency = arrival of the forward at the gateway - scheduled
send of the first report. Replies to every reporter go through the same gateway at the same
time, as they would. `new_every=1` makes every alert a new incident (the worst case).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from app.db import make_engine, make_sessionmaker, transaction, upgrade
from app.models import Incident, Message, Person
from app.services import gazetteer
from bench.common import KEYRING, expect, percentile, reader, scratch
from bench.loadgen import read_response
from tests.server import Server

OFFICER = "+243990000001"
SYLLABLES = [
    "ba",
    "ko",
    "lu",
    "mi",
    "nde",
    "ga",
    "tshi",
    "ru",
    "sa",
    "ye",
    "fu",
    "zo",
    "pa",
    "we",
    "ki",
    "do",
]


def village_names(n: int) -> list[str]:
    """Made-up, distinct, pronounceable village names (three syllables, capitalised)."""
    names = ("".join(parts).capitalize() for parts in itertools.product(SYLLABLES, repeat=3))
    return list(itertools.islice(names, n))


class Arrivals:
    """A fake Twilio Messages API that notes when each forward to the officer arrives."""

    def __init__(self) -> None:
        self.forwards: dict[str, float] = {}
        self.replies = 0
        self.lock = threading.Lock()
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()  # answers are small: send them at once (no Nagle, no delayed-ACK stall)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                now = time.time()
                form = parse_qs(self.rfile.read(int(self.headers["content-length"])).decode())
                to, body = form["To"][0], form["Body"][0]
                with arrivals.lock:
                    if to == OFFICER:  # "K12 ATTAQUE Bakolu - 1 rapport 08:14 - Repondez RECU K12"
                        arrivals.forwards.setdefault(body.split()[2], now)
                    else:
                        arrivals.replies += 1
                data = b'{"sid": "SM%s", "status": "queued", "error_code": null}' % uuid.uuid4().hex.encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def prepare(url: str, names: list[str]) -> None:
    upgrade(url)
    engine = make_engine(url, keyring=KEYRING)
    rows = [  # a grid 0.25 degrees (about 28 km) apart: every village its own incident
        gazetteer.PlaceRow(
            f"bench-{i}",
            name,
            (),
            -4.0 + (i // 60) * 0.25,
            18.0 + (i % 60) * 0.25,
            "Bench",
            None,
            "CD",
            None,
            None,
            "bench",
        )
        for i, name in enumerate(names)
    ]
    gazetteer.store(engine, rows)
    with transaction(make_sessionmaker(engine)) as session:
        session.add(Person(name="Officer", phone=OFFICER, role="officer", language="fr", level=1))
    engine.dispose()


async def post_alerts(url: str, names: list[str], rate: float) -> dict[str, float]:
    """Post one alert per entry of `names` at `rate` a second; when each village was first reported.

    Raw keep-alive HTTP/1.1 on asyncio with the requests built in advance, so that the generator
    takes little of the machine's CPU from the server.
    """
    parts = urlsplit(url)
    requests = []
    for i, name in enumerate(names):
        body = urlencode({"from": f"+24382{i:07d}", "to": "12345", "text": f"A1 {name} 12", "id": f"fw{i}"})
        head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body.encode())
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(32):
        idle.put_nowait(await asyncio.open_connection(parts.hostname, parts.port))
    scheduled: dict[str, float] = {}
    failures = 0

    async def one(name: str, request: bytes, at: float) -> None:
        nonlocal failures
        await asyncio.sleep(max(0.0, at - time.time()))
        scheduled.setdefault(name, at)
        reader, writer = await idle.get()
        writer.write(request)
        if await read_response(reader) != 200:
            failures += 1
        idle.put_nowait((reader, writer))

    start = time.time() + 0.2
    await asyncio.gather(
        *(one(n, r, start + i / rate) for i, (n, r) in enumerate(zip(names, requests, strict=True)))
    )
    while not idle.empty():
        idle.get_nowait()[1].close()
    if failures:
        raise RuntimeError(f"{failures} webhooks were not answered 200")
    return scheduled


def schedule(n: int, new_every: int) -> tuple[list[str], list[str]]:
    """The villages, and the village of each alert: a new one every `new_every`, else a recent one."""
    villages = village_names((n + new_every - 1) // new_every)
    alerts = [
        villages[i // new_every] if i % new_every == 0 else villages[max(0, i // new_every - (i % 3))]
        for i in range(n)
    ]
    return villages, alerts


def main(
    rate: float = 200.0, seconds: float = 10.0, new_every: int = 10, wait: float = 120.0
) -> dict[str, float]:
    n = int(rate * seconds)
    villages, names = schedule(n, new_every)
    with scratch("forward") as workdir:
        url = f"sqlite:///{workdir / 'bench.db'}"
        prepare(url, villages)
        fake = Arrivals()
        env = {
            "KENGELE_GATEWAY": "twilio",
            "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
            "TWILIO_AUTH_TOKEN": "bench-twilio-token-0123456789abcdef",
            "TWILIO_FROM": "+15005550006",
            "KENGELE_TWILIO_API_BASE": fake.url,
            "KENGELE_SEND_RATE": "1000",  # the server's own speed, not a long code's pace (1 SMS/s)
        }
        server = Server(url, workdir, **env)
        try:
            server.start()
            scheduled = asyncio.run(post_alerts(server.url + "/webhooks/africastalking/-/sms", names, rate))
            deadline = time.monotonic() + wait
            while len(fake.forwards) < len(villages) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            server.stop()
            fake.server.shutdown()
            fake.server.server_close()
        stages = stage_times(url)
        latencies = [fake.forwards[name] - scheduled[name] for name in fake.forwards if name in scheduled]
        result = {
            "alerts": n,
            "incidents": len(villages),
            "forwards": len(fake.forwards),
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "max_ms": max(latencies, default=float("nan")) * 1000,
        }
        print(
            f"forward latency: {n} alerts at {rate:g}/s for {seconds:g} s, {len(villages)} new incidents"
            " (SQLite, Twilio SDK to a fake Twilio; every reporter answered too)"
        )
        print(
            f"  webhook -> forward at the gateway: p50 {result['p50_ms']:.0f} ms,"
            f" p99 {result['p99_ms']:.0f} ms, max {result['max_ms']:.0f} ms;"
            f" {len(fake.forwards)}/{len(villages)} forwards (target p99 < 1000 ms)"
        )
        print(
            "  stages, p50/p99 ms: webhook -> stored "
            + percentiles([t[0] - scheduled[v] for v, t in stages.items() if v in scheduled])
            + ", stored -> forward queued (processing) "
            + percentiles([t[1] - t[0] for t in stages.values()])
            + ", queued -> handed to the gateway (dispatch) "
            + percentiles([fake.forwards[v] - t[1] for v, t in stages.items() if v in fake.forwards])
        )
        expect(
            len(fake.forwards) == len(villages),
            f"{len(fake.forwards)} forwards reached the gateway for {len(villages)} new incidents",
        )
        expect(len(stages) == len(villages), f"{len(stages)} forwards queued for {len(villages)} incidents")
        expect(fake.replies > 0, "no reporter was answered")
    return result


def stage_times(url: str) -> dict[str, tuple[float, float]]:
    """Per village: when its first report was stored, and when its forward was queued."""
    report = aliased(Message)
    first_stored = (
        select(func.min(report.created_at))
        .where(report.incident_id == Message.incident_id, report.direction == "inbound")
        .scalar_subquery()
    )
    query = (
        select(Incident.place_name, first_stored, Message.created_at)
        .join(Incident, Incident.id == Message.incident_id)
        .where(Message.purpose == "alert_forward")
    )
    engine = reader(url)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    engine.dispose()
    return {name: (stored.timestamp(), queued.timestamp()) for name, stored, queued in rows if name}


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50) * 1000:.0f}/{percentile(values, 99) * 1000:.0f}"


def smoke() -> dict[str, float]:
    return main(rate=50.0, seconds=1.0, new_every=5, wait=30.0)


if __name__ == "__main__":
    import sys

    main(new_every=int(sys.argv[1]) if len(sys.argv) > 1 else 10)
