"""A load generator on loopback: raw HTTP/1.1 keep-alive connections on asyncio (uvloop).

Requests are built (and signed) before the clock starts, so the generator spends its time on
sending and reading only. Two modes:
  closed: `--concurrency C` connections, each sending its next request as soon as the last answered;
  open:   `--rate R` requests a second on a fixed schedule, latency measured from the scheduled
          time (no coordinated omission).
Prints one JSON object: requests, ok, errors, seconds, rps, p50_ms, p99_ms, max_ms.

Usage: python -m bench.loadgen --url http://127.0.0.1:8000/webhooks/twilio/sms --token T
       [--requests N] [--concurrency C | --rate R --seconds S] [--bare]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from urllib.parse import urlencode, urlsplit

from twilio.request_validator import RequestValidator

TEXTS = [
    "ALERTE ATTAQUE Djugu 20 hommes armés",
    "a3 fataki 2 enfants",
    "TAHADHARI SHAMBULIO Beni sasa",
    "men with guns near the school in kpandroma",
    "RAS",
    "A1 djugu",
    "alrte pilage bule",
    "HELP",
]


def build_requests(url: str, token: str | None, n: int, bare: bool) -> list[bytes]:
    parts = urlsplit(url)
    validator = RequestValidator(token) if token else None
    out = []
    for i in range(n):
        sid = "SM" + uuid.uuid4().hex
        form = {
            "ToCountry": "CD",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "SmsSid": sid,
            "SmsStatus": "received",
            "Body": TEXTS[i % len(TEXTS)],
            "FromCountry": "CD",
            "To": "+243990001000",
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": f"+24381{i % 10_000_000:07d}",
            "ApiVersion": "2010-04-01",
        }
        body = urlencode(form).encode()
        headers = [
            f"POST {parts.path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
        ]
        if validator is not None and not bare:
            headers.append(f"X-Twilio-Signature: {validator.compute_signature(url, form)}")
        out.append(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
    return out


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def closed_loop(
    host: str, port: int, reqs: list[bytes], concurrency: int
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    queue = iter(reqs)

    async def conn() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        for req in queue:
            t0 = time.perf_counter()
            writer.write(req)
            try:
                status = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                errors += 1
                reader, writer = await asyncio.open_connection(host, port)
                continue
            latencies.append(time.perf_counter() - t0)
            if status >= 300:
                errors += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


async def open_loop(
    host: str, port: int, reqs: list[bytes], rate: float, conns: int
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await asyncio.open_connection(host, port))

    async def one(req: bytes, scheduled: float) -> None:
        nonlocal errors
        reader, writer = await idle.get()
        writer.write(req)
        try:
            status = await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            errors += 1
            idle.put_nowait(await asyncio.open_connection(host, port))
            return
        latencies.append(time.perf_counter() - scheduled)
        if status >= 300:
            errors += 1
        idle.put_nowait((reader, writer))

    start = time.perf_counter()
    tasks = []
    for i, req in enumerate(reqs):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(req, scheduled)))
    await asyncio.gather(*tasks)
    return latencies, errors, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q / 100 * len(v)))] * 1000, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--bare", action="store_true")
    args = ap.parse_args()
    n = int(args.rate * args.seconds) if args.rate else args.requests
    reqs = build_requests(args.url, args.token, n, args.bare)
    parts = urlsplit(args.url)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.rate:
        lat, errors, secs = asyncio.run(
            open_loop(parts.hostname or "", parts.port or 80, reqs, args.rate, 64)
        )
    else:
        lat, errors, secs = asyncio.run(
            closed_loop(parts.hostname or "", parts.port or 80, reqs, args.concurrency)
        )
    print(
        json.dumps(
            {
                "requests": n,
                "ok": len(lat) - errors,
                "errors": errors + (n - len(lat)),
                "seconds": round(secs, 3),
                "rps": round(len(lat) / secs, 1),
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "max_ms": round(max(lat) * 1000, 2) if lat else None,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
